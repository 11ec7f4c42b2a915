"""What a driver holds of a run it claimed: the run, its plan, its steps, its secrets."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.plan import RunPlan
from app.engine.redact import NO_SECRETS, Redactor
from app.models import Run, RunStep, StepStatus

# Where a driver gets a workspace's secrets (decrypted) when it claims one of its runs.
SecretsSource = Callable[[AsyncSession, uuid.UUID], Awaitable[Mapping[str, str]]]


async def no_secrets(session: AsyncSession, workspace_id: uuid.UUID) -> Mapping[str, str]:
    """A secrets source for processes that hold no key: every workspace has none."""
    return {}


@dataclass(slots=True)
class StepState:
    """What the driver knows of one step."""

    id: uuid.UUID
    status: StepStatus
    attempt: int
    output: Any = None
    active_handles: frozenset[str] | None = None
    started_at: datetime | None = None
    wake_at: datetime | None = None
    error: str | None = None

    @classmethod
    def from_row(cls, row: RunStep) -> StepState:
        """The state of a step as stored."""
        return cls(
            id=row.id,
            status=row.status,
            attempt=row.attempt,
            output=row.output,
            active_handles=frozenset(row.active_handles)
            if row.active_handles is not None
            else None,
            started_at=row.started_at,
            wake_at=row.wake_at,
            error=row.error,
        )


@dataclass(slots=True)
class Claim:
    """A run as claimed by one driver; ``number`` is the attempt that fences its writes."""

    run: Run
    plan: RunPlan
    number: int
    steps: dict[str, StepState] = field(default_factory=dict)
    # The workspace's secrets for the nodes, and what keeps them out of everything stored.
    secrets: Mapping[str, str] = field(default_factory=dict)
    redactor: Redactor = NO_SECRETS
