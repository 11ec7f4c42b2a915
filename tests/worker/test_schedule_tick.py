"""The schedule tick with an injected clock: exact fire times, DST, catch-up, overlap, races."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from app.db import create_engine
from app.models import FireOutcome, ScheduleOverlap, Workflow
from app.outage import DatabaseWatch
from app.runtime import Runtime
from app.services.schedules import Fired, fire_schedule, upcoming
from app.settings import Settings
from app.worker.runner import schedule_loop
from app.worker.schedules import tick
from schema.ids import decode_id
from tests.factories import Account, Factory, gid
from tests.runs import create_workflow, execute, flow, node, publish, wait_for
from tests.schedules import set_schedule_at, utc

GRAPH = flow(
    node("t", "trigger"),
    node("out", "output", value="{{ trigger.scheduledAtLocal }}"),
    handle="out",
)
BERLIN = ZoneInfo("Europe/Berlin")


async def scheduled(
    factory: Factory,
    owner: Account,
    runtime: Runtime,
    *,
    cron: str = "0 9 * * *",
    timezone: str = "UTC",
    now: datetime = utc(2026, 6, 1),
    overlap: ScheduleOverlap | None = None,
    graph: dict[str, Any] = GRAPH,
    name: str = "Flow",
) -> uuid.UUID:
    """A new workflow whose schedule was set (enabled) at ``now``; its id. By default daily at
    09:00 UTC, set on 1 June 2026."""
    workflow_id = decode_id("Workflow", await create_workflow(factory, owner, graph, name))
    await set_schedule_at(
        runtime,
        owner,
        workflow_id,
        now,
        cron=cron,
        timezone=timezone,
        enabled=True,
        overlap=overlap,
    )
    return workflow_id


async def rows(factory: Factory, statement: str, **params: Any) -> list[dict[str, Any]]:
    """Rows from SQL as dicts, for asserting what was written."""
    async with factory.engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(text(statement), params)]


async def fires(factory: Factory) -> list[dict[str, Any]]:
    """Every schedule_fires row, oldest fire first."""
    return await rows(
        factory,
        "SELECT workflow_id, fire_at, outcome, run_id, missed, error FROM schedule_fires "
        "ORDER BY fire_at, workflow_id",
    )


async def runs(factory: Factory) -> list[dict[str, Any]]:
    """Every run, oldest first."""
    return await rows(
        factory,
        "SELECT id, workflow_id, status, trigger, input, idempotency_key, created_by_id, "
        "version_number, job_id IS NOT NULL AS has_job FROM runs ORDER BY queued_at, id",
    )


async def schedule_row(factory: Factory, workflow_id: uuid.UUID) -> dict[str, Any]:
    """The schedule columns of a workflow."""
    (row,) = await rows(
        factory,
        "SELECT schedule_next_fire_at, schedule_last_fired_at, schedule_skipped_count "
        "FROM workflows WHERE id = :id",
        id=workflow_id,
    )
    return row


async def tick_every(runtime: Runtime, start: datetime, end: datetime, step: timedelta) -> list:
    """Tick at start, start + step, … up to end; every fire made."""
    made: list[Fired] = []
    moment = start
    while moment <= end:
        result = await tick(runtime, now=moment)
        assert result.errors == 0
        made += result.fires
        moment += step
    return made


def fires_total(outcome: str) -> float:
    """The flowdeck_schedule_fires_total counter of one outcome."""
    return REGISTRY.get_sample_value("flowdeck_schedule_fires_total", {"outcome": outcome}) or 0.0


def schedule_input(fire_at: str, local: str, timezone: str, catch_up: bool, missed: int) -> dict:
    """The run input a scheduled run gets."""
    return {
        "scheduledAt": fire_at,
        "scheduledAtLocal": local,
        "timezone": timezone,
        "catchUp": catch_up,
        "missed": missed,
    }


async def test_a_schedule_fires_exactly_at_its_time_once(
    factory: Factory, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await factory.owner()
    workflow_id = await scheduled(
        factory, owner, runtime, cron="0 9 * * *", timezone="Europe/Berlin", now=utc(2026, 6, 1)
    )
    started_before = fires_total("STARTED")

    early = await tick(runtime, now=utc(2026, 6, 1, 6, 59, 59, 999999))
    nothing_yet = (await fires(factory), await runs(factory))
    with caplog.at_level(logging.INFO, logger="app.worker.schedules"):
        on_time = await tick(runtime, now=utc(2026, 6, 1, 7, 0))
    again = await tick(runtime, now=utc(2026, 6, 1, 7, 0))
    later = await tick(runtime, now=utc(2026, 6, 1, 7, 0, 30))

    assert early.fires == []
    assert nothing_yet == ([], [])
    (run,) = await runs(factory)
    assert on_time.fires == [
        Fired(workflow_id, utc(2026, 6, 1, 7, 0), FireOutcome.STARTED, run["id"], 0, None)
    ]
    assert run == {
        "id": run["id"],
        "workflow_id": workflow_id,
        "status": "QUEUED",
        "trigger": "SCHEDULE",
        "input": schedule_input(
            "2026-06-01T07:00:00+00:00", "2026-06-01T09:00:00+02:00", "Europe/Berlin", False, 0
        ),
        "idempotency_key": "schedule:2026-06-01T07:00:00+00:00",
        "created_by_id": None,
        "version_number": 1,
        "has_job": True,
    }
    assert await fires(factory) == [
        {
            "workflow_id": workflow_id,
            "fire_at": utc(2026, 6, 1, 7, 0),
            "outcome": "STARTED",
            "run_id": run["id"],
            "missed": 0,
            "error": None,
        }
    ]
    assert await schedule_row(factory, workflow_id) == {
        "schedule_next_fire_at": utc(2026, 6, 2, 7, 0),
        "schedule_last_fired_at": utc(2026, 6, 1, 7, 0),
        "schedule_skipped_count": 0,
    }
    assert (again.fires, again.errors, later.fires, later.errors) == ([], 0, [], 0)
    assert await factory.scalar("SELECT count(*) FROM runs") == 1
    assert await factory.scalar("SELECT count(*) FROM procrastinate_jobs") == 1
    assert fires_total("STARTED") == started_before + 1
    (record,) = [r for r in caplog.records if r.getMessage() == "schedule fired"]
    assert (record.workflow_id, record.fire_at, record.outcome, record.run_id) == (  # type: ignore[attr-defined]
        str(workflow_id),
        "2026-06-01T07:00:00+00:00",
        "STARTED",
        str(run["id"]),
    )


async def test_the_schedule_shows_its_fires_through_graphql(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    workflow_id = await scheduled(
        factory, owner, runtime, cron="0 9 * * *", timezone="Europe/Berlin", now=utc(2026, 6, 1)
    )
    await tick(runtime, now=utc(2026, 6, 1, 7, 0))
    await tick(runtime, now=utc(2026, 6, 2, 7, 0))  # skipped: the first run is still queued

    body = await factory.gql(
        """query($id: ID!) { workflow(id: $id) { schedule {
             nextFireAt lastFiredAt skippedCount
             recentFires { fireAt outcome missed error run { id trigger } }
             one: recentFires(limit: 1) { fireAt } } } }""",
        {"id": gid("Workflow", workflow_id)},
        token=owner.token,
    )

    run_id = await factory.scalar("SELECT id FROM runs")
    assert body == {
        "data": {
            "workflow": {
                "schedule": {
                    "nextFireAt": "2026-06-03T07:00:00+00:00",
                    "lastFiredAt": "2026-06-02T07:00:00+00:00",
                    "skippedCount": 1,
                    "recentFires": [
                        {
                            "fireAt": "2026-06-02T07:00:00+00:00",
                            "outcome": "SKIPPED",
                            "missed": 0,
                            "error": None,
                            "run": None,
                        },
                        {
                            "fireAt": "2026-06-01T07:00:00+00:00",
                            "outcome": "STARTED",
                            "missed": 0,
                            "error": None,
                            "run": {"id": gid("Run", run_id), "trigger": "SCHEDULE"},
                        },
                    ],
                    "one": [{"fireAt": "2026-06-02T07:00:00+00:00"}],
                }
            }
        }
    }


@pytest.mark.parametrize(
    ("late", "catch_up"),
    [(timedelta(0), False), (timedelta(seconds=59), False), (timedelta(minutes=5), True)],
    ids=["on-time", "59s-late", "5min-late"],
)
async def test_a_fire_more_than_a_minute_late_is_a_catch_up(
    factory: Factory, runtime: Runtime, late: timedelta, catch_up: bool
) -> None:
    owner = await factory.owner()
    await scheduled(factory, owner, runtime)

    await tick(runtime, now=utc(2026, 6, 1, 9, 0) + late)

    (run,) = await runs(factory)
    assert run["input"] == schedule_input(
        "2026-06-01T09:00:00+00:00", "2026-06-01T09:00:00+00:00", "UTC", catch_up, 0
    )


async def test_after_three_days_down_a_daily_schedule_fires_once_for_the_latest_time(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    workflow_id = await scheduled(
        factory, owner, runtime, cron="0 9 * * *", timezone="Europe/Berlin", now=utc(2026, 6, 1)
    )
    await tick(runtime, now=utc(2026, 6, 1, 6, 0))  # the last tick before the workers went down

    result = await tick(runtime, now=utc(2026, 6, 4, 6, 0))  # back three days later
    again = await tick(runtime, now=utc(2026, 6, 4, 6, 0, 1))

    (run,) = await runs(factory)
    assert [(f.fire_at, f.outcome, f.missed) for f in result.fires] == [
        (utc(2026, 6, 3, 7, 0), FireOutcome.STARTED, 2)
    ]
    assert run["input"] == schedule_input(
        "2026-06-03T07:00:00+00:00", "2026-06-03T09:00:00+02:00", "Europe/Berlin", True, 2
    )
    assert [(f["fire_at"], f["missed"]) for f in await fires(factory)] == [
        (utc(2026, 6, 3, 7, 0), 2)
    ]
    assert (await schedule_row(factory, workflow_id))["schedule_next_fire_at"] == utc(
        2026, 6, 4, 7, 0
    )
    assert again.fires == []


async def test_a_long_outage_of_a_minutely_schedule_caps_missed(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    await scheduled(factory, owner, runtime, cron="* * * * *", timezone="UTC", now=utc(2026, 6, 1))

    result = await tick(runtime, now=utc(2026, 6, 8, 12, 30, 15))  # a week: 10,830 minutes

    assert [(f.fire_at, f.missed) for f in result.fires] == [(utc(2026, 6, 8, 12, 30), 1000)]


async def test_spring_forward_in_berlin_fires_once_right_after_the_jump(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    start = utc(2026, 3, 28, 20, 0)
    workflow_id = await scheduled(
        factory,
        owner,
        runtime,
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        now=start,
        overlap=ScheduleOverlap.ALLOW,
    )
    async with runtime.sessions() as session:
        shown = upcoming(await session.get_one(Workflow, workflow_id), count=2, now=start)

    made = await tick_every(runtime, start, utc(2026, 3, 30, 3, 0), timedelta(minutes=15))

    # 02:30 does not exist on 29 March (02:00 CET jumps to 03:00 CEST): it fires at 03:00.
    assert [f.fire_at for f in made] == shown == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    assert [r["input"] for r in await runs(factory)] == [
        schedule_input(
            "2026-03-29T01:00:00+00:00", "2026-03-29T03:00:00+02:00", "Europe/Berlin", False, 0
        ),
        schedule_input(
            "2026-03-30T00:30:00+00:00", "2026-03-30T02:30:00+02:00", "Europe/Berlin", False, 0
        ),
    ]


async def test_fall_back_in_new_york_fires_a_fixed_time_once(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    start = utc(2026, 10, 31, 12, 0)
    await scheduled(
        factory,
        owner,
        runtime,
        cron="30 1 * * *",
        timezone="America/New_York",
        now=start,
        overlap=ScheduleOverlap.ALLOW,
    )

    made = await tick_every(runtime, start, utc(2026, 11, 2, 12, 0), timedelta(minutes=15))

    # 01:30 happens twice on 1 November (EDT, then EST): it fires the first time only,
    # at 05:30Z, never at 06:30Z.
    assert [f.fire_at for f in made] == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    assert [
        (r["input"]["scheduledAt"], r["input"]["scheduledAtLocal"]) for r in await runs(factory)
    ] == [
        ("2026-11-01T05:30:00+00:00", "2026-11-01T01:30:00-04:00"),
        ("2026-11-02T06:30:00+00:00", "2026-11-02T01:30:00-05:00"),
    ]


async def test_fall_back_in_new_york_fires_an_interval_in_both_halves(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    start = utc(2026, 11, 1, 4, 10)
    await scheduled(
        factory,
        owner,
        runtime,
        cron="*/30 * * * *",
        timezone="America/New_York",
        now=start,
        overlap=ScheduleOverlap.ALLOW,
    )

    await tick_every(runtime, start, utc(2026, 11, 1, 7, 40), timedelta(minutes=5))

    # Every 30 minutes of real time: the repeated 01:00 and 01:30 are distinct instants.
    assert [r["input"]["scheduledAtLocal"] for r in await runs(factory)] == [
        "2026-11-01T00:30:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T02:30:00-05:00",
    ]


async def test_a_fire_while_the_scheduled_run_is_still_queued_is_skipped(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    workflow_id = await scheduled(factory, owner, runtime)
    manual = await execute(factory, owner, gid("Workflow", workflow_id))  # not a scheduled run
    skipped_before = fires_total("SKIPPED")

    first = await tick(runtime, now=utc(2026, 6, 1, 9, 0))
    second = await tick(runtime, now=utc(2026, 6, 2, 9, 0))
    after_skip = await schedule_row(factory, workflow_id)
    cancelled = await factory.gql(
        "mutation($id: ID!) { runCancel(id: $id) { run { status } } }",
        {"id": gid("Run", first.fires[0].run_id)},  # type: ignore[arg-type]
        token=owner.token,
    )
    third = await tick(runtime, now=utc(2026, 6, 3, 9, 0))

    assert manual["run"]["status"] == "QUEUED"
    assert [f.outcome for f in (*first.fires, *second.fires, *third.fires)] == [
        FireOutcome.STARTED,
        FireOutcome.SKIPPED,
        FireOutcome.STARTED,
    ]
    assert cancelled["data"]["runCancel"]["run"]["status"] == "CANCELLED"
    assert after_skip == {
        "schedule_next_fire_at": utc(2026, 6, 3, 9, 0),
        "schedule_last_fired_at": utc(2026, 6, 2, 9, 0),
        "schedule_skipped_count": 1,
    }
    assert [(f["fire_at"], f["outcome"], f["run_id"] is None) for f in await fires(factory)] == [
        (utc(2026, 6, 1, 9, 0), "STARTED", False),
        (utc(2026, 6, 2, 9, 0), "SKIPPED", True),
        (utc(2026, 6, 3, 9, 0), "STARTED", False),
    ]
    assert [(r["trigger"], r["status"]) for r in await runs(factory)] == [
        ("MANUAL", "QUEUED"),
        ("SCHEDULE", "CANCELLED"),
        ("SCHEDULE", "QUEUED"),
    ]
    assert fires_total("SKIPPED") == skipped_before + 1


async def test_with_overlap_allowed_a_second_run_starts_beside_the_first(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    workflow_id = await scheduled(factory, owner, runtime, overlap=ScheduleOverlap.ALLOW)

    await tick(runtime, now=utc(2026, 6, 1, 9, 0))
    await tick(runtime, now=utc(2026, 6, 2, 9, 0))

    assert [(r["trigger"], r["status"]) for r in await runs(factory)] == [
        ("SCHEDULE", "QUEUED"),
        ("SCHEDULE", "QUEUED"),
    ]
    assert [f["outcome"] for f in await fires(factory)] == ["STARTED", "STARTED"]
    assert (await schedule_row(factory, workflow_id))["schedule_skipped_count"] == 0


async def test_a_version_that_cannot_run_is_a_failed_fire_and_the_schedule_moves_on(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    broken = flow(node("t", "trigger"), node("x", "no.such.type"), handle="out")
    body = await factory.gql(
        """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) { workflow { id } } }""",
        {"i": {"workspaceId": owner.workspace_id, "name": "Half-drawn", "graph": broken}},
        token=owner.token,
    )
    workflow_gid = body["data"]["workflowCreate"]["workflow"]["id"]
    # workflowPublish refuses such a version; one published before today's rules refused it
    # (its node type gone since, say) is set up in SQL.
    await factory.execute(
        "UPDATE workflows SET published_version = 1 WHERE id = :id",
        id=decode_id("Workflow", workflow_gid),
    )
    await set_schedule_at(
        runtime,
        owner,
        decode_id("Workflow", workflow_gid),
        utc(2026, 6, 1),
        cron="0 9 * * *",
        timezone="UTC",
        enabled=True,
    )
    failed_before = fires_total("FAILED")

    failed = await tick(runtime, now=utc(2026, 6, 1, 9, 0))
    saved = await factory.gql(
        """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }""",
        {"i": {"workflowId": workflow_gid, "graph": GRAPH, "baseVersion": 1}},
        token=owner.token,
    )
    published = await publish(factory, owner, workflow_gid, 2)
    fixed = await tick(runtime, now=utc(2026, 6, 2, 9, 0))

    message = (
        'Version 1 cannot run: Node "x" has type "no.such.type", which is not a known node type.'
    )
    assert [(f.outcome, f.run_id, f.error) for f in failed.fires] == [
        (FireOutcome.FAILED, None, message)
    ]
    assert failed.errors == 0
    assert saved["data"]["workflowSave"]["userErrors"] == []
    assert published["userErrors"] == []
    assert [(f.outcome, f.error) for f in fixed.fires] == [(FireOutcome.STARTED, None)]
    assert [(f["fire_at"], f["outcome"], f["error"]) for f in await fires(factory)] == [
        (utc(2026, 6, 1, 9, 0), "FAILED", message),
        (utc(2026, 6, 2, 9, 0), "STARTED", None),
    ]
    assert [(r["version_number"], r["input"]["scheduledAt"]) for r in await runs(factory)] == [
        (2, "2026-06-02T09:00:00+00:00")
    ]
    assert await factory.scalar("SELECT count(*) FROM procrastinate_jobs") == 1
    assert fires_total("FAILED") == failed_before + 1


async def test_a_schedule_input_the_trigger_refuses_is_a_failed_fire_not_a_run_nor_a_loop(
    factory: Factory, runtime: Runtime
) -> None:
    # Given a published workflow whose trigger wants an orderId, which no schedule input has
    owner = await factory.owner()
    wants_order = flow(
        node("t", "trigger", inputSchema={"type": "object", "required": ["orderId"]}),
        node("out", "output", value="{{ trigger.orderId }}"),
        handle="out",
    )
    workflow_id = await scheduled(factory, owner, runtime, graph=wants_order)
    failed_before = fires_total("FAILED")

    # When its schedule comes due, and the tick runs again at the same time and the next day
    first = await tick(runtime, now=utc(2026, 6, 1, 9, 0))
    again = await tick(runtime, now=utc(2026, 6, 1, 9, 0, 30))
    next_day = await tick(runtime, now=utc(2026, 6, 2, 9, 0))

    # Then each fire time is one FAILED fire saying why; no run, step, event or job was
    # written, and the schedule moved on (the same time is not fired again)
    message = (
        "The run input does not match the trigger's input schema at $: "
        "'orderId' is a required property"
    )
    assert [(f.outcome, f.run_id, f.error) for f in first.fires] == [
        (FireOutcome.FAILED, None, message)
    ]
    assert again.fires == []
    assert [(f.outcome, f.error) for f in next_day.fires] == [(FireOutcome.FAILED, message)]
    assert first.errors == again.errors == next_day.errors == 0
    assert [
        (f["fire_at"], f["outcome"], f["run_id"], f["error"]) for f in await fires(factory)
    ] == [
        (utc(2026, 6, 1, 9, 0), "FAILED", None, message),
        (utc(2026, 6, 2, 9, 0), "FAILED", None, message),
    ]
    for table in ("runs", "run_steps", "run_events", "procrastinate_jobs"):
        assert await factory.scalar(f"SELECT count(*) FROM {table}") == 0, table
    assert (await schedule_row(factory, workflow_id))["schedule_next_fire_at"] == utc(
        2026, 6, 3, 9, 0
    )
    assert fires_total("FAILED") == failed_before + 2


async def test_a_deleted_workflows_schedule_is_gone(factory: Factory, runtime: Runtime) -> None:
    owner = await factory.owner()
    workflow_id = await scheduled(factory, owner, runtime)
    await tick(runtime, now=utc(2026, 6, 1, 9, 0))

    deleted = await factory.gql(
        "mutation($id: ID!) { workflowDelete(id: $id) { deletedId } }",
        {"id": gid("Workflow", workflow_id)},
        token=owner.token,
    )
    result = await tick(runtime, now=utc(2026, 6, 2, 9, 0))

    assert deleted["data"]["workflowDelete"]["deletedId"] == gid("Workflow", workflow_id)
    assert (result.fires, result.errors) == ([], 0)
    assert await fires(factory) == []
    assert await runs(factory) == []


async def test_one_broken_schedule_does_not_stop_the_others(
    factory: Factory, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await factory.owner()
    broken = await scheduled(factory, owner, runtime, name="A")
    healthy = await scheduled(factory, owner, runtime, name="B")
    # A zone the tz database no longer has (the API cannot store one).
    await factory.execute(
        "UPDATE workflows SET schedule_timezone = 'Mars/Olympus' WHERE id = :id", id=broken
    )

    with caplog.at_level(logging.ERROR, logger="app.worker.schedules"):
        result = await tick(runtime, now=utc(2026, 6, 1, 9, 0))

    assert result.errors == 1
    assert [(f.workflow_id, f.outcome) for f in result.fires] == [(healthy, FireOutcome.STARTED)]
    assert [f["workflow_id"] for f in await fires(factory)] == [healthy]
    assert [(r.getMessage(), r.workflow_id) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("schedule fire failed", str(broken))
    ]


async def test_two_ticks_at_once_in_one_process_fire_each_schedule_once(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    ids = [await scheduled(factory, owner, runtime, name=f"Flow {n}") for n in range(10)]

    results = await asyncio.gather(*(tick(runtime, now=utc(2026, 6, 1, 9, 0)) for _ in range(2)))

    made = sorted(str(f.workflow_id) for result in results for f in result.fires)
    assert made == sorted(str(i) for i in ids)
    assert sorted(str(r["workflow_id"]) for r in await runs(factory)) == made
    assert len(await fires(factory)) == 10


async def test_the_fire_insert_path_twice_at_once_makes_one_run(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.owner()
    workflow_id = await scheduled(factory, owner, runtime)
    both_loaded = asyncio.Barrier(2)

    async def fire_without_the_row_lock() -> Fired | None:
        async with runtime.sessions() as session, session.begin():
            workflow = await session.get_one(Workflow, workflow_id)
            await both_loaded.wait()  # both saw it due; only the unique constraint decides
            return await fire_schedule(
                session,
                queue=runtime.queue,
                policy=runtime.graph_policy,
                max_input_bytes=runtime.settings.max_run_input_bytes,
                workflow=workflow,
                now=utc(2026, 6, 1, 9, 0),
            )

    results = await asyncio.gather(fire_without_the_row_lock(), fire_without_the_row_lock())

    (run,) = await runs(factory)
    assert sorted(results, key=lambda r: r is not None) == [
        None,
        Fired(workflow_id, utc(2026, 6, 1, 9, 0), FireOutcome.STARTED, run["id"], 0, None),
    ]
    assert [(f["outcome"], f["run_id"]) for f in await fires(factory)] == [("STARTED", run["id"])]
    assert await factory.scalar("SELECT count(*) FROM procrastinate_jobs") == 1
    assert (await schedule_row(factory, workflow_id))["schedule_next_fire_at"] == utc(
        2026, 6, 2, 9, 0
    )


# A worker process that ticks once, at a fixed time, when told to go.
RACER = """
import asyncio, json, sys
from datetime import datetime
from app.db import create_engine
from app.runtime import Runtime
from app.settings import Settings
from app.worker.schedules import tick

