"""One row per (workflow, fire time) of a schedule: the guarantee of one firing each."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, DateTime, Enum, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.models.base import foreign_key, timestamp, uuid_pk


class FireOutcome(StrEnum):
    """What a schedule's fire did."""

    STARTED = "STARTED"  # a run was queued
    SKIPPED = "SKIPPED"  # the previous scheduled run was still going (overlap policy: skip)
    FAILED = "FAILED"  # the current version cannot run (it has warnings); nothing was queued


class ScheduleOverlap(StrEnum):
    """What a fire does while the previous scheduled run of the workflow is still going."""

    SKIP = "SKIP"  # the fire is skipped (and counted)
    ALLOW = "ALLOW"  # another run starts beside it


class ScheduleFire(SQLModel, table=True):
    """A schedule's firing at one time; unique per workflow and time across all workers."""

    __tablename__ = "schedule_fires"
    __table_args__ = (
        UniqueConstraint("workflow_id", "fire_at"),
        # Deleting a run (retention) sets run_id of its fire to null: found by index.
        Index("ix_schedule_fires_run_id", "run_id", postgresql_where=text("run_id IS NOT NULL")),
    )

    id: uuid.UUID = uuid_pk()
    workspace_id: uuid.UUID = foreign_key("workspaces.id", ondelete="CASCADE", index=True)
    workflow_id: uuid.UUID = foreign_key("workflows.id", ondelete="CASCADE")
    fire_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    outcome: FireOutcome = Field(
        sa_column=Column(
            Enum(FireOutcome, native_enum=False, length=16, create_constraint=False),
            nullable=False,
        )
    )
    run_id: uuid.UUID | None = foreign_key("runs.id", ondelete="SET NULL", nullable=True)
    # Fire times passed over while nobody ticked (downtime): one catch-up fire stands for them.
    missed: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = timestamp()
