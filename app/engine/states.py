"""The run and step state machine: the one module that writes a status.

Every change of status is a conditional UPDATE: it applies only from an allowed status and,
for a worker, only while it still holds the run (``runs.attempt`` equals its claim). When
the UPDATE matches nothing, the reason is read back and raised: an invalid transition, or a
lost claim.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.event_log import append_event
from app.models import Run, RunEventType, RunStatus, RunStep, StepStatus

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

# Where rows begin (an insert, not a transition): a run is queued, a step pending; a step a
# retry keeps from the failed run's original begins as it ended, SUCCEEDED.
INITIAL_RUN = RunStatus.QUEUED
INITIAL_STEP = StepStatus.PENDING
KEPT_STEP = StepStatus.SUCCEEDED

TERMINAL_RUN = frozenset(s for s, nxt in RUN_TRANSITIONS.items() if not nxt)
TERMINAL_STEP = frozenset(s for s, nxt in STEP_TRANSITIONS.items() if not nxt)

# The event each change appends (in the same transaction), by target status.
RUN_EVENTS = {
    RunStatus.SUCCEEDED: RunEventType.RUN_SUCCEEDED,
    RunStatus.FAILED: RunEventType.RUN_FAILED,
    RunStatus.CANCELLED: RunEventType.RUN_CANCELLED,
}
STEP_EVENTS = {
    StepStatus.RUNNING: RunEventType.STEP_STARTED,
    StepStatus.SUCCEEDED: RunEventType.STEP_SUCCEEDED,
    StepStatus.FAILED: RunEventType.STEP_FAILED,
    StepStatus.SKIPPED: RunEventType.STEP_SKIPPED,
    StepStatus.CANCELLED: RunEventType.STEP_CANCELLED,
}


class InvalidTransition(Exception):
    """A status change the state machine does not allow."""


class LeaseLost(Exception):
    """The worker no longer holds the run: another worker claimed it since."""


def _sources(table: dict[Any, frozenset[Any]], target: Any) -> list[Any]:
    return [source for source, targets in table.items() if target in targets]


def _holder(run_id: uuid.UUID) -> Any:
    # Locks the run row: a step write waits for a claim in progress to commit and then
    # compares with its attempt, so it never slips in beside a new claim. NO KEY UPDATE,
    # the lock the event append takes next anyway: a weaker lock here would deadlock two
    # concurrent step writes of one run upgrading it.
    return (
        select(Run.attempt)
        .where(Run.id == run_id)  # type: ignore[arg-type]
        .with_for_update(key_share=True)
        .scalar_subquery()
    )


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
    current: RunStatus | None = None,
    announce: bool = True,
) -> Run:
    """Move a run to ``target`` (with ``values``); fenced by ``claim`` when given.

    Appends RUN_STARTED when ``current`` (the caller locked the row) is QUEUED, and the
    terminal event on an end status, unless ``announce`` is off.
    """
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
    event = RUN_EVENTS.get(target)
    if target is RunStatus.RUNNING and current is RunStatus.QUEUED:
        event = RunEventType.RUN_STARTED
    if event is not None and announce:
        await append_event(
            session,
            run_id=run_id,
            type=event,
            run_status=target,
            output=row.output if target is RunStatus.SUCCEEDED else None,
            error=row.error if target in (RunStatus.FAILED, RunStatus.CANCELLED) else None,
        )
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
    raise InvalidTransition(f"run {run_id} changed while going to {target.value}; try again")


async def transition_step(
    session: AsyncSession,
    *,
    step_id: uuid.UUID,
    run_id: uuid.UUID,
    target: StepStatus,
    claim: int | None,
    values: dict[str, Any] | None = None,
    announce: bool = True,
) -> None:
    """Move a step to ``target`` and append its event; fenced by the run's claim when given."""
    condition = (RunStep.id == step_id) & RunStep.status.in_(_sources(STEP_TRANSITIONS, target))  # type: ignore[attr-defined]
    if claim is not None:
        condition = condition & (_holder(run_id) == claim)
    result = await session.execute(
        update(RunStep)
        .where(condition)
        .values(status=target, **(values or {}))
        .returning(RunStep.node_id, RunStep.attempt, RunStep.output, RunStep.error)
        .execution_options(synchronize_session=False)
    )
    changed = result.first()
    if changed is not None:
        if announce:
            await append_event(
                session,
                run_id=run_id,
                type=STEP_EVENTS[target],
                step_status=target,
                node_id=changed.node_id,
                attempt=changed.attempt,
                output=changed.output if target is not StepStatus.RUNNING else None,
                error=changed.error if target is StepStatus.FAILED else None,
            )
        return
    status = await session.scalar(select(RunStep.status).where(RunStep.id == step_id))  # type: ignore[arg-type]
    attempt = await session.scalar(select(Run.attempt).where(Run.id == run_id))  # type: ignore[arg-type]
    if claim is not None and attempt != claim:
        raise LeaseLost(f"run {run_id} is now held by claim {attempt}, not {claim}")
    if status is None:
        raise InvalidTransition(f"step {step_id} does not exist")
    check_step_transition(StepStatus(status), target)
    raise InvalidTransition(f"step {step_id} changed while going to {target.value}; try again")


async def settle_open_steps(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    target: StepStatus,
    claim: int | None,
    error: str | None = None,
) -> int:
    """Move every PENDING or RUNNING step of a run to a terminal ``target``; how many."""
    if target not in TERMINAL_STEP:
        raise InvalidTransition(f"{target.value} does not settle a step")
    sources = [s for s in (StepStatus.PENDING, StepStatus.RUNNING) if target in STEP_TRANSITIONS[s]]
    condition = (RunStep.run_id == run_id) & RunStep.status.in_(sources)  # type: ignore[attr-defined]
    if claim is not None:
        condition = condition & (_holder(run_id) == claim)
    result = await session.execute(
        update(RunStep)
        .where(condition)
        .values(status=target, finished_at=func.now(), wake_at=None, error=error)
        .returning(RunStep.node_id, RunStep.attempt, RunStep.position)
        .execution_options(synchronize_session=False)
    )
    settled = sorted(result.all(), key=lambda row: row.position)
    for row in settled:
        await append_event(
            session,
            run_id=run_id,
            type=STEP_EVENTS[target],
            step_status=target,
            node_id=row.node_id,
            attempt=row.attempt,
            error=error,
        )
    return len(settled)
