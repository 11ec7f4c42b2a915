"""The audit trail: who changed what in a workspace, and when; append-only."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Enum, Index, String, Uuid
from sqlmodel import Field, SQLModel

from app.models.base import foreign_key, jsonb, timestamp, uuid_pk


class AuditAction(StrEnum):
    """What was changed."""

    WORKSPACE_CREATE = "WORKSPACE_CREATE"
    WORKSPACE_UPDATE = "WORKSPACE_UPDATE"
    MEMBER_SET = "MEMBER_SET"
    MEMBER_REMOVE = "MEMBER_REMOVE"
    TOKEN_CREATE = "TOKEN_CREATE"
    TOKEN_REVOKE = "TOKEN_REVOKE"
    WORKFLOW_CREATE = "WORKFLOW_CREATE"
    WORKFLOW_SAVE = "WORKFLOW_SAVE"
    WORKFLOW_ROLLBACK = "WORKFLOW_ROLLBACK"
    WORKFLOW_PUBLISH = "WORKFLOW_PUBLISH"
    WORKFLOW_UNPUBLISH = "WORKFLOW_UNPUBLISH"
    WORKFLOW_DELETE = "WORKFLOW_DELETE"
    WORKFLOW_TEMPLATE = "WORKFLOW_TEMPLATE"
    SCHEDULE_UPDATE = "SCHEDULE_UPDATE"
    WEBHOOK_UPDATE = "WEBHOOK_UPDATE"
    SECRET_SET = "SECRET_SET"
    SECRET_DELETE = "SECRET_DELETE"
    RUN_CANCEL = "RUN_CANCEL"
    RUN_RETRY = "RUN_RETRY"


class AuditObjectType(StrEnum):
    """The kind of object a change was made to."""

    WORKSPACE = "WORKSPACE"
    MEMBER = "MEMBER"  # the object id is the member's user id
    API_TOKEN = "API_TOKEN"
    WORKFLOW = "WORKFLOW"
    SECRET = "SECRET"  # the object id is the secret's name
    RUN = "RUN"


def _enum(kind: type[StrEnum], length: int) -> Any:
    return Enum(kind, native_enum=False, length=length, create_constraint=False)


class AuditEvent(SQLModel, table=True):
    """One change, recorded in the transaction of the change itself."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # workspace.auditEvents: newest first (keyset), and the history of one object.
        Index("ix_audit_events_workspace_id_at", "workspace_id", "at", "id"),
        Index("ix_audit_events_workspace_id_object_id_at", "workspace_id", "object_id", "at", "id"),
    )

    id: uuid.UUID = uuid_pk()
    workspace_id: uuid.UUID = foreign_key("workspaces.id", ondelete="CASCADE")
    at: datetime = timestamp()
    # Who: the user, and the API token they used (null from the command line). The token's
    # id is kept without a foreign key, so a revoked token's changes still name it; the
    # object's id has none either, so a deleted workflow's history stays readable.
    actor_user_id: uuid.UUID | None = foreign_key("users.id", ondelete="SET NULL", nullable=True)
    actor_token_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid()))
    action: AuditAction = Field(sa_column=Column(_enum(AuditAction, 32), nullable=False))
    object_type: AuditObjectType = Field(
        sa_column=Column(_enum(AuditObjectType, 16), nullable=False)
    )
    # The object's key: a UUID, or a secret's name.
    object_id: str = Field(sa_column=Column(String(200), nullable=False))
    summary: Any = jsonb(server_default="'{}'::jsonb")
