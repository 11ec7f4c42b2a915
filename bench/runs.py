"""Run scenarios: queue-to-start latency with an idle worker, and 3-node runs per second."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app.worker.runner import run_worker
from bench.measure import Result

EXECUTE = """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
  run { id } userErrors { code message } } }"""

THREE_NODES = {
    "nodes": [
        {"id": "t", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {}},
        {
            "id": "shape",
            "type": "transform.set",
            "position": {"x": 280, "y": 0},
            "data": {"fields": {"n": "{{ trigger.n }}", "twice": "{{ trigger.n * 2 }}"}},
        },
        {
            "id": "out",
            "type": "output",
            "position": {"x": 560, "y": 0},
            "data": {"value": "{{ input }}"},
        },
    ],
    "edges": [
        {"id": "e1", "source": "t", "target": "shape", "sourceHandle": "out"},
        {"id": "e2", "source": "shape", "target": "out", "sourceHandle": "out"},
    ],
}


async def _finished(engine: AsyncEngine, run_ids: list[str]) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text("SELECT count(*) FROM runs WHERE status IN ('SUCCEEDED','FAILED','CANCELLED')")
            )
        )


async def run_scenarios(
    app: Starlette, engine: AsyncEngine, client: httpx.AsyncClient, workflow_id: str, count: int
) -> list[Result]:
    """Queue-to-RUNNING latency (one at a time) and throughput (all at once)."""
    runtime = app.state.runtime
    worker = asyncio.create_task(run_worker(runtime, install_signal_handlers=False))
    try:

        async def execute(n: int) -> str:
            response = await client.post(
                "/graphql",
                json={
                    "query": EXECUTE,
                    "variables": {"i": {"workflowId": workflow_id, "input": {"n": n}}},
                },
            )
            body: dict[str, Any] = response.json()
            assert body["data"]["workflowExecute"]["userErrors"] == [], body
            return str(body["data"]["workflowExecute"]["run"]["id"])

        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM runs"))
        latencies: list[float] = []
        sequential = max(20, count // 5)
        for n in range(sequential):
            await execute(n)
            while await _finished(engine, []) < n + 1:
                await asyncio.sleep(0.001)
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT extract(epoch FROM started_at - queued_at) FROM runs ORDER BY queued_at"
                )
            )
            latencies = [float(r[0]) for r in rows]
        queue_latency = Result("execute → RUNNING (idle worker)", latencies[5:])

        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM runs"))
        started = time.perf_counter()
        await asyncio.gather(*(execute(n) for n in range(count)))
        while await _finished(engine, []) < count:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        # One sample per run: the mean time a run took of the worker's capacity.
        throughput = Result("3-node runs (1 embedded worker)", [elapsed / count] * count)
        return [queue_latency, throughput]
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
