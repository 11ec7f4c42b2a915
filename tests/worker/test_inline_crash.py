"""A run driven by the API process that queued it, as real processes: kill -9 at each point."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.factories import Account, Factory
from tests.processes import Processes
from tests.runs import create_workflow, edge, node, read_run, steps_by_node, wait_for, wait_step
from tests.servers import LocalHTTP

EXECUTE = """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
  run { id status } userErrors { code message } } }"""


@pytest.fixture
def processes(database_url: str) -> Iterator[Processes]:
    # A short lease: a dead API process's runs go to a worker within a couple of seconds.
    pool = Processes(database_url, FLOWDECK_RUN_LEASE_SECONDS="2", FLOWDECK_INLINE_RUNS="64")
    yield pool
    pool.stop_all()


@pytest.fixture
def upstream() -> Iterator[LocalHTTP]:
    local = LocalHTTP().start()
    yield local
    local.stop()


@pytest.fixture
async def api(processes: Processes) -> tuple[subprocess.Popen[bytes], str]:
    """An API process that drives the runs it queues (stopped with the others)."""
    return await asyncio.to_thread(processes.api)


async def execute_on(base: str, owner: Account, workflow_id: str, input: Any = None) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        response = await client.post(
            "/graphql",
            json={
                "query": EXECUTE,
                "variables": {"i": {"workflowId": workflow_id, "input": input}},
            },
            headers={"authorization": f"Bearer {owner.token}"},
        )
    payload = response.json()["data"]["workflowExecute"]
    assert payload["userErrors"] == [], payload
    return str(payload["run"]["id"])


async def gapless(factory: Factory) -> None:
    """Every run's events are numbered 1, 2, 3 … with no gap and no repeat."""
    rows = await factory.scalar(
        "SELECT json_agg(json_build_array(run_id, seq, last_event_seq) ORDER BY run_id, seq)"
        " FROM run_events JOIN runs ON runs.id = run_id"
    )
    by_run: dict[str, list[int]] = {}
    last: dict[str, int] = {}
    for run_id, seq, last_seq in rows:
        by_run.setdefault(run_id, []).append(seq)
        last[run_id] = last_seq
    for run_id, seqs in by_run.items():
        assert seqs == list(range(1, len(seqs) + 1)), seqs
        assert last[run_id] == len(seqs)


async def test_kill_9_after_a_side_effect_before_its_commit_repeats_only_that_call(
    factory: Factory,
    processes: Processes,
    api: tuple[subprocess.Popen[bytes], str],
    upstream: LocalHTTP,
) -> None:
    process, base = api
    keys: list[str | None] = []

    async def first(request: Request) -> Response:
        return JSONResponse({"n": 1})

    async def second(request: Request) -> Response:
        keys.append(request.headers.get("idempotency-key"))
        if len(keys) == 1:
            process.kill()  # the call happened; its answer never reaches the process
            await asyncio.sleep(2)
        return JSONResponse({"n": 2})

    upstream.routes |= {"/first": first, "/second": second}
    owner = await factory.owner()
    graph = {
        "nodes": [
            node("t", "trigger"),
            node("shape", "transform.set", fields={"x": "{{ trigger.x }}"}),
            node("first", "http.request", url=upstream.url("/first")),
            node("second", "http.request", url=upstream.url("/second")),
            node("out", "output", value="{{ nodes.shape.output.x + input.body.n }}"),
        ],
        "edges": [
            edge("t", "shape", "out"),
            edge("shape", "first", "out"),
            edge("first", "second", "out"),
            edge("second", "out", "out"),
        ],
    }
    workflow_id = await create_workflow(factory, owner, graph)
    run_id = await execute_on(base, owner, workflow_id, {"x": 40})
    while not keys:
        await asyncio.sleep(0.02)
    process.wait()

    processes.start()  # a worker: it takes the run over once the dead process's lease is out
    run = await wait_for(factory, owner, run_id, timeout=30)

    assert (run["status"], run["output"]) == ("SUCCEEDED", 42), run
    steps = steps_by_node(run)
    assert {n: (s["status"], s["attempt"]) for n, s in steps.items()} == {
        "t": ("SUCCEEDED", 1),
        "shape": ("SUCCEEDED", 1),
        "first": ("SUCCEEDED", 1),
        "second": ("SUCCEEDED", 2),
        "out": ("SUCCEEDED", 1),
    }
    assert upstream.count("/first") == 1  # committed SUCCEEDED: never called again
    assert len(keys) == 2  # the call in flight was made again …
    assert keys[0] == keys[1]  # … with the same Idempotency-Key
    assert await factory.scalar("SELECT crashes FROM runs") == 1
    assert await factory.scalar("SELECT attempt FROM runs") == 2
    await gapless(factory)


