"""/metrics of the API and of a worker process, scraped around real runs: exact deltas."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.factories import Factory
from tests.live import progress
from tests.processes import Processes, api_processes, free_port, paused
from tests.processes import run as run_flowdeck
from tests.runs import cancel_run, create_workflow, execute, flow, node, wait_step
from tests.servers import LocalHTTP
from tests.webhooks.helpers import enable, path_of

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

CHAIN = flow(
    node("t", "trigger"),
    node("shape", "transform.set", fields={"twice": "{{ trigger.n * 2 }}"}),
    node("out", "output", value="{{ input }}"),
    handle="out",
)
FAILING = flow(node("t", "trigger"), node("stop", "flow.fail", message="no"), handle="out")


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample (0 when absent: a labelled counter not incremented yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


async def finished(factory: Factory, count: int, timeout: float = 20) -> None:
    """Wait, reading the table (no GraphQL: the operation counts stay as they are), until
    ``count`` runs have ended."""
    deadline = time.monotonic() + timeout
    statement = "SELECT count(*) FROM runs WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"
    while await factory.scalar(statement) < count:
        assert time.monotonic() < deadline, await factory.rows("SELECT status FROM runs")
        await asyncio.sleep(0.02)


# --- runs driven in the API process -------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[LocalHTTP]:
    local = LocalHTTP().start()
    yield local
    local.stop()


async def test_runs_driven_in_the_api_process_move_its_counters_by_exactly_their_number(
    here: Factory,
) -> None:
    owner = await here.owner()
    chain = await create_workflow(here, owner, CHAIN)
    failing = await create_workflow(here, owner, FAILING, "Failing")
    before = await scrape(here.client)

    for n in range(3):
        assert (await execute(here, owner, chain, {"n": n}))["userErrors"] == []
    assert (await execute(here, owner, failing))["userErrors"] == []
    await finished(here, 4)
    after = await scrape(here.client)

    assert (
        delta(before, after, "flowdeck_runs_finished_total", status="SUCCEEDED", trigger="MANUAL")
        == 3
    )
    assert (
        delta(before, after, "flowdeck_runs_finished_total", status="FAILED", trigger="MANUAL") == 1
    )
    assert (
        delta(
            before,
            after,
            "flowdeck_run_duration_seconds_count",
            status="SUCCEEDED",
            trigger="MANUAL",
        )
        == 3
    )
    assert (
        delta(
            before, after, "flowdeck_run_duration_seconds_count", status="FAILED", trigger="MANUAL"
        )
        == 1
    )
    assert (
        delta(
            before, after, "flowdeck_run_duration_seconds_sum", status="SUCCEEDED", trigger="MANUAL"
        )
        > 0
    )
    steps = {
        (node_type, status): delta(
            before,
            after,
            "flowdeck_step_duration_seconds_count",
            node_type=node_type,
            status=status,
        )
        for node_type in ("trigger", "transform.set", "output", "flow.fail")
        for status in ("SUCCEEDED", "FAILED")
    }
    assert steps == {
        ("trigger", "SUCCEEDED"): 4,
        ("trigger", "FAILED"): 0,
        ("transform.set", "SUCCEEDED"): 3,
        ("transform.set", "FAILED"): 0,
        ("output", "SUCCEEDED"): 3,
        ("output", "FAILED"): 0,
        ("flow.fail", "SUCCEEDED"): 0,
        ("flow.fail", "FAILED"): 1,
    }
    # Every bucket of a histogram counts the observations at or under its bound.
    assert (
        delta(
            before,
            after,
            "flowdeck_step_duration_seconds_bucket",
            node_type="trigger",
            status="SUCCEEDED",
            le="+Inf",
        )
        == 4
    )
    assert delta(before, after, "flowdeck_run_claims_total", path="inline") == 4
    assert delta(before, after, "flowdeck_run_claims_total", path="job") == 0
    assert delta(before, after, "flowdeck_run_resumes_total", reason="crash") == 0
    assert (
        delta(before, after, "flowdeck_graphql_operations_total", type="mutation", outcome="ok")
        == 4
    )
    assert (
        delta(before, after, "flowdeck_graphql_operations_total", type="query", outcome="ok") == 0
    )
    assert (
        delta(before, after, "flowdeck_graphql_operation_duration_seconds_count", type="mutation")
        == 4
    )
    assert value(after, "flowdeck_runs_driving") == 0
    # Read from the database at the scrape: nothing waits.
    assert value(after, "flowdeck_queue_depth") == 0
    assert value(after, "flowdeck_queue_oldest_age_seconds") == 0
    # The pools, as configured (FLOWDECK_DB_POOL_SIZE 10 + FLOWDECK_DB_POOL_OVERFLOW 10).
    assert value(after, "flowdeck_db_pool_max", pool="sessions") == 20
    assert value(after, "flowdeck_db_pool_max", pool="direct") == 10
    assert value(after, "flowdeck_db_pool_waiting", pool="direct") == 0
    # Nothing holds a connection between requests.
    assert value(after, "flowdeck_db_pool_connections", pool="direct", state="in_use") == 0
    assert value(after, "flowdeck_db_pool_connections", pool="sessions", state="in_use") == 0


async def test_a_cancel_is_counted_where_it_is_committed_and_retries_where_they_happen(
    here: Factory, upstream: LocalHTTP
) -> None:
    async def down(request: Request) -> Response:
        return JSONResponse({"down": True}, status_code=503)

    upstream.routes["/down"] = down
    owner = await here.owner()
    flaky = await create_workflow(
        here,
        owner,
        flow(
            node("t", "trigger"),
            node(
                "call",
                "http.request",
                url=upstream.url("/down"),
                retry={"maxAttempts": 3, "backoffSeconds": 0.01},
            ),
            handle="out",
        ),
    )
    slow = await create_workflow(
        here, owner, flow(node("t", "trigger"), node("wait", "flow.delay", seconds=20)), "Slow"
    )
    before = await scrape(here.client)

    failed = (await execute(here, owner, flaky))["run"]["id"]
    waiting = (await execute(here, owner, slow))["run"]["id"]
    await wait_step(here, owner, waiting, "wait", "RUNNING")
    assert (await cancel_run(here, owner, waiting))["run"]["status"] == "CANCELLED"
    await finished(here, 2)
    after = await scrape(here.client)

    assert failed != waiting
    assert delta(before, after, "flowdeck_step_retries_total", node_type="http.request") == 2
    assert (
        delta(
            before,
            after,
            "flowdeck_step_duration_seconds_count",
            node_type="http.request",
            status="FAILED",
        )
        == 1
    )
    assert (
        delta(before, after, "flowdeck_runs_finished_total", status="FAILED", trigger="MANUAL") == 1
    )
    # Ended by runCancel's transaction, once: the driver it stopped counts nothing.
    assert (
        delta(before, after, "flowdeck_runs_finished_total", status="CANCELLED", trigger="MANUAL")
        == 1
    )
    assert (
        delta(
            before,
            after,
            "flowdeck_run_duration_seconds_count",
            status="CANCELLED",
            trigger="MANUAL",
        )
        == 1
    )
    assert (
        delta(
            before,
            after,
            "flowdeck_step_duration_seconds_count",
            node_type="flow.delay",
            status="SUCCEEDED",
        )
        == 0
    )


async def test_webhook_deliveries_are_counted_by_outcome(here: Factory) -> None:
    owner = await here.owner()
    echo = flow(node("start", "trigger"), node("out", "output", value="{{ input }}"))
    queued = await enable(here, owner, await create_workflow(here, owner, echo))
    waits = await enable(
        here, owner, await create_workflow(here, owner, echo, "Waits"), waitForResult=True
    )
    before = await scrape(here.client)

    first = await here.client.post(
        path_of(queued["url"]), json={"a": 1}, headers={"x-flowdeck-delivery": "d-1"}
    )
    again = await here.client.post(
        path_of(queued["url"]), json={"a": 1}, headers={"x-flowdeck-delivery": "d-1"}
    )
    result = await here.client.post(path_of(waits["url"]), json={"b": 2})
    unknown = await here.client.post("/hooks/" + "x" * 43, json={})
    not_json = await here.client.post(
        path_of(queued["url"]), content=b"a=1", headers={"content-type": "text/plain"}
    )
    await finished(here, 2)
    after = await scrape(here.client)

    statuses = [r.status_code for r in (first, again, result, unknown, not_json)]
    assert statuses == [202, 202, 200, 404, 415]
    assert again.json()["duplicate"] is True
    outcomes = {
        outcome: delta(before, after, "flowdeck_webhook_deliveries_total", outcome=outcome)
        for outcome in (
            "ACCEPTED",
            "DUPLICATE",
            "COMPLETED",
            "NOT_FOUND",
            "UNSUPPORTED_MEDIA_TYPE",
            "RATE_LIMITED",
        )
    }
    assert outcomes == {
        "ACCEPTED": 1,
        "DUPLICATE": 1,
        "COMPLETED": 1,
        "NOT_FOUND": 1,
        "UNSUPPORTED_MEDIA_TYPE": 1,
        "RATE_LIMITED": 0,
    }
    assert (
        delta(before, after, "flowdeck_runs_finished_total", status="SUCCEEDED", trigger="WEBHOOK")
        == 2
    )


# --- a worker process and an API process -----------------------------------------------


def scrape_url(base: str) -> Samples:
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    return parse(response.text)


@pytest.fixture
def processes(database_url: str) -> Iterator[Processes]:
    # The API queues, workers drive: what each process counts is its own.
    pool = Processes(database_url, FLOWDECK_INLINE_RUNS="0")
    yield pool
    pool.stop_all()


def wait_healthy(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"{base}/healthz", timeout=1)
            assert response.json() == {"status": "ok"}
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"{base}/healthz never answered"
            time.sleep(0.1)


async def test_a_worker_process_serves_the_metrics_of_the_runs_it_drove(
    factory: Factory, processes: Processes, upstream: LocalHTTP
) -> None:
    _, api = processes.api()
    port = free_port()
    worker = processes.start(metrics_port=port)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base)
    owner = await factory.owner()
    chain = await create_workflow(factory, owner, CHAIN)
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        remote = Factory(factory.engine, client)
        api_before, worker_before = await scrape(client), scrape_url(base)

        # Queued while the worker is stopped: the API reads the queue from the database.
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            run_ids = [
                (await execute(remote, owner, chain, {"n": n}))["run"]["id"] for n in range(2)
            ]
            await asyncio.sleep(0.3)
            waiting = await scrape(client)
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        await finished(factory, 2)
        api_after, worker_after = await scrape(client), scrape_url(base)

    assert len(set(run_ids)) == 2
    assert value(waiting, "flowdeck_queue_depth") == 2
    assert 0.3 <= value(waiting, "flowdeck_queue_oldest_age_seconds") < 30
    assert value(api_after, "flowdeck_queue_depth") == 0
    # The worker drove both; the API process none.
    assert (
        delta(
            worker_before,
            worker_after,
            "flowdeck_runs_finished_total",
            status="SUCCEEDED",
            trigger="MANUAL",
        )
        == 2
    )
    assert (
        delta(
            api_before,
            api_after,
            "flowdeck_runs_finished_total",
            status="SUCCEEDED",
            trigger="MANUAL",
        )
        == 0
    )
    assert (
        delta(
            worker_before,
            worker_after,
            "flowdeck_run_duration_seconds_count",
            status="SUCCEEDED",
            trigger="MANUAL",
        )
        == 2
    )
    assert delta(worker_before, worker_after, "flowdeck_run_claims_total", path="job") == 2
    assert delta(worker_before, worker_after, "flowdeck_run_claims_total", path="inline") == 0
    for node_type in ("trigger", "transform.set", "output"):
        assert (
            delta(
                worker_before,
                worker_after,
                "flowdeck_step_duration_seconds_count",
                node_type=node_type,
                status="SUCCEEDED",
            )
            == 2
        )
    assert (
        delta(
            api_before,
            api_after,
            "flowdeck_graphql_operations_total",
            type="mutation",
            outcome="ok",
        )
        == 2
    )
    assert value(worker_after, "flowdeck_db_pool_max", pool="jobs") == 6  # concurrency 4 + 2
    assert value(worker_after, "flowdeck_queue_depth") == 0
    assert delta(worker_before, worker_after, "flowdeck_event_loop_lag_seconds_count") > 0


async def test_a_run_resumed_after_its_worker_was_killed_is_counted_by_its_new_worker(
    factory: Factory, processes: Processes, upstream: LocalHTTP
) -> None:
    calls = {"n": 0}

    async def slow_first(request: Request) -> Response:
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.sleep(10)  # the doomed worker's call: it dies waiting
        return JSONResponse({"ok": True})

    upstream.routes["/slow"] = slow_first
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"),
        node("call", "http.request", url=upstream.url("/slow")),
        node("out", "output", value="{{ input.body.ok }}"),
        handle="out",
    )
    workflow_id = await create_workflow(factory, owner, graph)
    doomed = processes.start()
    run_id = (await execute(factory, owner, workflow_id))["run"]["id"]
    await wait_step(factory, owner, run_id, "call", "RUNNING")
    doomed.kill()
    doomed.wait()

    port = free_port()
    processes.start(metrics_port=port)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base)
    await finished(factory, 1, timeout=30)
    samples = scrape_url(base)

    (run,) = await factory.rows("SELECT status, attempt, crashes FROM runs")
    assert run["status"] == "SUCCEEDED"
    # The new worker's claims: all but the doomed worker's one. Each found the run left
    # mid-step (once, unless a loaded machine made it miss its own heartbeats too).
    assert run["crashes"] >= 1
    assert value(samples, "flowdeck_run_resumes_total", reason="crash") == run["crashes"]
    assert value(samples, "flowdeck_run_resumes_total", reason="wake") == 0
    assert value(samples, "flowdeck_run_claims_total", path="job") == run["attempt"] - 1
    assert value(samples, "flowdeck_runs_finished_total", status="SUCCEEDED", trigger="MANUAL") == 1
    assert (
        value(
            samples,
            "flowdeck_step_duration_seconds_count",
            node_type="http.request",
            status="SUCCEEDED",
        )
        == 1
    )


def test_a_worker_whose_metrics_port_is_taken_stops_at_once(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = Processes(database_url).env
        started = time.monotonic()
        done = run_flowdeck(env, "worker", "--metrics-port", str(port), timeout=30)

    assert time.monotonic() - started < 5
    assert done.returncode == 1
    assert done.stderr == (
        f"error: 127.0.0.1:{port} is already in use (another Flowdeck, or another program).\n"
        f"Choose another port for this worker's /metrics: flowdeck worker --metrics-port "
        f"{port + 1}, or set FLOWDECK_WORKER_METRICS_PORT={port + 1} (0 turns it off).\n"
    )


@dataclass
class Endpoint:
    """Where a subscription connects (what tests.live.Subscription reads of a stack)."""

    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"


async def test_open_subscriptions_and_sockets_are_gauged_while_they_last(
    factory: Factory, processes: Processes
) -> None:
    _, api = processes.api()
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, CHAIN)
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        remote = Factory(factory.engine, client)
        run_id = (await execute(remote, owner, workflow_id, {"n": 1}))["run"]["id"]
        idle = await scrape(client)
        following = progress(Endpoint(int(api.rsplit(":", 1)[1])), owner.token, run_id)  # type: ignore[arg-type]
        await following.until(lambda events: len(events) == 1)
        open_ = await scrape(client)
        processes.start()
        events = await following.finish()
        deadline = time.monotonic() + 10
        while True:
            closed = await scrape(client)
            if value(closed, "flowdeck_websocket_connections") == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)

    assert [e["type"] for e in events][-1] == "RUN_SUCCEEDED"
    assert value(idle, "flowdeck_subscriptions_active", field="runProgress") == 0
    assert value(idle, "flowdeck_websocket_connections") == 0
    assert value(open_, "flowdeck_subscriptions_active", field="runProgress") == 1
    assert value(open_, "flowdeck_subscriptions_active", field="workflowRuns") == 0
    assert value(open_, "flowdeck_websocket_connections") == 1
    assert value(closed, "flowdeck_subscriptions_active", field="runProgress") == 0
    assert value(closed, "flowdeck_websocket_connections") == 0
    assert (
        delta(idle, closed, "flowdeck_graphql_operations_total", type="subscription", outcome="ok")
        == 1
    )


def finished_in_files(directory: Path) -> dict[str, float]:
    """Runs counted SUCCEEDED in each process's counter file of a multiprocess directory."""
    counted = {}
    for path in directory.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        counted[path.name] = sum(
            count
            for key, count, *_ in values
            if '"flowdeck_runs_finished_total"' in key and '"SUCCEEDED"' in key
        )
    return counted


