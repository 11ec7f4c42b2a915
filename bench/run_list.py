"""The workspace run list at 10,000 and 1,000,000 runs: ``python -m bench.run_list``.

Runs are generated in SQL (generate_series) on a scratch database: one workspace per size,
each with three workflows, every status and trigger, one run a second going back in time.
Each page is asked through the real GraphQL app (in-process ASGI, one client, sequential) of
both workspaces in turn, so a busy machine slows both sizes alike, beside the floor: the same
statement by plain psycopg. ``--explain`` prints each page's EXPLAIN (ANALYZE, BUFFERS).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import Dialect

from app.auth.principal import Principal
from app.db import create_engine, session_factory, with_database
from app.keyring import generate_key
from app.main import create_app
from app.migrate import migrate
from app.models import RunStatus, RunTrigger
from app.services.api_tokens import create_api_token
from app.services.graphs import GraphPolicy
from app.services.run_search import RunFilter, page_query
from app.services.users import get_or_create_user
from app.services.workflows import create_workflow
from app.services.workspaces import create_workspace
from app.settings import Settings
from bench.measure import Result
from bench.runs import THREE_NODES
from bench.suite import report, server_url
from schema.ids import encode_id

SIZES = (10_000, 1_000_000)
PAGE = 50
RUNS = """query($ws: ID!, $first: Int!, $after: String, $filter: RunFilter) {
  workspace(id: $ws) { runs(first: $first, after: $after, filter: $filter) {
    pageInfo { hasNextPage endCursor }
    edges { node { id status trigger queuedAt finishedAt durationMs error
      workflow { id name } version { number } } } } } }"""
GENERATE = """
INSERT INTO runs (id, workspace_id, workflow_id, version_id, version_number, status, trigger,
                  input_hash, queued_at, started_at, finished_at, error)
SELECT gen_random_uuid(), %(ws)s, (%(workflows)s::uuid[])[1 + i %% 3],
       (%(versions)s::uuid[])[1 + i %% 3], 1,
       (ARRAY['SUCCEEDED','SUCCEEDED','SUCCEEDED','FAILED','CANCELLED'])[1 + i %% 5],
       (ARRAY['MANUAL','SCHEDULE','WEBHOOK','WEBHOOK','RETRY'])[1 + (i / 5) %% 5], '',
       now() - i * interval '1 second', now() - i * interval '1 second',
       now() - i * interval '1 second' + interval '2 seconds',
       CASE WHEN i %% 5 = 3 THEN 'Node "out" (output) failed: boom' END
