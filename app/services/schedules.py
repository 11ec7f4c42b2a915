"""Schedules: setting a workflow's cron schedule, listing its fire times, and firing it.

A fire is claimed by inserting its row in ``schedule_fires`` (unique per workflow and fire
time), so each (workflow, fire time) fires once whatever the number of workers; the worker's
tick only finds the due workflows and calls ``fire_due`` for each, in its own transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.engine.cron import (
    DueFire,
    check_cron,
    check_timezone,
    due_fire,
    next_fire_time,
    upcoming_times,
)
from app.engine.states import OPEN_RUN
from app.errors import ErrorCode, InputErrors
from app.models import (
    AuditAction,
    AuditObjectType,
    FireOutcome,
    Role,
    Run,
    RunTrigger,
    ScheduleFire,
    ScheduleOverlap,
    Workflow,
    utcnow,
)
from app.services import audit
from app.services.graphs import GraphPolicy
from app.services.queue import RunQueue
from app.services.records import WorkflowRecord
from app.services.runs import queue_run
from app.services.workflows import get_workflow

MAX_UPCOMING = 50
MAX_RECENT_FIRES = 100
NOT_PUBLISHED = "WORKFLOW_NOT_PUBLISHED: no version of this workflow is published."
# A fire handled later than this after its time says so in its run input (catchUp).
CATCH_UP_AFTER = timedelta(minutes=1)


async def update_schedule(
    session: AsyncSession,
    *,
    principal: Principal,
    workflow_id: uuid.UUID,
    cron: str,
    timezone: str,
    enabled: bool,
    overlap: ScheduleOverlap | None = None,
    now: datetime | None = None,
) -> Workflow:
    """Set a workflow's schedule (editors); disabling keeps cron and zone but stops firing."""
    workflow = await get_workflow(
        session, principal=principal, workflow_id=workflow_id, role=Role.EDITOR, for_update=True
    )
    clean, errors = check_cron(cron)
    errors += check_timezone(timezone)
    if errors:
        raise InputErrors(errors)
    next_fire_at = next_fire_time(clean, timezone, now or utcnow()) if enabled else None
    if (
        enabled
        and workflow.schedule_enabled
        and (workflow.schedule_cron, workflow.schedule_timezone) == (clean, timezone)
    ):
        # The same times as before: keep a fire that is due but not yet fired (workers down),
        # or changing only the overlap policy would drop its catch-up.
        next_fire_at = workflow.schedule_next_fire_at
    values: dict[str, object] = {
        "schedule_cron": clean,
        "schedule_timezone": timezone,
        "schedule_enabled": enabled,
        "schedule_next_fire_at": next_fire_at,
    }
    if overlap is not None:
        values["schedule_overlap"] = overlap.value
    await session.execute(update(Workflow).where(col(Workflow.id) == workflow.id).values(**values))
    for key, value in values.items():
        setattr(workflow, key, value)
    await audit.record(
        session,
        principal=principal,
        workspace_id=workflow.workspace_id,
        action=AuditAction.SCHEDULE_UPDATE,
        object_type=AuditObjectType.WORKFLOW,
        object_id=workflow.id,
        summary={
            "cron": clean,
            "timezone": timezone,
            "enabled": enabled,
            "overlap": workflow.schedule_overlap,
        },
    )
    return workflow


def upcoming(
    workflow: Workflow | WorkflowRecord, *, count: int, now: datetime | None = None
) -> list[datetime]:
    """The next ``count`` (1 to 50) fire times within 50 years, in UTC; [] when off."""
    if not 1 <= count <= MAX_UPCOMING:
        raise InputErrors.single(
            ("count",), ErrorCode.INVALID, f"count must be between 1 and {MAX_UPCOMING}."
        )
    if not workflow.schedule_enabled or not workflow.schedule_cron:
        return []
    assert workflow.schedule_timezone is not None
    return upcoming_times(
        workflow.schedule_cron, workflow.schedule_timezone, now=now or utcnow(), count=count
    )


def check_fires_limit(limit: int) -> None:
    """InputErrors unless ``limit`` is 1 to MAX_RECENT_FIRES."""
    if not 1 <= limit <= MAX_RECENT_FIRES:
        raise InputErrors.single(
            ("limit",), ErrorCode.INVALID, f"limit must be between 1 and {MAX_RECENT_FIRES}."
        )


# --- firing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fired:
    """One fire a tick made."""

    workflow_id: uuid.UUID
    fire_at: datetime
    outcome: FireOutcome
    run_id: uuid.UUID | None
    missed: int
    error: str | None


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
            col(Run.status).in_(OPEN_RUN),
        )
        .limit(1)
    )
    return found is not None


async def _start_run(
    session: AsyncSession,
    *,
    queue: RunQueue,
    policy: GraphPolicy,
    max_input_bytes: int,
    workflow: Workflow,
    due: DueFire,
    now: datetime,
) -> tuple[FireOutcome, uuid.UUID | None, str | None]:
    if workflow.published_version is None:  # schedules run the published version only
        return FireOutcome.SKIPPED, None, NOT_PUBLISHED
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
                version=workflow.published_version,
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
    queue: RunQueue,
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
            if outcome is FireOutcome.SKIPPED and error is None:  # overlap skips only
                changes["schedule_skipped_count"] = col(Workflow.schedule_skipped_count) + 1
            fired = Fired(workflow.id, due.fire_at, outcome, run_id, due.missed, error)
    await session.execute(update(Workflow).where(col(Workflow.id) == workflow.id).values(**changes))
    return fired


async def due_schedules(
    session: AsyncSession, *, now: datetime, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[tuple[datetime, uuid.UUID]]:
    """(next fire time, workflow id) of enabled schedules due at ``now``, after ``after``."""
    query = (
        select(col(Workflow.schedule_next_fire_at), col(Workflow.id))
        .where(col(Workflow.schedule_enabled), col(Workflow.schedule_next_fire_at) <= now)
        .order_by(col(Workflow.schedule_next_fire_at), col(Workflow.id))
        .limit(limit)
    )
    if after is not None:
        # Each workflow once a tick, even one whose fire keeps failing.
        query = query.where(
            tuple_(col(Workflow.schedule_next_fire_at), col(Workflow.id)) > tuple_(*after)
        )
    rows = (await session.execute(query)).all()
    return [(fire_at, workflow_id) for fire_at, workflow_id in rows if fire_at is not None]


async def fire_due(
    session: AsyncSession,
    *,
    queue: RunQueue,
    policy: GraphPolicy,
    max_input_bytes: int,
    workflow_id: uuid.UUID,
    now: datetime,
) -> Fired | None:
    """Fire a workflow's schedule if it is still due and no other worker holds it right now."""
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
        queue=queue,
        policy=policy,
        max_input_bytes=max_input_bytes,
        workflow=workflow,
        now=now,
    )
