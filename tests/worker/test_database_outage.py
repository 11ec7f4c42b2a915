"""Workers and an API process ride out a database outage, and every accepted run ends once.

Two `flowdeck worker` processes and a `flowdeck serve --no-worker` that drives two runs
itself (the rest go to the workers) run over a database of their own (tests/faults.py).
Runs are queued before the fault and during it; every backend of the database is
terminated every 0.4 s for 10 s, then it refuses connections for 4 s (a worker's /readyz
says so within a second, and that it is back). A stub upstream records each call of the
runs' side-effecting step with its Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.db import create_engine
from app.settings import Settings
from schema.ids import decode_id
from tests.factories import Account, Factory
from tests.faults import FaultyDatabase, FlowdeckProcess, free_port
from tests.runs import RUN_FIELDS, create_workflow, flow, node, steps_by_node
from tests.servers import LocalHTTP

EXECUTE = """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
  run { id } userErrors { code } } }"""
LIVENESS = {"worker_heartbeat_seconds": "0.5", "worker_stalled_seconds": "2"}
OUTAGE_LINES = {"database unreachable", "database reachable again"}


@pytest.fixture
def upstream() -> Iterator[LocalHTTP]:
    async def effect(request: Request) -> Response:
        await asyncio.sleep(1)  # a call in flight when the database goes
        return JSONResponse({"ok": True})

    server = LocalHTTP(routes={"/effect": effect}).start()
    yield server
    server.stop()


@pytest.fixture
def stack(
    server_url: str, tmp_path: Path
) -> Iterator[tuple[FaultyDatabase, FlowdeckProcess, list[FlowdeckProcess]]]:
    with FaultyDatabase.scratch(server_url) as database:
        # Started together (the first to migrate holds the others at its advisory lock)
        workers = [
            FlowdeckProcess.worker(database.url, tmp_path, **LIVENESS, **ports).start()
            for ports in ({"worker_metrics_port": str(free_port())}, {})
        ]
        api = FlowdeckProcess.api(database.url, tmp_path, inline_runs="2", **LIVENESS).start()
        try:
            yield database, api, workers
        finally:
            for process in (*workers, api):
                process.stop()


@pytest.fixture
async def factory(stack: tuple, settings: Settings) -> AsyncIterator[Factory]:
    database, api, _workers = stack
    engine = create_engine(database.url, settings)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        yield Factory(engine, client)
    await engine.dispose()


async def accept(factory: Factory, owner: Account, workflow_id: str, key: str) -> str:
    """Queue a run, sending again with the same idempotency key while the API answers 503."""
    while True:
        response = await factory.client.post(
            "/graphql",
            json={
                "query": EXECUTE,
                "variables": {"i": {"workflowId": workflow_id, "idempotencyKey": key}},
            },
            headers={"authorization": f"Bearer {owner.token}"},
        )
        if response.status_code == 200:
            return response.json()["data"]["workflowExecute"]["run"]["id"]
        assert response.status_code == 503, response.text
        await asyncio.sleep(0.2)


async def read_when_available(factory: Factory, owner: Account, run_id: str) -> dict:
    """The run, read again while the API answers 503 (its pool reconnecting after the fault)."""
    while True:
        response = await factory.client.post(
            "/graphql",
            json={
                "query": f"query($id: ID!) {{ run(id: $id) {{ {RUN_FIELDS} }} }}",
                "variables": {"id": run_id},
            },
            headers={"authorization": f"Bearer {owner.token}"},
        )
        if response.status_code == 200:
            return response.json()["data"]["run"]
        assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        await asyncio.sleep(0.2)


async def readiness_within(worker: FlowdeckProcess, status: int, *, seconds: float) -> bool:
    """Whether the worker's /readyz answers ``status`` within ``seconds``."""
    port = worker.env["FLOWDECK_WORKER_METRICS_PORT"]
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
        while time.monotonic() < deadline:
            if (await client.get("/readyz")).status_code == status:
                return True
            await asyncio.sleep(0.05)
    return False