async def test_api_processes_sharing_a_port_answer_every_scrape_with_their_sum(
    factory: Factory, database_url: str, tmp_path: Path
) -> None:
    # Runs driven where they were queued: each in whichever process took the request. The
    # processes' files go where the test can read them (else a directory made for the run).
    shared = Processes(database_url, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    port = free_port()
    supervisor = shared._spawn("serve", "--no-worker", "--processes", "2", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        deadline = time.monotonic() + 30
        while len(pair := api_processes(supervisor.pid)) < 2:
            assert time.monotonic() < deadline, "the supervisor did not start two processes"
            await asyncio.sleep(0.1)
        owner = await factory.owner()
        chain = await create_workflow(factory, owner, CHAIN)

        async def run_once(n: int) -> None:
            # A connection each: the processes accept from one socket
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                remote = Factory(factory.engine, client)
                assert (await execute(remote, owner, chain, {"n": n}))["userErrors"] == []

        # The kernel does not deal connections in turn (one process took all of 60 runs in
        # one CI run): each process in turn is paused while the other takes three runs and
        # drives them to the end, then a scrape, which the other process must answer.
        runs = 0
        for stopped in pair:
            with paused(stopped):
                await asyncio.gather(*(run_once(runs + i) for i in range(3)))
                runs += 3
                await finished(factory, runs)
        scrapes = []
        for stopped in pair:
            with paused(stopped):
                scrapes += [scrape_url(base) for _ in range(3)]
    finally:
        shared.stop_all()

    # Each process counted its own runs...
    finished_by_process = finished_in_files(tmp_path)
    # (the supervisor's own file counts none)
    assert {name: count for name, count in finished_by_process.items() if count} == {
        f"counter_{process.pid}.db": 3 for process in pair
    }
    # ... and every scrape, whichever process answers it, says the sum.
    for samples in scrapes:
        assert (
            value(samples, "flowdeck_runs_finished_total", status="SUCCEEDED", trigger="MANUAL")
            == runs
        )
        assert value(samples, "flowdeck_run_claims_total", path="inline") == runs
        assert (
            value(
                samples,
                "flowdeck_step_duration_seconds_count",
                node_type="trigger",
                status="SUCCEEDED",
            )
            == runs
        )
        assert (
            value(samples, "flowdeck_graphql_operations_total", type="mutation", outcome="ok")
            == runs
        )
        assert value(samples, "flowdeck_runs_driving") == 0
        assert value(samples, "flowdeck_queue_depth") == 0