async def main(url: str, now: str) -> None:
    settings = Settings(database_url=url)
    engine = create_engine(url, settings)
    runtime = Runtime.build(settings, engine, url)
    async with runtime.opened():
        async with engine.connect():
            pass
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        result = await tick(runtime, now=datetime.fromisoformat(now))
    await engine.dispose()
    fired = [[str(f.workflow_id), f.outcome.value] for f in result.fires]
    print(json.dumps({"fires": fired, "errors": result.errors}), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_two_worker_processes_ticking_at_the_same_time_fire_each_schedule_once(
    factory: Factory, runtime: Runtime, database_url: str
) -> None:
    owner = await factory.owner()
    ids = [await scheduled(factory, owner, runtime, name=f"Flow {n}") for n in range(20)]
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RACER,
            database_url,
            "2026-06-01T09:00:00+00:00",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"

    for process in processes:  # both released at once
        assert process.stdin is not None
        process.stdin.write(b"go\n")
    outputs = [await asyncio.wait_for(p.communicate(), 60) for p in processes]

    reports = [json.loads(out) for out, _ in outputs]
    made = sorted(wid for report in reports for wid, _ in report["fires"])
    assert [p.returncode for p in processes] == [0, 0]
    assert [report["errors"] for report in reports] == [0, 0]
    assert made == sorted(str(i) for i in ids)  # each once, whichever process fired it
    assert sorted(str(f["workflow_id"]) for f in await fires(factory)) == made
    assert sorted(str(r["workflow_id"]) for r in await runs(factory)) == made


async def test_a_worker_runs_a_scheduled_run_to_the_end(
    factory: Factory, runtime: Runtime, worker: None
) -> None:
    owner = await factory.owner()
    # Yearly: the worker's own tick (on the real clock) has nothing to fire during the test.
    workflow_id = await scheduled(
        factory, owner, runtime, cron="0 0 1 1 *", timezone="Europe/Berlin", now=datetime.now(UTC)
    )
    due = (await schedule_row(factory, workflow_id))["schedule_next_fire_at"]

    result = await tick(runtime, now=due)
    run = await wait_for(factory, owner, gid("Run", result.fires[0].run_id))  # type: ignore[arg-type]

    new_year = datetime(due.astimezone(BERLIN).year, 1, 1, tzinfo=BERLIN)
    assert run["status"] == "SUCCEEDED", run
    assert run["trigger"] == "SCHEDULE"
    assert run["output"] == new_year.isoformat()
    assert run["input"]["scheduledAt"] == new_year.astimezone(UTC).isoformat()


async def test_the_workers_schedule_loop_fires_a_due_schedule(
    factory: Factory, runtime: Runtime, worker: None
) -> None:
    owner = await factory.owner()
    workflow_id = await scheduled(
        factory, owner, runtime, cron="0 0 1 1 *", timezone="Europe/Berlin", now=datetime.now(UTC)
    )
    # The time has come: this year's New Year in Berlin is due (a state only the clock makes).
    new_year = datetime(datetime.now(BERLIN).year, 1, 1, tzinfo=BERLIN)
    await factory.execute(
        "UPDATE workflows SET schedule_next_fire_at = :at WHERE id = :id",
        at=new_year,
        id=workflow_id,
    )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while await factory.scalar("SELECT count(*) FROM runs") == 0:
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    run = await wait_for(factory, owner, gid("Run", await factory.scalar("SELECT id FROM runs")))

    assert run["status"] == "SUCCEEDED", run
    assert run["input"] == schedule_input(
        new_year.astimezone(UTC).isoformat(), new_year.isoformat(), "Europe/Berlin", True, 0
    )
    assert [(f["fire_at"], f["outcome"]) for f in await fires(factory)] == [(new_year, "STARTED")]
    assert (await schedule_row(factory, workflow_id))["schedule_next_fire_at"] == new_year.replace(
        year=new_year.year + 1
    )


async def test_the_schedule_loop_outlives_database_errors_logs_the_outage_once_and_stops_when_cancelled(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # A "database" that accepts each connection and hangs up at once, counting them
    attempts = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/nowhere"
    quick = settings.model_copy(update={"schedule_tick_seconds": 0.05})
    engine = create_engine(url, quick)
    runtime = Runtime.build(quick, engine, url)
    watch = DatabaseWatch()

    with caplog.at_level(logging.INFO):
        task = asyncio.create_task(schedule_loop(runtime, watch=watch))
        await asyncio.sleep(1.5)
        still_running = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await engine.dispose()
    server.close()

    assert still_running
    assert task.cancelled()
    assert attempts >= 3  # it kept trying, backing off (a tick every 0.05 s would be ~30)
    assert attempts <= 12
    # One line for the outage, with the error's class and no driver text; none per failure
    shown = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.getMessage(), r.error_class) for r in shown] == [  # type: ignore[attr-defined]
        ("app.outage", "database unreachable", "OperationalError")
    ]
    assert shown[0].exc_info is None
    assert watch.reachable is False


