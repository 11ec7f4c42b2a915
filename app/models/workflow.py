"""Workflows and their immutable versions (JSONB graphs)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlmodel import Field, SQLModel

from app.models.base import foreign_key, jsonb, timestamp, uuid_pk


class Workflow(SQLModel, table=True):
    """A named workflow of a workspace; its graph lives in its versions."""

    __tablename__ = "workflows"
    __table_args__ = (
        Index(
            "uq_workflows_workspace_id_lower_name",
            "workspace_id",
            func.lower(text("name")),
            unique=True,
        ),
        Index("ix_workflows_workspace_id_updated_at", "workspace_id", "updated_at", "id"),
        # The schedule tick's access path: enabled schedules by next fire time.
        Index(
            "ix_workflows_schedule_next_fire_at",
            "schedule_next_fire_at",
            postgresql_where=text("schedule_enabled"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    workspace_id: uuid.UUID = foreign_key("workspaces.id", ondelete="CASCADE")
    name: str = Field(sa_column=Column(String(200), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    is_template: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    template_category: str | None = Field(default=None, sa_column=Column(String(100)))
    current_version: int = Field(sa_column=Column(Integer, nullable=False))
    created_by_id: uuid.UUID | None = foreign_key("users.id", ondelete="SET NULL", nullable=True)
    created_at: datetime = timestamp()
    updated_at: datetime = timestamp()
    # The schedule (DESIGN: it lives on the workflow row). Cron and zone stay when disabled.
    schedule_cron: str | None = Field(default=None, sa_column=Column(String(200)))
    schedule_timezone: str | None = Field(default=None, sa_column=Column(String(64)))
    schedule_enabled: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    schedule_next_fire_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    schedule_last_fired_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    # SKIP: a fire while the previous scheduled run is still going is skipped (and counted);
    # ALLOW: it starts another run beside it.
    schedule_overlap: str = Field(
        default="SKIP", sa_column=Column(String(16), nullable=False, server_default="SKIP")
    )
    # Fires skipped because the previous scheduled run was still going.
    schedule_skipped_count: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    # What schedules and webhooks run (null: nothing yet; saving never changes it).
    published_version: int | None = Field(default=None, sa_column=Column(Integer))
    published_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    published_by_id: uuid.UUID | None = foreign_key("users.id", ondelete="SET NULL", nullable=True)


class WorkflowVersion(SQLModel, table=True):
    """One immutable save of a workflow's graph, numbered 1, 2, 3 … per workflow."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "number"),)

    id: uuid.UUID = uuid_pk()
    workspace_id: uuid.UUID = foreign_key("workspaces.id", ondelete="CASCADE", index=True)
    workflow_id: uuid.UUID = foreign_key("workflows.id", ondelete="CASCADE")
    number: int = Field(sa_column=Column(Integer, nullable=False))
    graph: Any = jsonb()
    diagnostics: Any = jsonb(server_default="'[]'::jsonb")
    message: str | None = Field(default=None, sa_column=Column(Text))
    restored_from: int | None = Field(default=None, sa_column=Column(Integer))
    created_by_id: uuid.UUID | None = foreign_key("users.id", ondelete="SET NULL", nullable=True)
    created_at: datetime = timestamp()
