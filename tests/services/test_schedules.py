"""The schedule service: upcoming times with an injected clock, and what update_schedule
leaves for the tick when a schedule is re-enabled, resubmitted, changed or raced."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.models import ScheduleOverlap, Workflow
from app.runtime import Runtime
from app.services.schedules import upcoming
from app.worker.schedules import tick
from schema.ids import decode_id
from tests.factories import Factory
from tests.runs import create_workflow
from tests.schedules import GRAPH, LEAP_MONDAY, set_schedule_at, utc

# --- upcoming ------------------------------------------------------------------------------


async def test_upcoming_with_an_injected_clock_across_a_dst_change(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    await create_workflow(factory, owner, GRAPH)
    workflow_id = await factory.scalar("SELECT id FROM workflows")
    now = datetime(2026, 3, 26, 12, 0, tzinfo=UTC)  # a Thursday; summer time starts on Sunday

    workflow = await set_schedule_at(
        runtime,
        owner,
        workflow_id,
        now,
        cron="0 9 * * MON-FRI",
        timezone="Europe/Berlin",
        enabled=True,
    )

    assert workflow.schedule_next_fire_at == datetime(2026, 3, 27, 8, 0, tzinfo=UTC)
    assert upcoming(workflow, count=5, now=now) == [
        datetime(2026, 3, 27, 8, 0, tzinfo=UTC),  # Fri 09:00 CET
        datetime(2026, 3, 30, 7, 0, tzinfo=UTC),  # Mon 09:00 CEST
        datetime(2026, 3, 31, 7, 0, tzinfo=UTC),
        datetime(2026, 4, 1, 7, 0, tzinfo=UTC),
        datetime(2026, 4, 2, 7, 0, tzinfo=UTC),
    ]
    assert upcoming(workflow, count=2, now=datetime(2026, 3, 27, 8, 0, tzinfo=UTC)) == [
        datetime(2026, 3, 30, 7, 0, tzinfo=UTC),  # strictly after now
        datetime(2026, 3, 31, 7, 0, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    "cron",
    [LEAP_MONDAY, "0 0 */2 2 MON#5", "0 0 31 2 MON#5", "0 0 29 2 *", "0 0 L 2 5#5", "* * * * *"],
)
@pytest.mark.parametrize(
    "zone", ["UTC", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Chatham"]
)
def test_fifty_upcoming_times_of_any_rare_cron_stay_within_fifty_years(
    cron: str, zone: str
) -> None:
    workflow = Workflow(
        id=uuid.uuid4(),
        workspace_id=uuid.uuid4(),
        name="x",
        schedule_cron=cron,
        schedule_timezone=zone,
        schedule_enabled=True,
    )
    now = utc(2026, 11, 22)

    times = upcoming(workflow, count=50, now=now)

    assert times == sorted(set(times))
    assert len(times) <= 50
    assert all(now < t <= now + timedelta(days=50 * 366) for t in times)


DAILY_AT_NINE = {"cron": "0 9 * * *", "timezone": "UTC", "enabled": True}

# --- update_schedule, then the tick ---------------------------------------------------------


async def fire_rows(factory: Factory) -> list[tuple]:
    """(fire_at, outcome, missed) of every fire, oldest first."""
    async with factory.engine.connect() as conn:
        result = await conn.execute(
            text("SELECT fire_at, outcome, missed FROM schedule_fires ORDER BY fire_at")
        )
        return [tuple(row) for row in result]


async def test_re_enabling_after_days_off_fires_no_catch_up_for_the_disabled_time(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    workflow_id = decode_id("Workflow", await create_workflow(factory, owner, GRAPH))
    minutely = {"cron": "*/5 * * * *", "timezone": "Australia/Lord_Howe"}
    await set_schedule_at(runtime, owner, workflow_id, utc(2026, 6, 1), enabled=True, **minutely)
    await tick(runtime, now=utc(2026, 6, 1, 0, 5))
    await set_schedule_at(
        runtime, owner, workflow_id, utc(2026, 6, 1, 0, 6), enabled=False, **minutely
    )

    while_off = await tick(runtime, now=utc(2026, 6, 3))
    await set_schedule_at(
        runtime, owner, workflow_id, utc(2026, 6, 4, 0, 2), enabled=True, **minutely
    )
    back = await tick(runtime, now=utc(2026, 6, 4, 0, 2))
    on_time = await tick(runtime, now=utc(2026, 6, 4, 0, 5))

    assert (while_off.fires, back.fires) == ([], [])
    assert [(f.fire_at, f.missed) for f in on_time.fires] == [(utc(2026, 6, 4, 0, 5), 0)]
    assert await fire_rows(factory) == [
        (utc(2026, 6, 1, 0, 5), "STARTED", 0),
        (utc(2026, 6, 4, 0, 5), "SKIPPED", 0),  # the first scheduled run is still queued
    ]
    assert await factory.scalar("SELECT count(*) FROM runs") == 1


async def test_resubmitting_an_unchanged_schedule_during_an_outage_keeps_its_catch_up(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    workflow_id = decode_id("Workflow", await create_workflow(factory, owner, GRAPH))
    daily = {"cron": "0 9 * * *", "timezone": "Asia/Kathmandu", "enabled": True}
    await set_schedule_at(runtime, owner, workflow_id, utc(2026, 6, 1), **daily)  # next: 03:15Z

    # No worker ticked at 03:15; at 05:00 someone only switches overlap to ALLOW.
    await set_schedule_at(
        runtime, owner, workflow_id, utc(2026, 6, 1, 5), overlap=ScheduleOverlap.ALLOW, **daily
    )
    result = await tick(runtime, now=utc(2026, 6, 1, 5, 0, 1))

    assert [(f.fire_at, f.missed) for f in result.fires] == [(utc(2026, 6, 1, 3, 15), 0)]
    assert (await factory.scalar("SELECT input FROM runs"))["catchUp"] is True
    assert await factory.scalar("SELECT schedule_next_fire_at FROM workflows") == utc(
        2026, 6, 2, 3, 15
    )


async def test_changing_the_cron_while_a_fire_is_due_moves_to_the_new_cron(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    workflow_id = decode_id("Workflow", await create_workflow(factory, owner, GRAPH))
    await set_schedule_at(runtime, owner, workflow_id, utc(2026, 6, 1), **DAILY_AT_NINE)

    await set_schedule_at(
        runtime,
        owner,
        workflow_id,
        utc(2026, 6, 1, 9, 30),
        cron="0 10 * * *",
        timezone="UTC",
        enabled=True,
    )
    result = await tick(runtime, now=utc(2026, 6, 1, 10))

    assert [(f.fire_at, f.missed) for f in result.fires] == [(utc(2026, 6, 1, 10), 0)]
    assert await fire_rows(factory) == [(utc(2026, 6, 1, 10), "STARTED", 0)]


async def test_an_update_racing_a_tick_fires_the_due_time_at_most_once(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    ids = [
        decode_id("Workflow", await create_workflow(factory, owner, GRAPH, f"F{n}"))
        for n in range(8)
    ]
    for workflow_id in ids:
        await set_schedule_at(runtime, owner, workflow_id, utc(2026, 6, 1), **DAILY_AT_NINE)

    await asyncio.gather(
        tick(runtime, now=utc(2026, 6, 1, 9)),
        *(
            set_schedule_at(runtime, owner, workflow_id, utc(2026, 6, 1, 9), **DAILY_AT_NINE)
            for workflow_id in ids
        ),
        tick(runtime, now=utc(2026, 6, 1, 9)),
    )
    again = await tick(runtime, now=utc(2026, 6, 1, 9, 0, 30))

    fired = await factory.scalar("SELECT count(*) FROM schedule_fires")
    assert fired == await factory.scalar("SELECT count(*) FROM runs")
    assert again.fires == []
    assert await factory.scalar("SELECT count(DISTINCT schedule_next_fire_at) FROM workflows") == 1
    assert await factory.scalar("SELECT min(schedule_next_fire_at) FROM workflows") == utc(
        2026, 6, 2, 9
    )
