"""A workflow's webhook: an unguessable URL id, optional signing, and how it answers."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, Column, ForeignKey, LargeBinary, String, Uuid, text
from sqlmodel import Field, SQLModel

from app.models.base import foreign_key, timestamp, uuid_pk


class Webhook(SQLModel, table=True):
    """``POST /hooks/{token}`` starts a run of the workflow (at most one webhook each)."""

    __tablename__ = "webhooks"

    id: uuid.UUID = uuid_pk()
    workspace_id: uuid.UUID = foreign_key("workspaces.id", ondelete="CASCADE", index=True)
    workflow_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid(), ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False, unique=True
        )
    )
    # The URL's id: 256 random bits, URL-safe base64; it is what makes the URL unguessable.
    token: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    enabled: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("true")))
    require_signature: bool = Field(
        sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    wait_for_result: bool = Field(
        sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    # The HMAC signing secret, sealed like a workspace secret (null until signing is on).
    signing_key_id: str | None = Field(default=None, sa_column=Column(String(32)))
    signing_nonce: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    signing_ciphertext: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    created_by_id: uuid.UUID | None = foreign_key("users.id", ondelete="SET NULL", nullable=True)
    created_at: datetime = timestamp()
    updated_at: datetime = timestamp()
