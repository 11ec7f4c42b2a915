"""workspace.runs: every workflow's runs, newest first, filtered, paged by keyset, index-backed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Role, RunStatus, RunTrigger
from app.services.run_search import RunFilter, page_query
from schema.ids import decode_id
from tests.factories import Account, Factory, gid
from tests.runs import create_workflow, edge, node

RUNS = """query($ws: ID!, $first: Int!, $after: String, $filter: RunFilter) {
  workspace(id: $ws) { runs(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id status trigger queuedAt finishedAt durationMs error
      workflow { id name } version { number } } } } } }"""
GRAPH = {
    "nodes": [node("start", "trigger"), node("out", "output", value="{{ input }}")],
    "edges": [edge("start", "out")],
}
BASE = datetime(2026, 3, 1, tzinfo=UTC)


async def seed_runs(
    factory: Factory, workflow_id: str, specs: list[tuple[int, str, str]]
) -> list[str]:
    """Runs of a workflow at BASE + minutes, with a status and trigger each; their ids."""
    key = decode_id("Workflow", workflow_id)
    ids = []
    for minutes, status, trigger in specs:
        run_id = uuid.uuid4()
        await factory.execute(
            "INSERT INTO runs (id, workspace_id, workflow_id, version_id, version_number, status, "
            "trigger, input_hash, queued_at, started_at, finished_at) "
            "SELECT :id, w.workspace_id, w.id, v.id, 1, CAST(:status AS varchar), :trigger, '', "
            "CAST(:at AS timestamptz), CAST(:at AS timestamptz), "
            "CASE WHEN CAST(:status AS varchar) IN ('SUCCEEDED', 'FAILED', 'CANCELLED') "
            "THEN CAST(:at AS timestamptz) + interval '2 seconds' END "
            "FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id AND v.number = 1 "
            "WHERE w.id = :wf",
            id=run_id,
            status=status,
            trigger=trigger,
            at=BASE + timedelta(minutes=minutes),
            wf=key,
        )
        ids.append(gid("Run", run_id))
    return ids


async def page(factory: Factory, account: Account, **variables: Any) -> dict[str, Any]:
    body = await factory.gql(
        RUNS, {"ws": account.workspace_id, "first": 20, **variables}, token=account.token
    )
    assert "errors" not in body, body
    return body["data"]["workspace"]["runs"]


def ids_of(found: dict[str, Any]) -> list[str]:
    return [e["node"]["id"] for e in found["edges"]]


async def test_runs_of_every_workflow_newest_first_with_filters(factory: Factory) -> None:
    owner = await factory.owner()
    viewer = await factory.member(owner, Role.VIEWER)
    stranger = await factory.owner("Elsewhere")
    one = await create_workflow(factory, owner, GRAPH, "One")
    two = await create_workflow(factory, owner, GRAPH, "Two")
    theirs = await create_workflow(factory, stranger, GRAPH, "Theirs")
    a = await seed_runs(
        factory,
        one,
        [(1, "SUCCEEDED", "MANUAL"), (3, "FAILED", "WEBHOOK"), (5, "QUEUED", "SCHEDULE")],
    )
    b = await seed_runs(factory, two, [(2, "FAILED", "MANUAL"), (4, "SUCCEEDED", "WEBHOOK")])
    await seed_runs(factory, theirs, [(6, "FAILED", "MANUAL")])

    everything = await page(factory, viewer)
    failed = await page(factory, viewer, filter={"status": "FAILED"})
    of_two = await page(factory, viewer, filter={"workflowId": two})
    hooks = await page(factory, viewer, filter={"trigger": "WEBHOOK"})
    window = await page(
        factory,
        viewer,
        filter={
            "from": (BASE + timedelta(minutes=2)).isoformat(),
            "to": (BASE + timedelta(minutes=4)).isoformat(),
        },
    )
    all_at_once = await page(
        factory,
        viewer,
        filter={
            "status": "SUCCEEDED",
            "trigger": "WEBHOOK",
            "workflowId": two,
            "from": BASE.isoformat(),
        },
    )

    assert ids_of(everything) == [a[2], b[1], a[1], b[0], a[0]]
    assert everything["totalCount"] == 5
    first = everything["edges"][-1]["node"]
    assert first == {
        "id": a[0],
        "status": "SUCCEEDED",
        "trigger": "MANUAL",
        "queuedAt": (BASE + timedelta(minutes=1)).isoformat(),
        "finishedAt": (BASE + timedelta(minutes=1, seconds=2)).isoformat(),
        "durationMs": 2000,
        "error": None,
        "workflow": {"id": one, "name": "One"},
        "version": {"number": 1},
    }
    assert (ids_of(failed), failed["totalCount"]) == ([a[1], b[0]], 2)
    assert ids_of(of_two) == [b[1], b[0]]
    assert ids_of(hooks) == [b[1], a[1]]
    assert ids_of(window) == [a[1], b[0]]  # from inclusive, to exclusive
    assert ids_of(all_at_once) == [b[1]]


async def test_pages_walk_the_list_without_gap_or_repeat(factory: Factory) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH)
    # Ten runs, four of them queued at the same instant (the id breaks the tie)
    expected = list(
        reversed(
            await seed_runs(
                factory,
                workflow_id,
                [(m, "SUCCEEDED", "MANUAL") for m in (1, 2, 2, 2, 2, 3, 4, 5, 6, 7)],
            )
        )
    )
    seen: list[str] = []
    after = None
    while True:
        found = await page(factory, owner, first=3, after=after)
        seen += ids_of(found)
        if not found["pageInfo"]["hasNextPage"]:
            break
        after = found["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen)) == 10
    queued = [
        await factory.scalar("SELECT queued_at FROM runs WHERE id = :id", id=decode_id("Run", r))
        for r in seen
    ]
    assert queued == sorted(queued, reverse=True)


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"first": 101}, ["first"]),
        ({"first": -1}, ["first"]),
        ({"after": "garbage"}, ["after"]),
        ({"after": "W1siMjAyNiJdXQ"}, ["after"]),
        ({"after": "x" * 100_000}, ["after"]),
        ({"filter": {"from": "2026-01-01T00:00:00"}}, ["filter", "from"]),
        ({"filter": {"to": "2026-01-01T00:00:00"}}, ["filter", "to"]),
        (
            {"filter": {"from": "2026-01-02T00:00:00+00:00", "to": "2026-01-02T00:00:00+00:00"}},
            ["filter", "to"],
        ),
    ],
)
async def test_wrong_arguments_are_refused(
    factory: Factory, variables: dict[str, Any], field: list[str]
) -> None:
    owner = await factory.owner()
    body = await factory.gql(
        RUNS, {"ws": owner.workspace_id, "first": 20, **variables}, token=owner.token
    )
    assert body["data"] == {"workspace": None}
    (error,) = body["errors"]
    assert (
        error["extensions"]["code"],
        error["extensions"]["reason"],
        error["extensions"]["field"],
    ) == (
        "BAD_USER_INPUT",
        "INVALID",
        field,
    )


async def test_another_workspaces_workflow_and_the_workspace_itself_read_as_not_found(
    factory: Factory,
) -> None:
    owner = await factory.owner()
    stranger = await factory.owner("Elsewhere")
    theirs = await create_workflow(factory, stranger, GRAPH)
    for variables, token in (
        ({"ws": owner.workspace_id, "filter": {"workflowId": theirs}}, owner.token),
        ({"ws": owner.workspace_id, "filter": {"workflowId": "W" * 10_000}}, owner.token),
        (
            {"ws": owner.workspace_id, "filter": {"workflowId": gid("Run", uuid.uuid4())}},
            owner.token,
        ),
        ({"ws": owner.workspace_id}, stranger.token),
    ):
        body = await factory.gql(RUNS, {"first": 5, **variables}, token=token)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]


async def test_every_filter_is_an_index_scan_without_a_sort(
    factory: Factory, engine: AsyncEngine
) -> None:
    # Given a workspace of 3,000 runs of three workflows beside one of 100,000 (planner
    # statistics up to date): a small workspace's workflow is where a planner that multiplies
    # the workflow's and the workspace's selectivities expects a few rows, and sorts
    owner = await factory.owner()
    small = [
        decode_id("Workflow", await create_workflow(factory, owner, GRAPH, name))
        for name in ("One", "Two", "Three")
    ]
    other = await factory.owner("Other")
    large = [decode_id("Workflow", await create_workflow(factory, other, GRAPH))]
    workflow_id = small[0]
    for workflows, count in ((small, 3_000), (large, 100_000)):
        await factory.execute(
            "INSERT INTO runs (id, workspace_id, workflow_id, version_id, version_number, status, "
            "trigger, input_hash, queued_at) "
            "SELECT gen_random_uuid(), w.workspace_id, w.id, v.id, 1, "
            "(ARRAY['SUCCEEDED','FAILED','CANCELLED','QUEUED','RUNNING'])[1 + i % 5], "
            "(ARRAY['MANUAL','SCHEDULE','WEBHOOK','RETRY'])[1 + i % 4], '', "
            "now() - i * interval '1 second' "
            "FROM generate_series(1, :count) AS i "
            "JOIN workflows w ON w.id = (CAST(:wfs AS uuid[]))[1 + i % :n] "
            "JOIN workflow_versions v ON v.workflow_id = w.id",
            wfs=[str(w) for w in workflows],
            n=len(workflows),
            count=count,
        )
    await factory.execute("ANALYZE runs")
    workspace_id = owner.workspace.id
    cursor = (datetime.now(UTC) - timedelta(hours=1), uuid.uuid4())
    filters = [
        RunFilter(),
        RunFilter(status=RunStatus.FAILED),
        RunFilter(trigger=RunTrigger.WEBHOOK),
        RunFilter(workflow_id=workflow_id),
        RunFilter(since=BASE, until=datetime.now(UTC)),
        RunFilter(status=RunStatus.FAILED, trigger=RunTrigger.WEBHOOK),
    ]
    for where in filters:
        for after in (None, cursor):
            statement = page_query(workspace_id, where, after, 21).compile(
                dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
            )
            async with engine.connect() as conn:
                plan = (
                    await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}")
                ).scalar_one()
            text = json.dumps(plan)
            # Then the plan reads an index in order: no sequential scan, no sort
            assert "Seq Scan" not in text, (where, after, text)
            assert '"Sort"' not in text, (where, after, text)
            assert "Index" in text, (where, after, text)
