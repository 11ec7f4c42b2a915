"""Scenarios through the real GraphQL app beside the floor: the same data by plain psycopg."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from app.auth.principal import Principal
from app.db import create_engine, libpq_url, start_embedded_postgres, with_database
from app.engine.graph import validate_graph
from app.keyring import generate_key
from app.main import create_app
from app.migrate import migrate
from app.models import Role, Workflow
from app.services.api_tokens import create_api_token
from app.services.graphs import GraphPolicy
from app.services.schedules import upcoming
from app.services.users import get_or_create_user
from app.services.workflows import create_workflow
from app.services.workspaces import create_workspace
from app.settings import Settings
from bench.data import graph_size, react_flow_graph
from bench.measure import Result, timed
from bench.runs import THREE_NODES, run_scenarios
from schema.ids import encode_id

EDITOR = """query($id: ID!) { workflow(id: $id) { id name description isTemplate createdAt updatedAt
  currentVersion { id number message createdAt createdBy { id name } restoredFrom graph
                   diagnostics { severity code message nodeId edgeId } } } }"""
LIST = """query($ws: ID!) { workspace(id: $ws) { workflows(first: 50) { totalCount
  pageInfo { hasNextPage endCursor } edges { cursor node { id name description isTemplate updatedAt
  currentVersion { number createdAt } } } } } }"""
SAVE = """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) {
  workflow { id updatedAt currentVersion { number } } userErrors { code } } }"""

FLOOR_EDITOR = """SELECT w.id, w.name, w.description, w.is_template, w.created_at, w.updated_at,
  v.id, v.number, v.message, v.created_at, v.restored_from, v.graph::text, v.diagnostics::text,
  u.id, u.name
FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id AND v.number = w.current_version
LEFT JOIN users u ON u.id = v.created_by_id WHERE w.id = %s"""
FLOOR_LIST = """SELECT w.id, w.name, w.description, w.is_template, w.updated_at,
  v.number, v.created_at
FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id AND v.number = w.current_version
WHERE w.workspace_id = %s ORDER BY w.updated_at DESC, w.id DESC LIMIT 51"""

FLOOR_BUMP = """UPDATE workflows SET current_version = current_version + 1, updated_at = now()
WHERE id = %s"""
FLOOR_INSERT = """INSERT INTO workflow_versions
  (id, workspace_id, workflow_id, number, graph, diagnostics)