async def test_kill_9_between_group_commits_resumes_after_what_was_written(
    factory: Factory,
    processes: Processes,
    api: tuple[subprocess.Popen[bytes], str],
    upstream: LocalHTTP,
) -> None:
    process, base = api

    async def ok(request: Request) -> Response:
        return JSONResponse({"ok": True})

    upstream.routes["/ok"] = ok
    owner = await factory.owner()
    graph = {
        "nodes": [
            node("t", "trigger"),
            node("call", "http.request", url=upstream.url("/ok")),
            node("wait", "flow.delay", seconds=4),
            node("after", "transform.set", fields={"done": "{{ input.body.ok }}"}),
            node("out", "output", value="{{ input.done }}"),
        ],
        "edges": [
            edge("t", "call", "out"),
            edge("call", "wait", "out"),
            edge("wait", "after", "out"),
            edge("after", "out", "out"),
        ],
    }
    workflow_id = await create_workflow(factory, owner, graph)
    run_id = await execute_on(base, owner, workflow_id)
    await wait_step(factory, owner, run_id, "wait", "RUNNING")

    process.kill()
    process.wait()
    processes.start()
    run = await wait_for(factory, owner, run_id, timeout=30)

    assert (run["status"], run["output"]) == ("SUCCEEDED", True), run
    steps = steps_by_node(run)
    assert {n: (s["status"], s["attempt"]) for n, s in steps.items()} == {
        "t": ("SUCCEEDED", 1),
        "call": ("SUCCEEDED", 1),
        "wait": ("SUCCEEDED", 2),
        "after": ("SUCCEEDED", 1),
        "out": ("SUCCEEDED", 1),
    }
    assert upstream.count("/ok") == 1
    await gapless(factory)


async def test_with_a_worker_listening_exactly_one_drives_each_run(
    factory: Factory,
    processes: Processes,
    api: tuple[subprocess.Popen[bytes], str],
    upstream: LocalHTTP,
) -> None:
    _, base = api
    keys: list[str | None] = []

    async def count(request: Request) -> Response:
        keys.append(request.headers.get("idempotency-key"))
        return JSONResponse({"ok": True})

    upstream.routes["/count"] = count
    processes.start()
    owner = await factory.owner()
    graph = {
        "nodes": [
            node("t", "trigger"),
            node("call", "http.request", url=upstream.url("/count")),
            node("out", "output", value="{{ input.body.ok }}"),
        ],
        "edges": [edge("t", "call", "out"), edge("call", "out", "out")],
    }
    workflow_id = await create_workflow(factory, owner, graph)

    run_ids = await asyncio.gather(*(execute_on(base, owner, workflow_id) for _ in range(20)))
    runs = [await wait_for(factory, owner, run_id, timeout=30) for run_id in run_ids]
    await asyncio.sleep(2.5)  # past the lease: a wrongful takeover would show now

    assert {r["status"] for r in runs} == {"SUCCEEDED"}
    assert [await read_run(factory, owner, r["id"]) for r in runs] == runs
    assert len(keys) == 20
    assert len(set(keys)) == 20
    claims = await factory.scalar(
        "SELECT json_agg(DISTINCT jsonb_build_array(attempt, crashes, job_id)) FROM runs"
    )
    assert claims == [[1, 0, None]]
    assert await factory.scalar("SELECT count(*) FROM procrastinate_jobs") == 0
    await gapless(factory)
