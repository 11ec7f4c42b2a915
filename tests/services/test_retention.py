"""Run retention: expired finished runs go with their steps and events; open runs stay."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from starlette.applications import Starlette

from app.services.retention import prune_runs
from app.worker.retention import retention_loop
from schema.ids import decode_id
from tests.factories import Account, Factory
from tests.runs import create_workflow, edge, node

GRAPH = {
    "nodes": [node("start", "trigger"), node("out", "output", value="{{ input }}")],
    "edges": [edge("start", "out")],
}
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def pruned_total() -> float:
    return REGISTRY.get_sample_value("flowdeck_runs_pruned_total") or 0.0


async def old_run(
    factory: Factory,
    workflow_id: str,
    *,
    days: float,
    status: str,
    retry_of: uuid.UUID | None = None,
) -> uuid.UUID:
    """A run queued ``days`` before NOW (ended a minute later unless open), with a step and
    two events."""
    run_id = uuid.uuid4()
    queued = NOW - timedelta(days=days)
    finished = (
        queued + timedelta(minutes=1) if status in ("SUCCEEDED", "FAILED", "CANCELLED") else None
    )
    await factory.execute(
        "INSERT INTO runs (id, workspace_id, workflow_id, version_id, version_number, status, "
        "trigger, input_hash, queued_at, finished_at, retry_of_id, last_event_seq) "
        "SELECT :id, w.workspace_id, w.id, v.id, 1, CAST(:status AS varchar), 'MANUAL', '', "
        ":queued, :finished, :retry_of, 2 "
        "FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id WHERE w.id = :wf",
        id=run_id,
        status=status,
        queued=queued,
        finished=finished,
        retry_of=retry_of,
        wf=decode_id("Workflow", workflow_id),
    )
    await factory.execute(
        "INSERT INTO run_steps (id, workspace_id, run_id, node_id, node_type, position, status) "
        "SELECT gen_random_uuid(), workspace_id, id, 'out', 'output', 0, 'SUCCEEDED' FROM runs "
        "WHERE id = :id",
        id=run_id,
    )
    await factory.execute(
        "INSERT INTO run_events (run_id, seq, workspace_id, workflow_id, type) "
        "SELECT id, s, workspace_id, workflow_id, 'RUN_QUEUED' FROM runs, generate_series(1, 2) s "
        "WHERE id = :id",
        id=run_id,
    )
    return run_id


async def retention(factory: Factory, account: Account, days: int) -> None:
    await factory.execute(
        "UPDATE workspaces SET run_retention_days = :days WHERE id = :id",
        days=days,
        id=account.workspace.id,
    )


async def test_expired_finished_runs_go_with_their_steps_and_events(
    factory: Factory, app: Starlette
) -> None:
    # Given one workspace keeping 30 days and another keeping 7
    keeper = await factory.owner("Keeper")
    brief = await factory.owner("Brief")
    await retention(factory, keeper, 30)
    await retention(factory, brief, 7)
    kept_flow = await create_workflow(factory, keeper, GRAPH)
    brief_flow = await create_workflow(factory, brief, GRAPH)
    expired = [
        await old_run(factory, kept_flow, days=40, status="SUCCEEDED"),
        await old_run(factory, kept_flow, days=31, status="FAILED"),
        await old_run(factory, brief_flow, days=8, status="CANCELLED"),
        await old_run(factory, brief_flow, days=9, status="SUCCEEDED"),
        await old_run(factory, brief_flow, days=10, status="FAILED"),
    ]
    retry = await old_run(factory, brief_flow, days=1, status="SUCCEEDED", retry_of=expired[3])
    stays = [
        await old_run(factory, kept_flow, days=29, status="SUCCEEDED"),
        await old_run(factory, kept_flow, days=400, status="RUNNING"),  # open: never pruned
        await old_run(factory, brief_flow, days=300, status="QUEUED"),
        await old_run(factory, brief_flow, days=6, status="FAILED"),
        retry,
    ]
    await factory.execute(
        "INSERT INTO schedule_fires (id, workspace_id, workflow_id, fire_at, outcome, run_id) "
        "SELECT gen_random_uuid(), workspace_id, workflow_id, queued_at, 'STARTED', id FROM runs "
        "WHERE id = :id",
        id=expired[2],
    )
    counted = pruned_total()

    # When the runs are pruned in batches of two
    pruned = await prune_runs(app.state.runtime.sessions, now=NOW, batch_size=2)

    # Then exactly the expired finished runs are gone, with their steps and events
    assert pruned == 5
    assert pruned_total() == counted + 5
    remaining = {row["id"] for row in await factory.rows("SELECT id FROM runs")}
    assert remaining == set(stays)
    assert await factory.scalar("SELECT count(*) FROM run_steps") == len(stays)
    assert await factory.scalar("SELECT count(*) FROM run_events") == 2 * len(stays)
    # A fire and a retry that pointed at a pruned run keep a null
    assert await factory.rows("SELECT outcome, run_id FROM schedule_fires") == [
        {"outcome": "STARTED", "run_id": None}
    ]
    assert await factory.scalar("SELECT retry_of_id FROM runs WHERE id = :id", id=retry) is None
    # And a second pass has nothing to do
    assert await prune_runs(app.state.runtime.sessions, now=NOW, batch_size=2) == 0


async def test_the_workers_loop_prunes(factory: Factory, app: Starlette) -> None:
    owner = await factory.owner()
    await retention(factory, owner, 1)
    workflow_id = await create_workflow(factory, owner, GRAPH)
    # Queued and ended three days before the real now
    days = (NOW - datetime.now(UTC)).total_seconds() / 86400 + 3
    await old_run(factory, workflow_id, days=days, status="SUCCEEDED")

    loop = asyncio.create_task(retention_loop(app.state.runtime))
    try:
        for _ in range(200):
            if await factory.scalar("SELECT count(*) FROM runs") == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    assert await factory.scalar("SELECT count(*) FROM runs") == 0