async def test_a_late_fire_observes_how_late_it_was(factory: Factory, runtime: Runtime) -> None:
    owner = await factory.owner()
    await scheduled(factory, owner, runtime, cron="0 9 * * *", now=utc(2026, 6, 1))
    count = REGISTRY.get_sample_value("flowdeck_schedule_lag_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("flowdeck_schedule_lag_seconds_sum") or 0.0
    within_10 = REGISTRY.get_sample_value("flowdeck_schedule_lag_seconds_bucket", {"le": "10.0"})
    within_5 = REGISTRY.get_sample_value("flowdeck_schedule_lag_seconds_bucket", {"le": "5.0"})

    result = await tick(runtime, now=utc(2026, 6, 1, 9, 0, 7, 500000))

    assert [fired.outcome for fired in result.fires] == [FireOutcome.STARTED]
    assert REGISTRY.get_sample_value("flowdeck_schedule_lag_seconds_count") == count + 1
    assert REGISTRY.get_sample_value("flowdeck_schedule_lag_seconds_sum") == total + 7.5
    assert (
        REGISTRY.get_sample_value("flowdeck_schedule_lag_seconds_bucket", {"le": "10.0"})
        == (within_10 or 0.0) + 1
    )
    assert REGISTRY.get_sample_value("flowdeck_schedule_lag_seconds_bucket", {"le": "5.0"}) == (
        within_5 or 0.0
    )