VALUES (%s, %s, %s, %s, %s::jsonb, '[]')"""


def server_url(data: Path) -> str:
    """The server to measure on: TEST_DATABASE_URL, DATABASE_URL, else an embedded one."""
    for name in ("TEST_DATABASE_URL", "DATABASE_URL"):
        if os.environ.get(name):
            return libpq_url(os.environ[name])
    return start_embedded_postgres(data / "pgdata")


async def run(url: str, count: int) -> list[tuple[Result, Result | None]]:
    """Every scenario and its floor."""
    settings = Settings(
        database_url=url,
        env="production",
        log_json=True,
        secret_key=generate_key(),
    )
    engine = create_engine(url, settings)
    await migrate(engine)
    app = create_app(settings, engine, url)
    policy = GraphPolicy.from_settings(settings)
    graph = react_flow_graph()
    async with app.router.lifespan_context(app):
        from app.db import session_factory

        async with session_factory(engine)() as session:
            user = await get_or_create_user(session, email="bench@example.com")
            principal = Principal(user=user)
            workspace = await create_workspace(session, principal=principal, name="Bench")
            principal.roles[workspace.id] = Role.OWNER
            token = (await create_api_token(session, user=user, name="b", expires_at=None)).token
            workflows = []
            for i in range(60):
                workflow, _ = await create_workflow(
                    session,
                    principal=principal,
                    workspace_id=workspace.id,
                    name=f"wf {i}",
                    description="bench",
                    graph=graph,
                    policy=policy,
                )
                workflows.append(workflow)
            await session.commit()
        target = workflows[-1]
        headers = {"authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def gql(query: str, variables: dict[str, Any]) -> None:
                response = await client.post(
                    "/graphql", json={"query": query, "variables": variables}, headers=headers
                )
                body = response.json()
                assert "errors" not in body, body

            editor = await timed(
                "editor read (22 KB graph)",
                count,
                lambda _: gql(EDITOR, {"id": encode_id("Workflow", target.id)}),
            )
            listing = await timed(
                "list page (50 workflows)",
                count,
                lambda _: gql(LIST, {"ws": encode_id("Workspace", workspace.id)}),
            )
            saves = {"base": 1}

            async def save(_: int) -> None:
                await gql(
                    SAVE,
                    {
                        "i": {
                            "workflowId": encode_id("Workflow", workflows[0].id),
                            "graph": graph,
                            "baseVersion": saves["base"],
                        }
                    },
                )
                saves["base"] += 1

            saving = await timed("save (22 KB graph)", count, save)

        with psycopg.connect(url) as conn:

            async def floor(query: str, params: tuple[Any, ...]) -> None:
                conn.execute(query, params).fetchall()

            floor_editor = await timed("floor", count, lambda _: floor(FLOOR_EDITOR, (target.id,)))
            floor_list = await timed("floor", count, lambda _: floor(FLOOR_LIST, (workspace.id,)))
            text = json.dumps(graph)
            floor_base = {"n": 10_000}

            async def floor_save(_: int) -> None:
                with conn.transaction():
                    conn.execute(FLOOR_BUMP, (workflows[1].id,))
                    conn.execute(
                        FLOOR_INSERT,
                        (uuid.uuid4(), workspace.id, workflows[1].id, floor_base["n"], text),
                    )
                floor_base["n"] += 1

            floor_saving = await timed("floor", count, floor_save)

        async def validate(_: int) -> None:
            validate_graph(graph)

        validation = await timed("validate_graph (40 nodes)", count, validate)

        # The costliest schedule to list: a fifth Monday of February (a leap-day Monday)
        # fires every 28 to 40 years; upcoming(50) walks to its 50-year horizon.
        rare = Workflow(
            workspace_id=workspace.id,
            name="rare",
            current_version=1,
            schedule_cron="0 0 * 2 MON#5",
            schedule_timezone="Asia/Kathmandu",
            schedule_enabled=True,
        )

        async def list_upcoming(_: int) -> None:
            upcoming(rare, count=50)

        rarest = await timed("upcoming(50), rarest cron", count, list_upcoming)

        async with session_factory(engine)() as session:
            three, _ = await create_workflow(
                session,
                principal=principal,
                workspace_id=workspace.id,
                name="three",
                description=None,
                graph=THREE_NODES,
                policy=policy,
            )
            await session.commit()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", headers=headers
        ) as client:
            runs = await run_scenarios(app, engine, client, encode_id("Workflow", three.id), count)
    return [
        (editor, floor_editor),
        (listing, floor_list),
        (saving, floor_saving),
        (validation, None),
        (rarest, None),
        *((r, None) for r in runs),
    ]


def report(rows: list[tuple[Result, Result | None]], graph_bytes: int) -> str:
    """The one table: throughput and latency beside the floor."""
    lines = [
        f"graph size: {graph_bytes} bytes; sequential, one client, in-process ASGI",
        f"{'scenario':<28}{'ops/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'floor ops/s':>13}{'floor p50':>11}{'vs floor':>10}",
    ]
    for result, floor in rows:
        line = (
            f"{result.name:<28}{result.per_second:>9.0f}{result.percentile(50):>9.2f}"
            f"{result.percentile(95):>9.2f}{result.percentile(99):>9.2f}"
        )
        if floor is not None:
            line += (
                f"{floor.per_second:>13.0f}{floor.percentile(50):>11.2f}"
                f"{result.per_second / floor.per_second:>9.2f}x"
            )
        lines.append(line)
    return "\n".join(lines)


def main(count: int = 300) -> None:
    """Create a scratch database, run every scenario, print the table, drop the database."""
    count = int(os.environ.get("FLOWDECK_BENCH_COUNT", count))
    with tempfile.TemporaryDirectory() as scratch:
        server = server_url(Path(scratch))
        name = f"flowdeck_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            rows = asyncio.run(run(with_database(server, name), count))
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    print(report(rows, graph_size(react_flow_graph())))
