"""The run and step lifecycle: the one module that writes a status, and the events it appends.

A run is opened here (QUEUED, one PENDING step per node, its first event), claimed here (the
attempt that fences every later write), moved here, and ended here. Every change of status
is a conditional UPDATE: it applies only from an allowed status and, for a driver, only
while it still holds the run (``runs.attempt`` equals its claim). When the UPDATE matches
nothing, the reason is read back and raised: an invalid transition, or a lost claim.
"""

from __future__ import annotations

import enum
import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import TextClause, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import ScalarSelect
from sqlmodel import col

from app.engine.event_log import CHANNEL, append_event
from app.metrics import RUN_CLAIMS, RUN_RESUMES, at_commit, run_finished
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
# A run that has not ended: queued, or held (or left) by a worker.
OPEN_RUN = frozenset(RUN_TRANSITIONS) - TERMINAL_RUN
OPEN_STEP = frozenset(STEP_TRANSITIONS) - TERMINAL_STEP

# Claims that find the run abandoned mid-step (its worker died) beyond this mean a node keeps
# killing its worker: the run ends FAILED with that reason instead of looping.
MAX_CRASHES = 3

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


_Status = TypeVar("_Status", RunStatus, StepStatus)


class InvalidTransition(Exception):
    """A status change the state machine does not allow."""


class LeaseLost(Exception):
    """The worker no longer holds the run: another worker claimed it since."""


def _sources(table: Mapping[_Status, frozenset[_Status]], target: _Status) -> list[_Status]:
    return [source for source, targets in table.items() if target in targets]


