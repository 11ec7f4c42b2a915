"""What a driver holds of a run it claimed: the run, its plan, its steps, its secrets."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.plan import RunPlan
from app.engine.redact import NO_SECRETS, Redactor
from app.models import Run, RunStep, StepStatus


class SecretsSource(Protocol):
    """Where a driver gets a workspace's secrets (decrypted) when it claims one of its runs."""

    async def __call__(
        self, session: AsyncSession, workspace_id: uuid.UUID, version: int | None = None
    ) -> Mapping[str, str]:
        """The secrets, as of ``version`` of them when the caller knows it (else the latest)."""
        ...


async def no_secrets(
    session: AsyncSession, workspace_id: uuid.UUID, version: int | None = None
) -> Mapping[str, str]:
    """A secrets source for processes that hold no key: every workspace has none."""
    return {}


def json_text(value: Any) -> str | None:
    """A stored JSON value as text (None for SQL NULL)."""
    return None if value is None else orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the driver and its nodes know of the run itself."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    version_number: int
    input: Any
    deadline_at: datetime | None
    # What started it (a RunTrigger value) and when it first started (None while QUEUED).
    trigger: str
    started_at: datetime | None
    # The span that queued it (traces on): each claim's span joins that trace.
    traceparent: str | None = None

    @classmethod
    def of(cls, run: Run) -> RunInfo:
        """The driver's view of a run row."""
        return cls(
            id=run.id,
            workspace_id=run.workspace_id,
            workflow_id=run.workflow_id,
            version_id=run.version_id,
            version_number=run.version_number,
            input=run.input,
            deadline_at=run.deadline_at,
            trigger=str(run.trigger),
            started_at=run.started_at,
            traceparent=run.traceparent,
        )


@dataclass(slots=True)
class StepState:
    """What the driver knows of one step; ``stored_*`` are what is (to be) written, redacted."""

    status: StepStatus
    attempt: int = 0
    output: Any = None
    active_handles: frozenset[str] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wake_at: datetime | None = None
    error: str | None = None
    stored_input: str | None = None
    stored_output: str | None = None

    @classmethod
    def from_row(cls, row: RunStep) -> StepState:
        """The state of a step as stored (its output as stored: later nodes read that)."""
        return cls(
            status=row.status,
            attempt=row.attempt,
            output=row.output,
            active_handles=frozenset(row.active_handles)
            if row.active_handles is not None
            else None,
            started_at=row.started_at,
            finished_at=row.finished_at,
            wake_at=row.wake_at,
            error=row.error,
            stored_input=json_text(row.input),
            stored_output=json_text(row.output),
        )


@dataclass(slots=True)
class Claim:
    """A run as claimed by one driver; ``number`` is the attempt that fences its writes."""

    run: RunInfo
    plan: RunPlan
    number: int
    steps: dict[str, StepState] = field(default_factory=dict)
    # The workspace's secrets for the nodes, and what keeps them out of everything stored.
    secrets: Mapping[str, str] = field(default_factory=dict)
    redactor: Redactor = NO_SECRETS