FROM generate_series(%(start)s::int, %(stop)s::int) AS i
"""


async def _setup(
    url: str, settings: Settings
) -> tuple[Any, str, list[tuple[uuid.UUID, list[uuid.UUID]]]]:
    """A user, its token, and one workspace of three workflows per size."""
    engine = create_engine(url, settings)
    await migrate(engine)
    sessions = session_factory(engine)
    policy = GraphPolicy.from_settings(settings)
    workspaces = []
    async with sessions() as session:
        user = await get_or_create_user(session, email="bench@flowdeck.localhost")
        principal = Principal(user=user)
        for size in SIZES:
            workspace = await create_workspace(session, principal=principal, name=f"{size:,} runs")
            workflows = []
            for name in ("Alpha", "Beta", "Gamma"):
                workflow, _ = await create_workflow(
                    session,
                    principal=principal,
                    workspace_id=workspace.id,
                    name=name,
                    description=None,
                    graph=THREE_NODES,
                    policy=policy,
                )
                workflows.append(workflow.id)
            workspaces.append((workspace.id, workflows))
        token = (await create_api_token(session, user=user, name="bench", expires_at=None)).token
        await session.commit()
    return engine, token, workspaces


def _grow(url: str, workspace_id: uuid.UUID, want: int) -> None:
    """Give a workspace runs 1 .. ``want`` seconds old, in chunks, then ANALYZE."""
    with psycopg.connect(url, autocommit=True) as conn:
        pairs = conn.execute(
            "SELECT w.id, v.id FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id "
            "WHERE w.workspace_id = %s ORDER BY w.name",
            (workspace_id,),
        ).fetchall()
        ids = {"workflows": [p[0] for p in pairs], "versions": [p[1] for p in pairs]}
        for start in range(1, want + 1, 100_000):
            stop = min(start + 99_999, want)
            conn.execute(GENERATE, {"start": start, "stop": stop, "ws": workspace_id, **ids})
        conn.execute("VACUUM ANALYZE runs")


def _pages(
    workflows: list[uuid.UUID], deep_cursor: tuple[Any, uuid.UUID]
) -> list[tuple[str, RunFilter, Any]]:
    return [
        ("newest", RunFilter(), None),
        ("deep page (90%)", RunFilter(), deep_cursor),
        ("status FAILED", RunFilter(status=RunStatus.FAILED), None),
        ("trigger RETRY", RunFilter(trigger=RunTrigger.RETRY), None),
        ("one workflow", RunFilter(workflow_id=workflows[1]), None),
        (
            "FAILED + WEBHOOK",
            RunFilter(status=RunStatus.FAILED, trigger=RunTrigger.WEBHOOK),
            None,
        ),
    ]


def _variables(workspace_id: uuid.UUID, where: RunFilter, cursor: str | None) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if where.status is not None:
        given["status"] = where.status.value
    if where.trigger is not None:
        given["trigger"] = where.trigger.value
    if where.workflow_id is not None:
        given["workflowId"] = encode_id("Workflow", where.workflow_id)
    return {
        "ws": encode_id("Workspace", workspace_id),
        "first": PAGE,
        "after": cursor,
        "filter": given or None,
    }


def _cursor(key: tuple[Any, uuid.UUID]) -> str:
    from app.services.pagination import encode_cursor

    return encode_cursor([key[0].isoformat(), str(key[1])])


def _sql(dialect: Dialect, workspace_id: uuid.UUID, where: RunFilter, after: Any) -> str:
    statement = page_query(workspace_id, where, after, PAGE + 1)
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _deep_cursor(url: str, workspace_id: uuid.UUID, size: int) -> tuple[Any, uuid.UUID]:
    """The sort key 90% down the workspace's runs."""
    with psycopg.connect(url) as conn:
        deep = conn.execute(
            "SELECT queued_at, id FROM runs WHERE workspace_id = %s "
            "ORDER BY queued_at DESC, id DESC OFFSET %s LIMIT 1",
            (workspace_id, size * 9 // 10),
        ).fetchone()
    assert deep is not None
    return deep[0], deep[1]


async def _interleaved(
    names: list[str], count: int, operations: list[Callable[[], Awaitable[None]]]
) -> list[Result]:
    """Each operation ``count`` times after a warm-up, taking turns, each call timed."""
    for _ in range(max(5, count // 10)):
        for operation in operations:
            await operation()
    samples: list[list[float]] = [[] for _ in operations]
    for _ in range(count):
        for operation, times in zip(operations, samples, strict=True):
            started = time.perf_counter()
            await operation()
            times.append(time.perf_counter() - started)
    return [Result(name, times) for name, times in zip(names, samples, strict=True)]


async def _measure(
    url: str,
    app: Any,
    token: str,
    workspaces: list[tuple[uuid.UUID, list[uuid.UUID]]],
    count: int,
    explain: bool,
) -> list[tuple[Result, Result | None]]:
    deep = [_deep_cursor(url, ws, size) for (ws, _), size in zip(workspaces, SIZES, strict=True)]
    scenarios = [
        _pages(workflows, cursor) for (_, workflows), cursor in zip(workspaces, deep, strict=True)
    ]
    rows: list[tuple[Result, Result | None]] = []
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        conn = await stack.enter_async_context(await psycopg.AsyncConnection.connect(url))
        for index in range(len(scenarios[0])):
            operations: list[Callable[[], Awaitable[None]]] = []
            floors: list[Callable[[], Awaitable[None]]] = []
            names: list[str] = []
            for (workspace_id, _), size, pages in zip(workspaces, SIZES, scenarios, strict=True):
                name, where, after = pages[index]
                names.append(f"{size:>9,} {name}")
                variables = _variables(workspace_id, where, _cursor(after) if after else None)
                operations.append(_page(client, variables))
                statement = _sql(app.state.runtime.engine.dialect, workspace_id, where, after)
                floors.append(_floor(conn, statement))
                if explain:
                    plan = await (
                        await conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}")
                    ).fetchall()
                    print(f"\n--- {size:,} runs, {name} ---\n{statement}")
                    print("\n".join(line for (line,) in plan))
            results = await _interleaved(names, count, operations)
            floor_results = await _interleaved([f"floor {n}" for n in names], count, floors)
            rows += list(zip(results, floor_results, strict=True))
    return rows


def _page(client: httpx.AsyncClient, variables: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    async def page() -> None:
        response = await client.post("/graphql", json={"query": RUNS, "variables": variables})
        body = response.json()
        assert len(body["data"]["workspace"]["runs"]["edges"]) == PAGE, body

    return page


def _floor(conn: psycopg.AsyncConnection[Any], statement: str) -> Callable[[], Awaitable[None]]:
    async def floor() -> None:
        await (await conn.execute(statement)).fetchall()

    return floor


async def run(url: str, count: int, explain: bool) -> list[tuple[Result, Result | None]]:
    """Both sizes, every page, beside the floor."""
    values: dict[str, Any] = {
        "database_url": url,
        "env": "production",
        "log_json": True,
        "secret_key": generate_key(),
    }
    settings = Settings(**values)
    engine, token, workspaces = await _setup(url, settings)
    app = create_app(settings, engine, url)
    async with app.router.lifespan_context(app):
        for (workspace_id, _), size in zip(workspaces, SIZES, strict=True):
            started = time.perf_counter()
            _grow(url, workspace_id, size)
            print(
                f"{size:,} runs generated in {time.perf_counter() - started:.1f} s", file=sys.stderr
            )
        rows = await _measure(url, app, token, workspaces, count, explain)
    await engine.dispose()
    return rows


def main(count: int = 200) -> None:
    """Create a scratch database, measure the run list at both sizes, drop the database."""
    count = int(os.environ.get("FLOWDECK_BENCH_COUNT", count))
    explain = "--explain" in sys.argv
    with tempfile.TemporaryDirectory() as scratch:
        server = server_url(Path(scratch))
        name = f"flowdeck_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            rows = asyncio.run(run(with_database(server, name), count, explain))
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    print(report(rows, 0).replace("graph size: 0 bytes; ", f"pages of {PAGE}; "))


if __name__ == "__main__":
    main()