def _holder(run_id: uuid.UUID) -> ScalarSelect[int]:
    # Locks the run row: a step write waits for a claim in progress to commit and then
    # compares with its attempt, so it never slips in beside a new claim. NO KEY UPDATE,
    # the lock the event append takes next anyway: a weaker lock here would deadlock two
    # concurrent step writes of one run upgrading it.
    return (
        select(col(Run.attempt))
        .where(col(Run.id) == run_id)
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
    condition = (col(Run.id) == run_id) & col(Run.status).in_(_sources(RUN_TRANSITIONS, target))
    if claim is not None:
        condition = condition & (col(Run.attempt) == claim)
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
    if target in TERMINAL_RUN:
        _count_end(session, row)
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


def _count_end(session: AsyncSession, run: Run) -> None:
    status, trigger = run.status.value, str(run.trigger)
    started_at, finished_at = run.started_at, run.finished_at
    at_commit(session, lambda: run_finished(status, trigger, started_at, finished_at))


async def _explain_run(
    session: AsyncSession, run_id: uuid.UUID, target: RunStatus, claim: int | None
) -> None:
    found = (
        await session.execute(
            select(col(Run.status), col(Run.attempt)).where(col(Run.id) == run_id)
        )
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
    condition = (col(RunStep.id) == step_id) & col(RunStep.status).in_(
        _sources(STEP_TRANSITIONS, target)
    )
    if claim is not None:
        condition = condition & (_holder(run_id) == claim)
    result = await session.execute(
        update(RunStep)
        .where(condition)
        .values(status=target, **(values or {}))
        .returning(
            col(RunStep.node_id), col(RunStep.attempt), col(RunStep.output), col(RunStep.error)
        )
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
    status = await session.scalar(select(col(RunStep.status)).where(col(RunStep.id) == step_id))
    attempt = await session.scalar(select(col(Run.attempt)).where(col(Run.id) == run_id))
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
    condition = (col(RunStep.run_id) == run_id) & col(RunStep.status).in_(sources)
    if claim is not None:
        condition = condition & (_holder(run_id) == claim)
    result = await session.execute(
        update(RunStep)
        .where(condition)
        .values(status=target, finished_at=func.now(), wake_at=None, error=error)
        .returning(col(RunStep.node_id), col(RunStep.attempt), col(RunStep.position))
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


# A run, its steps and its first event in one statement (one round trip); NOTIFY at commit.
# {columns}/{values} are the run's own columns, from RUN_OPEN_COLUMNS only, never input.
_OPEN_RUN = """
WITH r AS (
    INSERT INTO runs (id, status, queued_at, last_event_seq, lease_until{columns})
    VALUES (:id, :status, clock_timestamp(), 1,
            clock_timestamp() + make_interval(secs => CAST(:lease AS double precision)){values})
    {conflict}
    RETURNING *
), s AS (
    INSERT INTO run_steps (id, workspace_id, run_id, node_id, node_type, position, status,
                           attempt, input, output, active_handles, reused, started_at,
                           finished_at)
    SELECT gen_random_uuid(), r.workspace_id, r.id, v.node_id, v.node_type, v.position,
           v.status, coalesce(v.attempt, 0), v.input, v.output, v.active_handles,
           coalesce(v.reused, false), v.started_at, v.finished_at
    FROM r, jsonb_to_recordset(CAST(:steps AS jsonb)) AS v(
        node_id text, node_type text, position integer, status text, attempt integer,
        input jsonb, output jsonb, active_handles jsonb, reused boolean,
        started_at timestamptz, finished_at timestamptz)
), e AS (
    INSERT INTO run_events (run_id, seq, workspace_id, workflow_id, type, at, run_status)
    SELECT r.id, 1, r.workspace_id, r.workflow_id, :event, r.queued_at, r.status FROM r
)
SELECT r.* FROM r CROSS JOIN LATERAL pg_notify(:channel, json_build_object(
    'run', r.id, 'seq', 1, 'workflow', r.workflow_id, 'type', :event)::text) AS n
"""
_IDEMPOTENT = (
    "ON CONFLICT (workflow_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
)
# The columns a caller may give a new run (the rest begin at their defaults).
RUN_OPEN_COLUMNS = {
    "workspace_id": "uuid",
    "workflow_id": "uuid",
    "version_id": "uuid",
    "version_number": "integer",
    "trigger": "text",
    "input": "jsonb",
    "input_hash": "text",
    "idempotency_key": "text",
    "created_by_id": "uuid",
    "retry_of_id": "uuid",
    "traceparent": "text",
}


async def open_run(
    session: AsyncSession,
    *,
    values: Mapping[str, Any],
    nodes: Sequence[Mapping[str, str]],
    kept: Mapping[str, RunStep] | None = None,
    idempotent: bool = False,
    lease_seconds: float | None = None,
) -> Run | None:
    """Insert a run QUEUED, a PENDING step per node (a kept step as it ended), and RUN_QUEUED,
    in one statement.

    With ``idempotent``, a run already holding the idempotency key in ``values`` wins: None
    comes back and nothing is written. With ``lease_seconds`` the run is born leased to this
    process (it drives the run itself once the transaction commits).
    """
    unknown = set(values) - set(RUN_OPEN_COLUMNS)
    if unknown:
        raise ValueError(f"not a column a new run takes: {sorted(unknown)}")
    names = list(values)
    statement = _open_run_sql(tuple(names), idempotent)
    params: dict[str, Any] = {
        name: _open_value(values[name], RUN_OPEN_COLUMNS[name]) for name in names
    }
    params |= {
        "id": uuid.uuid4(),
        "status": INITIAL_RUN.value,
        "lease": lease_seconds,
        "steps": json.dumps(_step_rows(nodes, kept or {})),
        "event": RunEventType.RUN_QUEUED.value,
        "channel": CHANNEL,
    }
    result = await session.execute(select(Run).from_statement(statement), params)
    return result.scalar_one_or_none()


@functools.lru_cache(maxsize=32)
def _open_run_sql(names: tuple[str, ...], idempotent: bool) -> TextClause:
    columns = "".join(f", {name}" for name in names)
    values = "".join(f", CAST(:{name} AS {RUN_OPEN_COLUMNS[name]})" for name in names)
    sql = (
        _OPEN_RUN.replace("{columns}", columns)
        .replace("{values}", values)
        .replace("{conflict}", _IDEMPOTENT if idempotent else "")
    )
    return text(sql)


def _open_value(value: Any, kind: str) -> Any:
    if kind == "jsonb":
        return None if value is None else json.dumps(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _step_rows(nodes: Sequence[Mapping[str, str]], kept: Mapping[str, RunStep]) -> list[Any]:
    """A PENDING step per node; a kept step begins as it ended (reused, never run again)."""
    rows = []
    for position, node in enumerate(nodes):
        row: dict[str, Any] = {
            "node_id": node["id"],
            "node_type": node["type"],
            "position": position,
            "status": INITIAL_STEP.value,
        }
        reused = kept.get(node["id"])
        if reused is not None:
            # A kept step begins as it ended: its result is reused, it never runs again.
            row |= {
                "status": KEPT_STEP.value,
                "attempt": reused.attempt,
                "input": reused.input,
                "output": reused.output,
                "active_handles": reused.active_handles,
                "reused": True,
                "started_at": _iso(reused.started_at),
                "finished_at": _iso(reused.finished_at),
            }
        rows.append(row)
    return rows


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def claim_run(
    session: AsyncSession, *, run_id: uuid.UUID, job_id: int | None, timeout_seconds: float
) -> Run | None:
    """Take a run to drive it: RUNNING, its attempt bumped so any earlier holder is fenced out.

    None when there is nothing to drive: the run is gone, ``job_id`` is a stale job of it, it
    ended (its open steps are settled now), or its worker died too often (it ends FAILED).
    """
    run = (
        await session.execute(select(Run).where(col(Run.id) == run_id).with_for_update())
    ).scalar_one_or_none()
    if run is None:
        return None
    if job_id is not None and run.job_id is not None and run.job_id != job_id:
        return None  # a stale job: the run was handed to a newer one
    if run.status in TERMINAL_RUN:
        await _settle_ended(session, run)
        return None
    abandoned = run.status is RunStatus.RUNNING and run.wake_at is None
    crashes = run.crashes + (1 if abandoned else 0)
    if crashes > MAX_CRASHES:
        await _give_up(session, run, crashes)
        return None
    resumed = None if run.status is RunStatus.QUEUED else ("crash" if abandoned else "wake")
    at_commit(session, lambda: _count_claim(resumed))
    return await transition_run(
        session,
        run_id=run.id,
        target=RunStatus.RUNNING,
        claim=None,
        values={
            "attempt": run.attempt + 1,
            "crashes": crashes,
            "wake_at": None,
            "started_at": func.coalesce(col(Run.started_at), func.now()),
            "deadline_at": func.coalesce(
                col(Run.deadline_at), func.now() + timedelta(seconds=timeout_seconds)
            ),
        },
        current=run.status,
    )


def _count_claim(resumed: str | None) -> None:
    RUN_CLAIMS.labels("job").inc()
    if resumed is not None:
        RUN_RESUMES.labels(resumed).inc()


async def _settle_ended(session: AsyncSession, run: Run) -> None:
    # E.g. cancelled while its worker was gone: nothing may stay RUNNING, and the run's last
    # event is its end.
    settled = await settle_open_steps(
        session, run_id=run.id, target=StepStatus.CANCELLED, claim=None
    )
    if settled and run.status is RunStatus.CANCELLED:
        await append_event(
            session,
            run_id=run.id,
            type=RunEventType.RUN_CANCELLED,
            run_status=RunStatus.CANCELLED,
            error=run.error,
        )


async def _give_up(session: AsyncSession, run: Run, crashes: int) -> None:
    running = await session.scalar(
        select(col(RunStep.node_id)).where(
            col(RunStep.run_id) == run.id, col(RunStep.status) == StepStatus.RUNNING
        )
    )
    where = f' while node "{running}" was running' if running else ""
    message = (
        f"The worker running this run stopped {crashes} times{where}; giving up "
        "(a node may be crashing its worker)."
    )
    await settle_open_steps(
        session, run_id=run.id, target=StepStatus.FAILED, claim=None, error=message
    )
    await settle_open_steps(session, run_id=run.id, target=StepStatus.CANCELLED, claim=None)
    await transition_run(
        session,
        run_id=run.id,
        target=RunStatus.FAILED,
        claim=None,
        values={
            "crashes": crashes,
            "error": message,
            "error_node_id": running,
            "finished_at": func.now(),
        },
    )


async def end_run(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    target: RunStatus,
    claim: int | None,
    values: Mapping[str, Any],
    current: RunStatus | None = None,
) -> Run:
    """End a run (SUCCEEDED, FAILED or CANCELLED): its open steps CANCELLED, then its end event."""
    if target not in TERMINAL_RUN:
        raise InvalidTransition(f"{target.value} does not end a run")
    await settle_open_steps(session, run_id=run_id, target=StepStatus.CANCELLED, claim=claim)
    return await transition_run(
        session,
        run_id=run_id,
        target=target,
        claim=claim,
        values={**values, "finished_at": func.now()},
        current=current,
    )
