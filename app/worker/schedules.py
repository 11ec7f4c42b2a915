"""The schedule tick: fire each due schedule once per fire time, whatever the number of workers.

Every worker ticks. A tick lists the due workflows, then handles each in its own transaction
with its row locked (SKIP LOCKED, so workers share the work instead of queueing on it). The
guarantee of one firing per (workflow, fire time) is the unique constraint on
``schedule_fires``: a fire is claimed by inserting its row, and a worker whose insert
conflicts does nothing. After downtime a schedule fires once, for its most recent due time.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import procrastinate
from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import InputErrors
from app.metrics import SCHEDULE_FIRES
from app.models import FireOutcome, Run, RunStatus, RunTrigger, ScheduleFire, Workflow, utcnow
from app.services.graphs import GraphPolicy
from app.services.runs import queue_run
from app.services.schedules import DueFire, ScheduleOverlap, due_fire, next_fire_time

log = logging.getLogger(__name__)

BATCH_SIZE = 100
# A fire handled later than this after its time says so in its run input (catchUp).
CATCH_UP_AFTER = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Fired:
    """One fire a tick made."""

    workflow_id: uuid.UUID
    fire_at: datetime
    outcome: FireOutcome
    run_id: uuid.UUID | None
    missed: int
    error: str | None


@dataclass(slots=True)
class TickResult:
    """What one tick did: its fires, and the workflows it could not handle (tried again)."""

    fires: list[Fired] = field(default_factory=list)
    errors: int = 0


def run_input(workflow: Workflow, due: DueFire, now: datetime) -> dict[str, Any]:
    """The input of a scheduled run: when it was due, in UTC and local time, and catch-up."""
    assert workflow.schedule_timezone is not None
    local = due.fire_at.astimezone(ZoneInfo(workflow.schedule_timezone))
    return {
        "scheduledAt": due.fire_at.isoformat(),
        "scheduledAtLocal": local.isoformat(),
        "timezone": workflow.schedule_timezone,
        "catchUp": due.missed > 0 or now - due.fire_at > CATCH_UP_AFTER,
        "missed": due.missed,
    }


async def _scheduled_run_open(session: AsyncSession, workflow_id: uuid.UUID) -> bool:
    found = await session.scalar(
        select(col(Run.id))
        .where(
            col(Run.workflow_id) == workflow_id,
            col(Run.trigger) == RunTrigger.SCHEDULE,
            col(Run.status).in_([RunStatus.QUEUED, RunStatus.RUNNING]),
        )
        .limit(1)
    )
    return found is not None


async def _start_run(
    session: AsyncSession,
    *,
    queue: procrastinate.App,
    policy: GraphPolicy,
    max_input_bytes: int,
    workflow: Workflow,
    due: DueFire,
    now: datetime,
) -> tuple[FireOutcome, uuid.UUID | None, str | None]:
    if workflow.schedule_overlap == ScheduleOverlap.SKIP and await _scheduled_run_open(
        session, workflow.id
    ):
        return FireOutcome.SKIPPED, None, None
    try:
        async with session.begin_nested():  # a refused run leaves nothing half-written
            run = await queue_run(
                session,
                queue=queue,
                workflow=workflow,
                input=run_input(workflow, due, now),
                version=None,
                idempotency_key=f"schedule:{due.fire_at.isoformat()}",
                policy=policy,
                max_input_bytes=max_input_bytes,
                trigger=RunTrigger.SCHEDULE,
                created_by_id=None,
            )
    except InputErrors as error:
        return FireOutcome.FAILED, None, str(error)
    return FireOutcome.STARTED, run.id, None


async def fire_schedule(
    session: AsyncSession,
    *,
    queue: procrastinate.App,
    policy: GraphPolicy,
    max_input_bytes: int,
    workflow: Workflow,
    now: datetime | None = None,
) -> Fired | None:
    """Fire a due schedule's most recent time, unless it was fired already; advance it.

    The caller owns the transaction. None when there was nothing to fire or another worker
    fired this time first (its row in schedule_fires is the proof).
    """
    now = now or utcnow()
    assert workflow.schedule_cron is not None
    assert workflow.schedule_timezone is not None
    assert workflow.schedule_next_fire_at is not None
    cron, timezone = workflow.schedule_cron, workflow.schedule_timezone
    due = due_fire(cron, timezone, since=workflow.schedule_next_fire_at, now=now)
    changes: dict[str, Any] = {"schedule_next_fire_at": next_fire_time(cron, timezone, now)}
    fired = None
    if due is not None:
        fire_id = await session.scalar(
            pg_insert(ScheduleFire)
            .values(
                id=uuid.uuid4(),
                workspace_id=workflow.workspace_id,
                workflow_id=workflow.id,
                fire_at=due.fire_at,
                outcome=FireOutcome.STARTED,  # settled below, in the same transaction
                missed=due.missed,
            )
            .on_conflict_do_nothing(index_elements=["workflow_id", "fire_at"])
            .returning(col(ScheduleFire.id))
        )
        if fire_id is not None:
            outcome, run_id, error = await _start_run(
                session,
                queue=queue,
                policy=policy,
                max_input_bytes=max_input_bytes,
                workflow=workflow,
                due=due,
                now=now,
            )
            await session.execute(
                update(ScheduleFire)
                .where(col(ScheduleFire.id) == fire_id)
                .values(outcome=outcome, run_id=run_id, error=error)
            )
            changes["schedule_last_fired_at"] = due.fire_at
            if outcome is FireOutcome.SKIPPED:
                changes["schedule_skipped_count"] = Workflow.schedule_skipped_count + 1
            fired = Fired(workflow.id, due.fire_at, outcome, run_id, due.missed, error)
    await session.execute(update(Workflow).where(col(Workflow.id) == workflow.id).values(**changes))
    return fired


async def _due_batch(
    runtime: Any, now: datetime, after: tuple[datetime, uuid.UUID] | None
) -> list[tuple[datetime, uuid.UUID]]:
    query = (
        select(col(Workflow.schedule_next_fire_at), col(Workflow.id))
        .where(col(Workflow.schedule_enabled), col(Workflow.schedule_next_fire_at) <= now)
        .order_by(col(Workflow.schedule_next_fire_at), col(Workflow.id))
        .limit(BATCH_SIZE)
    )
    if after is not None:
        # Each workflow once a tick, even one whose fire keeps failing.
        query = query.where(
            tuple_(col(Workflow.schedule_next_fire_at), col(Workflow.id)) > tuple_(*after)
        )
    async with runtime.sessions() as session:
        return [(row[0], row[1]) for row in (await session.execute(query)).all()]


async def _fire_one(runtime: Any, workflow_id: uuid.UUID, now: datetime) -> Fired | None:
    async with runtime.sessions() as session, session.begin():
        workflow = (
            await session.execute(
                select(Workflow)
                .where(
                    col(Workflow.id) == workflow_id,
                    col(Workflow.schedule_enabled),
                    col(Workflow.schedule_next_fire_at) <= now,
                )
                .with_for_update(skip_locked=True)
            )
        ).scalar_one_or_none()
        if workflow is None:  # another worker has it, or fired it, or it changed or went
            return None
        return await fire_schedule(
            session,
            queue=runtime.queue,
            policy=runtime.graph_policy,
            max_input_bytes=runtime.settings.max_run_input_bytes,
            workflow=workflow,
            now=now,
        )


def _record(fired: Fired) -> None:
    SCHEDULE_FIRES.labels(outcome=fired.outcome.value).inc()
    log.log(
        logging.WARNING if fired.outcome is FireOutcome.FAILED else logging.INFO,
        "schedule fired",
        extra={
            "workflow_id": str(fired.workflow_id),
            "fire_at": fired.fire_at.astimezone(UTC).isoformat(),
            "outcome": fired.outcome.value,
            "run_id": str(fired.run_id) if fired.run_id else None,
            "missed": fired.missed,
            "error": fired.error,
        },
    )


async def tick(runtime: Any, *, now: datetime | None = None) -> TickResult:
    """Fire every schedule due at ``now``, each workflow in its own transaction."""
    now = now or utcnow()
    result = TickResult()
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        batch = await _due_batch(runtime, now, after)
        for _, workflow_id in batch:
            try:
                fired = await _fire_one(runtime, workflow_id, now)
            except Exception:  # one broken schedule must not stop the others
                log.exception("schedule fire failed", extra={"workflow_id": str(workflow_id)})
                result.errors += 1
                continue
            if fired is not None:
                _record(fired)
                result.fires.append(fired)
        if len(batch) < BATCH_SIZE:
            return result
        after = batch[-1]
