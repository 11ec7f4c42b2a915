"""Webhook throughput with one API process and one worker: ``python -m bench.webhooks``.

Starts `flowdeck serve --no-worker` and one `flowdeck worker` as separate processes on a
scratch database (TEST_DATABASE_URL, DATABASE_URL, else an embedded PostgreSQL), enables a
webhook (signed, HMAC-SHA256) on a 3-node workflow and POSTs JSON deliveries to it from
this process, FLOWDECK_BENCH_WEBHOOK_CONCURRENCY at a time (default 16).

Each 202 means the run, its steps, its first event and its job are committed. Reported:
accepted deliveries a second and the answer latency (p50/p99), then how long the one
worker took to finish all those runs (runs a second end to end). The per-webhook rate
limit is raised for the measurement (FLOWDECK_WEBHOOK_RATE_PER_SECOND).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from app.db import with_database
from app.services.webhooks import signature
from bench.events import (
    _edge,
    _free_port,
    _node,
    _token,
    percentile,
    start_processes,
    stop_processes,
)
from bench.suite import server_url

CREATE = """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) {
  workflow { id } userErrors { code message } } }"""
PUBLISH = """mutation($i: WorkflowPublishInput!) { workflowPublish(input: $i) {
  userErrors { code message } } }"""
HOOK = """mutation($i: WorkflowWebhookUpdateInput!) { workflowWebhookUpdate(input: $i) {
  webhook { url signingSecret } userErrors { code message } } }"""


def graph() -> dict[str, Any]:
    """trigger → text.format → output."""
    return {
        "nodes": [
            _node("t", "trigger"),
            _node("hello", "text.format", template="Hello {{ input.name }}!"),
            _node("out", "output", value="{{ input }}"),
        ],
        "edges": [_edge("t", "hello"), _edge("hello", "out")],
    }


async def _ready(client: httpx.AsyncClient, api: Any) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or api.poll() is not None:
            raise RuntimeError("flowdeck serve did not start")
        await asyncio.sleep(0.1)


async def measure(
    port: int,
    token: str,
    workspace_id: str,
    count: int,
    concurrency: int,
    url: str,
    processes: list[subprocess.Popen[bytes]],
) -> str:
    """Send ``count`` signed deliveries; the report."""
    base = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        api, worker = processes
        await _ready(client, api)
        variables = {"i": {"workspaceId": workspace_id, "name": "hook", "graph": graph()}}
        created = await client.post("/graphql", json={"query": CREATE, "variables": variables})
        workflow_id = created.json()["data"]["workflowCreate"]["workflow"]["id"]
        # A webhook runs the published version: publish version 1 (none was published: 0).
        publish_vars = {"i": {"workflowId": workflow_id, "version": 1, "baseVersion": 0}}
        published = await client.post(
            "/graphql", json={"query": PUBLISH, "variables": publish_vars}
        )
        assert published.json()["data"]["workflowPublish"]["userErrors"] == [], published.text
        hook_vars = {"i": {"workflowId": workflow_id, "enabled": True, "requireSignature": True}}
        hook = (await client.post("/graphql", json={"query": HOOK, "variables": hook_vars})).json()
        webhook = hook["data"]["workflowWebhookUpdate"]["webhook"]
        path = webhook["url"].removeprefix(base)
        secret = webhook["signingSecret"]

    rounds = []
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits(concurrency)) as client:
        await _deliver(client, path, secret, ["warm"], 1)  # connections, caches, first compile
        # Round 1: the worker is paused (SIGSTOP), so the API has the machine to itself.
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            rounds.append(
                (
                    "worker paused",
                    *await _deliver(client, path, secret, _names("a", count), concurrency),
                )
            )
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        drained = _wait_idle(url)
        # Round 2: the worker drains the runs while the deliveries come in.
        started = time.perf_counter()
        rounds.append(
            (
                "worker running",
                *await _deliver(client, path, secret, _names("b", count), concurrency),
            )
        )
        _wait_idle(url)
        finished_in = time.perf_counter() - started
    lines = [
        "Webhook deliveries, signed JSON → 202 (run durable), one API process + one worker",
        f"  deliveries per round: {count}, concurrency: {concurrency}",
    ]
    for label, seconds, ms, statuses in rounds:
        lines.append(
            f"  {label:15} accepted {count / seconds:5.0f} req/s   answer p50 "
            f"{percentile(ms, 50):6.1f} ms   p99 {percentile(ms, 99):6.1f} ms   {statuses}"
        )
    lines.append(
        f"  the worker drained round 1's {count} runs in {drained:.1f} s "
        f"({count / drained:.0f} runs/s); round 2 ended {finished_in:.1f} s after it started"
    )
    return "\n".join(lines)


def limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{number}" for number in range(count)]


async def _deliver(
    client: httpx.AsyncClient, path: str, secret: str, names: list[str], concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    """POST one signed delivery per name; elapsed seconds, latencies (ms), statuses."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    pending = iter(names)

    async def sender() -> None:
        for name in pending:
            body = json.dumps({"name": name}).encode()
            stamp = str(int(time.time()))
            headers = {
                "content-type": "application/json",
                "x-flowdeck-timestamp": stamp,
                "x-flowdeck-signature": signature(secret, stamp, body),
                "x-flowdeck-delivery": name,
            }
            began = time.perf_counter()
            response = await client.post(path, content=body, headers=headers)
            latencies.append((time.perf_counter() - began) * 1000)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


def _wait_idle(url: str) -> float:
    """Seconds until no run is queued or running."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM runs WHERE status IN ('QUEUED', 'RUNNING')"
            ).fetchone()
            if row is not None and row[0] == 0:
                return time.perf_counter() - started
            time.sleep(0.05)


def main(count: int = 500) -> None:
    """Create a scratch database, measure, print, drop the database."""
    count = int(os.environ.get("FLOWDECK_BENCH_WEBHOOKS", count))
    concurrency = int(os.environ.get("FLOWDECK_BENCH_WEBHOOK_CONCURRENCY", 16))
    with tempfile.TemporaryDirectory() as scratch:
        server = server_url(Path(scratch))
        name = f"flowdeck_bench_hooks_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = with_database(server, name)
        try:
            token, workspace_id = asyncio.run(_token(url))
            port = _free_port()
            processes = start_processes(
                url,
                port,
                FLOWDECK_WEBHOOK_RATE_PER_SECOND="100000",
                FLOWDECK_WEBHOOK_RATE_BURST="100000",
            )
            try:
                print(
                    asyncio.run(
                        measure(port, token, workspace_id, count, concurrency, url, processes)
                    )
                )
            finally:
                stop_processes(processes)
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
