"""Latency of live run progress across processes: ``python -m bench.events``.

Starts `flowdeck serve --no-worker` and one `flowdeck worker` as separate processes on a
scratch database (TEST_DATABASE_URL, DATABASE_URL, else an embedded PostgreSQL), runs
workflows of many short steps, and subscribes to each run's `runProgress` over WebSocket
(graphql-transport-ws) from this process. For every event produced after the subscription
was live, latency = the time this process received it - the event's `at`.

`at` is PostgreSQL's clock_timestamp() when the event row was inserted, a little before its
transaction commits, so the figures include the rest of that transaction and the commit as
well as NOTIFY → LISTEN → read → send → receive. Both clocks are this machine's.

FLOWDECK_BENCH_EVENTS sets how many events to measure (default 400).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from app.auth.principal import Principal
from app.db import create_engine, session_factory, with_database
from app.keyring import generate_key
from app.migrate import migrate
from app.services.api_tokens import create_api_token
from app.services.users import get_or_create_user
from app.services.workspaces import create_workspace
from app.settings import Settings
from bench.suite import server_url
from schema.ids import encode_id

FLOWDECK = str(Path(sys.executable).with_name("flowdeck"))
CHAIN = 50  # transform.set steps per run: 2 events each
DELAY_SECONDS = 0.5  # the run waits this long first, so the subscription is live before
RUN_PROGRESS = """subscription($runId: ID!) { runProgress(runId: $runId) {
  seq type at nodeId } }"""
CREATE = """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) {
  workflow { id } userErrors { code message } } }"""
EXECUTE = """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
  run { id } userErrors { code message } } }"""


def _node(node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "position": {"x": 0, "y": 0}, "data": data}


def _edge(source: str, target: str) -> dict[str, Any]:
    return {
        "id": f"{source}->{target}",
        "source": source,
        "target": target,
        "sourceHandle": "out",
        "targetHandle": "in",
    }


def chain_graph() -> dict[str, Any]:
    """trigger → delay → CHAIN transform.set nodes in a row → output."""
    ids = ["t", "wait", *(f"s{i}" for i in range(CHAIN)), "out"]
    nodes = [_node("t", "trigger"), _node("wait", "flow.delay", seconds=DELAY_SECONDS)]
    nodes += [_node(f"s{i}", "transform.set", fields={"i": i}) for i in range(CHAIN)]
    nodes.append(_node("out", "output", value="{{ input }}"))
    return {"nodes": nodes, "edges": [_edge(a, b) for a, b in itertools.pairwise(ids)]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _token(url: str) -> tuple[str, str]:
    settings = Settings(database_url=url, env="production")
    engine = create_engine(url, settings)
    try:
        await migrate(engine)
        async with session_factory(engine)() as session:
            user = await get_or_create_user(session, email="bench-events@example.com")
            workspace = await create_workspace(session, principal=Principal(user=user), name="B")
            token = (await create_api_token(session, user=user, name="b", expires_at=None)).token
            await session.commit()
        return token, encode_id("Workspace", workspace.id)
    finally:
        await engine.dispose()


async def _one_run(
    client: httpx.AsyncClient, ws_url: str, token: str, workflow_id: str
) -> tuple[list[float], int]:
    """Latencies (seconds) of the live events of one run, and how many events it had."""
    body = (
        await client.post(
            "/graphql", json={"query": EXECUTE, "variables": {"i": {"workflowId": workflow_id}}}
        )
    ).json()
    run_id = body["data"]["workflowExecute"]["run"]["id"]
    latencies: list[float] = []
    total = 0
    async with connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        subscribe = {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": RUN_PROGRESS, "variables": {"runId": run_id}},
        }
        await ws.send(json.dumps(subscribe))
        live_from = time.time()
        async with asyncio.timeout(60):
            while True:
                message = json.loads(await ws.recv())
                received = time.time()
                if message["type"] == "complete":
                    break
                assert message["type"] == "next", message
                event = message["payload"]["data"]["runProgress"]
                total += 1
                at = datetime.fromisoformat(event["at"]).timestamp()
                if at > live_from:  # produced after the subscription was sent: live
                    latencies.append(received - at)
    return latencies, total


def start_processes(url: str, port: int, **extra: str) -> list[subprocess.Popen[bytes]]:
    """`flowdeck serve --no-worker` and one `flowdeck worker` on ``url``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "DATABASE_URL")}
    env.update(
        DATABASE_URL=url,
        FLOWDECK_LOG_LEVEL="WARNING",
        FLOWDECK_ENV="production",
        # Production with an external database needs a key shared by both processes.
        FLOWDECK_SECRET_KEY=generate_key(),
        **extra,
    )
    serve = [FLOWDECK, "serve", "--no-worker", "--port", str(port)]
    return [
        subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL),
        subprocess.Popen([FLOWDECK, "worker"], env=env, stdout=subprocess.DEVNULL),
    ]


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


async def measure(
    port: int, token: str, workspace_id: str, count: int, api: subprocess.Popen[bytes]
) -> tuple[list[float], int, int]:
    """Latencies (seconds) of at least ``count`` live events; runs and events streamed."""
    headers = {"authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError("flowdeck serve did not start")
            await asyncio.sleep(0.1)
        graph = chain_graph()
        variables = {"i": {"workspaceId": workspace_id, "name": "chain", "graph": graph}}
        response = await client.post("/graphql", json={"query": CREATE, "variables": variables})
        workflow_id = response.json()["data"]["workflowCreate"]["workflow"]["id"]
        ws_url = f"ws://127.0.0.1:{port}/graphql"

        await _one_run(client, ws_url, token, workflow_id)  # warm-up, not measured
        samples: list[float] = []
        runs = events = 0
        while len(samples) < count:
            latencies, total = await _one_run(client, ws_url, token, workflow_id)
            samples += latencies
            runs += 1
            events += total
    return samples, runs, events


def report(samples: list[float], runs: int, events: int) -> str:
    ms = [s * 1000 for s in samples]
    return (
        "Run event latency, event insert (~ step commit) -> WebSocket subscriber, "
        "API and worker in separate processes\n"
        f"  runs: {runs}, events streamed: {events}, live events measured: {len(ms)}\n"
        f"  p50 {percentile(ms, 50):.2f} ms   p90 {percentile(ms, 90):.2f} ms   "
        f"p99 {percentile(ms, 99):.2f} ms   max {max(ms):.2f} ms   min {min(ms):.2f} ms"
    )


def main(count: int = 400) -> None:
    """Create a scratch database, measure, print, drop the database."""
    count = int(os.environ.get("FLOWDECK_BENCH_EVENTS", count))
    with tempfile.TemporaryDirectory() as scratch:
        server = server_url(Path(scratch))
        name = f"flowdeck_bench_events_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = with_database(server, name)
        try:
            token, workspace_id = asyncio.run(_token(url))
            port = _free_port()
            processes = start_processes(url, port)
            try:
                samples, runs, events = asyncio.run(
                    measure(port, token, workspace_id, count, processes[0])
                )
            finally:
                stop_processes(processes)
            print(report(samples, runs, events))
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