async def wait_until_running(processes: list[FlowdeckProcess]) -> None:
    deadline = time.monotonic() + 60
    for process in processes:
        while '"start_worker"' not in process.log_path.read_text(errors="replace"):
            assert process.process is not None
            assert process.process.poll() is None, process.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker did not start"
            await asyncio.sleep(0.1)


def outage_lines(process: FlowdeckProcess) -> list[str]:
    """What the process's DatabaseWatch logged (/readyz notes its own changes apart)."""
    return [
        line["event"]
        for line in process.log_lines()
        if line.get("logger") == "app.outage" and line.get("event") in OUTAGE_LINES
    ]


async def test_workers_and_the_api_ride_out_an_outage_and_every_accepted_run_ends_once(
    stack: tuple, factory: Factory, upstream: LocalHTTP
) -> None:
    database, api, workers = stack
    await wait_until_running(workers)
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"),
        node("call", "http.request", method="POST", url=upstream.url("/effect")),
        node("out", "output", value="{{ input.body.ok }}"),
    )
    workflow_id = await create_workflow(factory, owner, graph)
    # Given runs queued before the fault (two driven by the API, the rest by the workers)
    accepted = [await accept(factory, owner, workflow_id, f"before-{n}") for n in range(6)]

    # When every backend is terminated every 0.4 s for 10 s, then connections are refused for
    # 4 s, while more runs are queued
    with database.terminating(0.4):
        for n in range(5):
            accepted.append(await accept(factory, owner, workflow_id, f"during-{n}"))
            await asyncio.sleep(1.5)
        await asyncio.sleep(2.5)
    with database.down():
        # (the first worker says it is not ready within a second: /readyz asks afresh)
        not_ready = await readiness_within(workers[0], 503, seconds=1)
        await asyncio.sleep(3)
    ready_again = await readiness_within(workers[0], 200, seconds=1)

    # Then every accepted run ends SUCCEEDED, within seconds of the database's return
    deadline = time.monotonic() + 40
    runs = {}
    for run_id in accepted:
        while (run := await read_when_available(factory, owner, run_id))["status"] not in (
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
        ):
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.2)
        runs[run_id] = run
    assert {run_id: run["status"] for run_id, run in runs.items()} == dict.fromkeys(
        accepted, "SUCCEEDED"
    )
    # ... each claimed once, each step run once, each event recorded once
    ids = [decode_id("Run", run_id) for run_id in accepted]
    claims = await factory.rows(
        "SELECT attempt, crashes FROM runs WHERE id = ANY(CAST(:ids AS uuid[]))", ids=ids
    )
    assert claims == [{"attempt": 1, "crashes": 0}] * len(accepted)
    for run in runs.values():
        assert {
            n: (s["status"], s["attempt"]) for n, s in steps_by_node(run).items()
        } == dict.fromkeys(("t", "call", "out"), ("SUCCEEDED", 1))
    events = await factory.rows(
        "SELECT run_id::text AS run, type, node_id, count(*) AS n FROM run_events"
        " WHERE run_id = ANY(CAST(:ids AS uuid[])) GROUP BY run_id, type, node_id"
        " HAVING count(*) > 1",
        ids=ids,
    )
    assert events == []
    # ... and the side effect was called once per run, with the run's Idempotency-Key
    keys = Counter(hit.headers.get("idempotency-key") for hit in upstream.hits)
    assert keys == Counter({f"{run_id}:call": 1 for run_id in ids})
    assert (not_ready, ready_again) == (True, True)
    # And every process is alive, said once that the database went and once that it came
    # back (or nothing, if it had no work then), and logged no driver text at INFO or above
    for process in (api, *workers):
        assert process.process is not None
        assert process.process.poll() is None, process.log_path.read_text()[-3000:]
        assert process.leaked_log_lines() == []
    for worker in workers:
        # (terminations every 0.4 s leave the database usable for seconds at a time: an
        # outage ends once work succeeded 3 s after the last failure)
        while (lines := outage_lines(worker))[-1:] != ["database reachable again"]:
            assert time.monotonic() < deadline, lines
            await asyncio.sleep(0.2)
        assert lines[:2] == ["database unreachable", "database reachable again"], lines
        assert lines == lines[:2] * (len(lines) // 2), lines
        assert len(lines) <= 6, lines
