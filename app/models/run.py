"""Runs of workflow versions and their steps (one per node)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Enum,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from app.models.base import copied_key, foreign_key, jsonb, timestamp, uuid_pk


class RunStatus(StrEnum):
    """Where a run is: QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class StepStatus(StrEnum):
    """Where a step is: PENDING → RUNNING → SUCCEEDED | FAILED | SKIPPED | CANCELLED."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"


class RunTrigger(StrEnum):
    """What started a run."""

    MANUAL = "MANUAL"
    SCHEDULE = "SCHEDULE"
    WEBHOOK = "WEBHOOK"
    RETRY = "RETRY"


def _enum(kind: type[StrEnum]) -> Any:
    return Enum(kind, native_enum=False, length=16, create_constraint=False)


class Run(SQLModel, table=True):
    """One execution of one workflow version; the source of truth the queue job points at."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_workflow_id_queued_at", "workflow_id", "queued_at", "id"),
        # workspace.runs: newest first across a workspace, by status, by trigger (keyset).
        Index("ix_runs_workspace_id_queued_at", "workspace_id", "queued_at", "id"),
        Index("ix_runs_workspace_id_status_queued_at", "workspace_id", "status", "queued_at", "id"),
        Index(
            "ix_runs_workspace_id_trigger_queued_at", "workspace_id", "trigger", "queued_at", "id"
        ),
        # Deleting a run (retention) sets retry_of_id of its retries to null: found by index.
        Index(
            "ix_runs_retry_of_id", "retry_of_id", postgresql_where=text("retry_of_id IS NOT NULL")
        ),
        Index(
            "uq_runs_workflow_id_idempotency_key",
            "workflow_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # The schedule's overlap check: is a run of this workflow still going?
        Index(
            "ix_runs_workflow_id_open",
            "workflow_id",
            "trigger",
            postgresql_where=text("status IN ('QUEUED', 'RUNNING')"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    workspace_id: uuid.UUID = foreign_key("workspaces.id", ondelete="CASCADE")
    workflow_id: uuid.UUID = foreign_key("workflows.id", ondelete="CASCADE")
    version_id: uuid.UUID = foreign_key("workflow_versions.id", ondelete="CASCADE")
    version_number: int = Field(sa_column=Column(Integer, nullable=False))
    status: RunStatus = Field(sa_column=Column(_enum(RunStatus), nullable=False))
    trigger: RunTrigger = Field(sa_column=Column(_enum(RunTrigger), nullable=False))
    input: Any = jsonb(nullable=True)
    output: Any = jsonb(nullable=True)
    error: str | None = Field(default=None, sa_column=Column(Text))
    error_node_id: str | None = Field(default=None, sa_column=Column(String(200)))
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(200)))
    input_hash: str = Field(sa_column=Column(String(64), nullable=False))
    retry_of_id: uuid.UUID | None = foreign_key("runs.id", ondelete="SET NULL", nullable=True)
    created_by_id: uuid.UUID | None = foreign_key("users.id", ondelete="SET NULL", nullable=True)
    # Each claim by a worker bumps attempt; every write of a run or its steps is fenced by
    # it, so a worker that lost its claim cannot overwrite its successor's work.
    attempt: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    # Claims that found the previous worker gone mid-run; bounded (a node that kills its
    # worker every time ends the run FAILED instead of looping).
    crashes: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    # Set while the run waits (a long flow.delay) with no worker holding it.
    wake_at: datetime | None = timestamp(nullable=True)
    # Set while the process that queued the run drives it without a job: past this time
    # (the database's clock) without a renewal, a worker's recovery takes it over.
    lease_until: datetime | None = timestamp(nullable=True)
    deadline_at: datetime | None = timestamp(nullable=True)
    job_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    # The seq of the run's last event: events are numbered 1, 2, 3 … per run, no gaps.
    last_event_seq: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    queued_at: datetime = timestamp()
    started_at: datetime | None = timestamp(nullable=True)
    finished_at: datetime | None = timestamp(nullable=True)
    # The W3C traceparent of the span that queued the run (a GraphQL operation, a webhook
    # delivery, a schedule fire) when traces are on: every driver's span joins that trace.
    traceparent: str | None = Field(default=None, sa_column=Column(String(100)))


class RunStep(SQLModel, table=True):
    """The execution of one node in one run."""

    __tablename__ = "run_steps"
    __table_args__ = (UniqueConstraint("run_id", "node_id"),)

    id: uuid.UUID = uuid_pk()
    workspace_id: uuid.UUID = copied_key()
    run_id: uuid.UUID = foreign_key("runs.id", ondelete="CASCADE")
    node_id: str = Field(sa_column=Column(String(200), nullable=False))
    node_type: str = Field(sa_column=Column(String(200), nullable=False))
    position: int = Field(sa_column=Column(Integer, nullable=False))
    status: StepStatus = Field(sa_column=Column(_enum(StepStatus), nullable=False))
    attempt: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    input: Any = jsonb(nullable=True)
    output: Any = jsonb(nullable=True)
    # The output handles that carry on (null: all of them); decides which edges are active.
    active_handles: Any = jsonb(nullable=True)
    error: str | None = Field(default=None, sa_column=Column(Text))
    # True when a retry from the failed step kept this step's result from the original run.
    reused: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    wake_at: datetime | None = timestamp(nullable=True)
    started_at: datetime | None = timestamp(nullable=True)
    finished_at: datetime | None = timestamp(nullable=True)
