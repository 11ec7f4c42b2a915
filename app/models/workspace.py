"""Workspaces (tenants) and memberships with roles."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Column, Enum, Integer, String, text
from sqlmodel import Field, SQLModel

from app.models.base import timestamp, uuid_pk

DEFAULT_RUN_RETENTION_DAYS = 90


class Role(StrEnum):
    """What a member may do in a workspace, weakest first."""

    VIEWER = "VIEWER"
    MEMBER = "MEMBER"
    EDITOR = "EDITOR"
    OWNER = "OWNER"

    @property
    def rank(self) -> int:
        """Position in the order VIEWER < MEMBER < EDITOR < OWNER."""
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """True when this role includes everything ``needed`` may do."""
        return self.rank >= needed.rank


class Workspace(SQLModel, table=True):
    """A tenant: every workflow, run and secret belongs to exactly one."""

    __tablename__ = "workspaces"

    id: uuid.UUID = uuid_pk()
    name: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: datetime = timestamp()
    # Goes up with every change of the workspace's secrets: what a process keeps of them
    # decrypted is keyed by it.
    secrets_version: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    # Finished runs older than this many days are pruned by the workers (with their steps
    # and events); see app/services/retention.py.
    run_retention_days: int = Field(
        default=DEFAULT_RUN_RETENTION_DAYS,
        sa_column=Column(
            Integer, nullable=False, server_default=text(str(DEFAULT_RUN_RETENTION_DAYS))
        ),
    )


class Membership(SQLModel, table=True):
    """A user's role in a workspace."""

    __tablename__ = "memberships"
    __table_args__ = (
        CheckConstraint("role IN ('VIEWER', 'MEMBER', 'EDITOR', 'OWNER')", name="role"),
    )

    workspace_id: uuid.UUID = Field(
        foreign_key="workspaces.id", primary_key=True, ondelete="CASCADE"
    )
    user_id: uuid.UUID = Field(
        foreign_key="users.id", primary_key=True, ondelete="CASCADE", index=True
    )
    role: Role = Field(
        sa_column=Column(
            Enum(Role, native_enum=False, length=16, create_constraint=False),
            nullable=False,
        )
    )
    created_at: datetime = timestamp()
