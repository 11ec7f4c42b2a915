"""The run and step state machine: the one module that writes a status.

Every change of status is a conditional UPDATE: it applies only from an allowed status and,
for a worker, only while it still holds the run (``runs.attempt`` equals its claim). When
the UPDATE matches nothing, the reason is read back and raised: an invalid transition, or a
lost claim.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Run, RunStatus, RunStep, StepStatus

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    # RUNNING → RUNNING: a worker claims (or resumes) a run another worker held.
    RunStatus.RUNNING: frozenset(
        {RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.CANCELLED}),
    # RUNNING → RUNNING: the next attempt after a retry, or a resume after a crash or a wait.
    StepStatus.RUNNING: frozenset(
        {
            StepStatus.RUNNING,
            StepStatus.SUCCEEDED,
            StepStatus.FAILED,
            StepStatus.CANCELLED,
        }
    ),
    StepStatus.SUCCEEDED: frozenset(),
    StepStatus.FAILED: frozenset(),
    StepStatus.SKIPPED: frozenset(),
    StepStatus.CANCELLED: frozenset(),
}

TERMINAL_RUN = frozenset(s for s, nxt in RUN_TRANSITIONS.items() if not nxt)
TERMINAL_STEP = frozenset(s for s, nxt in STEP_TRANSITIONS.items() if not nxt)


class InvalidTransition(Exception):
    """A status change the state machine does not allow."""


class LeaseLost(Exception):
    """The worker no longer holds the run: another worker claimed it since."""


def _sources(table: dict[Any, frozenset[Any]], target: Any) -> list[Any]:
    return [source for source, targets in table.items() if target in targets]


def check_run_transition(current: RunStatus, target: RunStatus) -> None:
    """Raise InvalidTransition unless a run may go from ``current`` to ``target``."""
    if target not in RUN_TRANSITIONS[current]:
        raise InvalidTransition(f"run cannot go from {current.value} to {target.value}")


def check_step_transition(current: StepStatus, target: StepStatus) -> None:
    """Raise InvalidTransition unless a step may go from ``current`` to ``target``."""
    if target not in STEP_TRANSITIONS[current]:
        raise InvalidTransition(f"step cannot go from {current.value} to {target.value}")


async def transition_run(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    target: RunStatus,
    claim: int | None,
    values: dict[str, Any] | None = None,
) -> Run:
    """Move a run to ``target`` (with ``values``); fenced by ``claim`` when given."""
    condition = (Run.id == run_id) & Run.status.in_(_sources(RUN_TRANSITIONS, target))  # type: ignore[attr-defined]
    if claim is not None:
        condition = condition & (Run.attempt == claim)
    result = await session.execute(
        update(Run)
        .where(condition)
        .values(status=target, **(values or {}))
        .returning(Run)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    row = result.scalar_one_or_none()
    if row is None:
        await _explain_run(session, run_id, target, claim)
    assert row is not None
    return row


async def _explain_run(
    session: AsyncSession, run_id: uuid.UUID, target: RunStatus, claim: int | None
) -> None:
    found = (
        await session.execute(select(Run.status, Run.attempt).where(Run.id == run_id))  # type: ignore[arg-type]
    ).one_or_none()
    if found is None:
        raise InvalidTransition(f"run {run_id} does not exist")
    status, attempt = found
    if claim is not None and attempt != claim:
        raise LeaseLost(f"run {run_id} is now held by claim {attempt}, not {claim}")
    check_run_transition(RunStatus(status), target)


async def transition_step(
    session: AsyncSession,
    *,
    step_id: uuid.UUID,
    run_id: uuid.UUID,
    target: StepStatus,
    claim: int | None,
    values: dict[str, Any] | None = None,
) -> None:
    """Move a step to ``target``; fenced by the run's claim when given."""
    condition = (RunStep.id == step_id) & RunStep.status.in_(_sources(STEP_TRANSITIONS, target))  # type: ignore[attr-defined]
    if claim is not None:
        holder = select(Run.attempt).where(Run.id == run_id).scalar_subquery()  # type: ignore[arg-type]
        condition = condition & (holder == claim)
    result = await session.execute(
        update(RunStep)
        .where(condition)
        .values(status=target, **(values or {}))
        .returning(RunStep.id)
        .execution_options(synchronize_session=False)
    )
    if result.scalar_one_or_none() is not None:
        return
    status = await session.scalar(select(RunStep.status).where(RunStep.id == step_id))  # type: ignore[arg-type]
    attempt = await session.scalar(select(Run.attempt).where(Run.id == run_id))  # type: ignore[arg-type]
    if claim is not None and attempt != claim:
        raise LeaseLost(f"run {run_id} is now held by claim {attempt}, not {claim}")
    if status is None:
        raise InvalidTransition(f"step {step_id} does not exist")
    check_step_transition(StepStatus(status), target)


async def settle_open_steps(
    session: AsyncSession, *, run_id: uuid.UUID, target: StepStatus, claim: int | None
) -> int:
    """Move every PENDING or RUNNING step of a run to a terminal ``target``; how many."""
    if target not in TERMINAL_STEP:
        raise InvalidTransition(f"{target.value} does not settle a step")
    sources = [s for s in (StepStatus.PENDING, StepStatus.RUNNING) if target in STEP_TRANSITIONS[s]]
    condition = (RunStep.run_id == run_id) & RunStep.status.in_(sources)  # type: ignore[attr-defined]
    if claim is not None:
        holder = select(Run.attempt).where(Run.id == run_id).scalar_subquery()  # type: ignore[arg-type]
        condition = condition & (holder == claim)
    result = await session.execute(
        update(RunStep)
        .where(condition)
        .values(status=target, finished_at=_now(), wake_at=None)
        .returning(RunStep.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())


def _now() -> Any:
    from sqlalchemy import func

    return func.now()
