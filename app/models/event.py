"""The run event log: every change of a run or a step, numbered per run."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Enum, Index, Integer, PrimaryKeyConstraint, String, Text, text
from sqlmodel import Field, SQLModel

from app.models.base import copied_key, foreign_key, jsonb, timestamp
from app.models.run import RunStatus, StepStatus


class RunEventType(StrEnum):
    """What happened."""

    RUN_QUEUED = "RUN_QUEUED"
    RUN_STARTED = "RUN_STARTED"
    STEP_STARTED = "STEP_STARTED"
    STEP_SUCCEEDED = "STEP_SUCCEEDED"
    STEP_FAILED = "STEP_FAILED"
    STEP_RETRYING = "STEP_RETRYING"
    STEP_SKIPPED = "STEP_SKIPPED"
    STEP_CANCELLED = "STEP_CANCELLED"
    RUN_SUCCEEDED = "RUN_SUCCEEDED"
    RUN_FAILED = "RUN_FAILED"
    RUN_CANCELLED = "RUN_CANCELLED"


TERMINAL_EVENTS = frozenset(
    {RunEventType.RUN_SUCCEEDED, RunEventType.RUN_FAILED, RunEventType.RUN_CANCELLED}
)


def _enum(kind: type[StrEnum], length: int) -> Any:
    return Enum(kind, native_enum=False, length=length, create_constraint=False)


class RunEvent(SQLModel, table=True):
    """One event of a run; append-only, ``seq`` increasing by one per run."""

    __tablename__ = "run_events"
    __table_args__ = (
        PrimaryKeyConstraint("run_id", "seq"),
        # A workflow's run list catching up after a missed wake-up: its run-level events.
        Index(
            "ix_run_events_workflow_id_at",
            "workflow_id",
            "at",
            postgresql_where=text("run_status IS NOT NULL"),
        ),
    )

    run_id: uuid.UUID = foreign_key("runs.id", ondelete="CASCADE")
    seq: int = Field(sa_column=Column(Integer, nullable=False))
    workspace_id: uuid.UUID = copied_key()
    workflow_id: uuid.UUID = copied_key()
    type: RunEventType = Field(sa_column=Column(_enum(RunEventType, 32), nullable=False))
    at: datetime = timestamp()
    run_status: RunStatus | None = Field(default=None, sa_column=Column(_enum(RunStatus, 16)))
    node_id: str | None = Field(default=None, sa_column=Column(String(200)))
    step_status: StepStatus | None = Field(default=None, sa_column=Column(_enum(StepStatus, 16)))
    attempt: int | None = Field(default=None, sa_column=Column(Integer))
    output: Any = jsonb(nullable=True)
    error: str | None = Field(default=None, sa_column=Column(Text))
