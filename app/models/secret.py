"""Workspace secrets: AES-256-GCM ciphertext with the id of the key that sealed it."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, LargeBinary, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import foreign_key, timestamp, uuid_pk


class Secret(SQLModel, table=True):
    """A named secret of a workspace; its value is never stored or returned in the clear."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: uuid.UUID = uuid_pk()
    workspace_id: uuid.UUID = foreign_key("workspaces.id", ondelete="CASCADE")
    name: str = Field(sa_column=Column(String(100), nullable=False))
    key_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    nonce: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_by_id: uuid.UUID | None = foreign_key("users.id", ondelete="SET NULL", nullable=True)
    created_at: datetime = timestamp()
    updated_at: datetime = timestamp()
