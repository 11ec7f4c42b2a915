"""People and their API tokens (the only tables without ``workspace_id``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, Index, String, func
from sqlmodel import Field, SQLModel

from app.models.base import foreign_key, timestamp, uuid_pk


class User(SQLModel, table=True):
    """A person; signs in with API tokens."""

    __tablename__ = "users"
    __table_args__ = (Index("uq_users_lower_email", func.lower(Column("email")), unique=True),)

    id: uuid.UUID = uuid_pk()
    email: str = Field(sa_column=Column(String(320), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: datetime = timestamp()


class ApiToken(SQLModel, table=True):
    """A bearer token of a user; only its SHA-256 hash is stored."""

    __tablename__ = "api_tokens"

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = foreign_key("users.id", ondelete="CASCADE", index=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_at: datetime = timestamp()
    expires_at: datetime | None = timestamp(nullable=True)
    last_used_at: datetime | None = timestamp(nullable=True)
