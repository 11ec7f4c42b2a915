"""Live run progress with real clients against a real API process and a separate worker.

The API runs as `flowdeck serve --no-worker` and one worker as `flowdeck worker`, both real
processes on the test database, started once for this module. Subscribers speak
graphql-transport-ws (gql with its websockets transport, or the websockets library for the
low-level cases) and graphql-sse (httpx streaming). Timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from schema.ids import decode_id, encode_id
from tests.conftest import TEST_SECRET_KEY
from tests.factories import Account, Factory
from tests.runs import create_workflow, execute, flow, node, read_run, steps_by_node, wait_for
from tests.servers import LocalHTTP
from tests.webhooks.helpers import GREETING, hooked_workflow, signed

FLOWDECK = str(Path(sys.executable).with_name("flowdeck"))
MAX_CONNECTIONS_PER_USER = 5
SLOW_SUBSCRIBER_SECONDS = 2
MAX_SUBSCRIPTIONS_PER_CONNECTION = 8
ALLOWED_ORIGIN = "https://builder.example"
PROTOCOL = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL  # "graphql-transport-ws" in gql 4
TERMINAL_TYPES = {"RUN_SUCCEEDED", "RUN_FAILED", "RUN_CANCELLED"}
STATUS_ORDER = {"QUEUED": 0, "RUNNING": 1, "SUCCEEDED": 2, "FAILED": 2, "CANCELLED": 2}

RUN_PROGRESS = """subscription RunProgress($runId: ID!, $afterSeq: Int) {
  runProgress(runId: $runId, afterSeq: $afterSeq) {
    seq type at runStatus nodeId stepStatus attempt output error
  }
}"""
WORKFLOW_RUNS = """subscription WorkflowRuns($workflowId: ID!) {
  workflowRuns(workflowId: $workflowId) {
    id status trigger queuedAt startedAt finishedAt
  }
}"""
CANCEL = "mutation($id: ID!) { runCancel(id: $id) { run { id status } userErrors { code } } }"


# --- the processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Stack:
    """The API process and the worker process."""

    port: int
    api: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    logs: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @contextlib.contextmanager
    def worker_paused(self) -> Iterator[None]:
        """SIGSTOP the worker for the block (kept well under the stalled-worker limit)."""
        os.kill(self.worker.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.worker.pid, signal.SIGCONT)

    def api_log(self) -> str:
        """What the API process has logged so far."""
        return (self.logs / "api.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, process in (("api", self.api), ("worker", self.worker)):
            assert process.poll() is None, f"{name} exited; see {self.logs}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(
    database_url: str, engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """`flowdeck serve --no-worker` and `flowdeck worker`, on the test database."""
    logs = tmp_path_factory.mktemp("event-stack")
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "DATABASE_URL")}
    env.update(
        DATABASE_URL=database_url,
        FLOWDECK_OUTBOUND_ALLOW="127.0.0.1/32",
        FLOWDECK_WORKER_HEARTBEAT_SECONDS="0.3",
        FLOWDECK_WORKER_STALLED_SECONDS="1.5",
        FLOWDECK_LOG_LEVEL="WARNING",
        FLOWDECK_MAX_CONNECTIONS_PER_USER=str(MAX_CONNECTIONS_PER_USER),
        FLOWDECK_MAX_SUBSCRIPTIONS_PER_CONNECTION=str(MAX_SUBSCRIPTIONS_PER_CONNECTION),
        FLOWDECK_ALLOWED_ORIGINS=ALLOWED_ORIGIN,
        FLOWDECK_SLOW_SUBSCRIBER_SECONDS=str(SLOW_SUBSCRIBER_SECONDS),
        FLOWDECK_SECRET_KEY=TEST_SECRET_KEY,
    )
    port = free_port()
    api_log = (logs / "api.log").open("wb")
    worker_log = (logs / "worker.log").open("wb")
    api = subprocess.Popen(
        [FLOWDECK, "serve", "--no-worker", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=api_log,
    )
    worker = subprocess.Popen(
        [FLOWDECK, "worker", "--concurrency", "8"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=worker_log,
    )
    started = Stack(port, api, worker, logs)
    try:
        deadline = time.monotonic() + 60
        while True:
            started.check_alive()
            try:
                if httpx.get(f"{started.http_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "flowdeck serve did not answer /healthz"
            time.sleep(0.1)
        yield started
    finally:
        _stop(worker)
        _stop(api)
        api_log.close()
        worker_log.close()


@pytest.fixture
async def api(stack: Stack, engine: AsyncEngine) -> AsyncIterator[Factory]:
    """A Factory whose GraphQL goes over HTTP to the API process (rows via the test engine)."""
    stack.check_alive()
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        yield Factory(engine, client)


@pytest.fixture(autouse=True)
async def quiet_runs(stack: Stack, engine: AsyncEngine) -> AsyncIterator[None]:
    """After each test, wait until no run is in flight (the next test truncates the tables
    under the worker)."""
    yield
    stack.check_alive()
    query = text(
        "SELECT (SELECT count(*) FROM runs WHERE status IN ('QUEUED', 'RUNNING'))"
        " + (SELECT count(*) FROM procrastinate_jobs WHERE status IN ('doing', 'aborting'))"
    )
    async with asyncio.timeout(30):
        while True:
            async with engine.connect() as conn:
                if not await conn.scalar(query):
                    return
            await asyncio.sleep(0.05)


@pytest.fixture
def local_http() -> Iterator[LocalHTTP]:
    async def unavailable(request: Request) -> Response:
        return JSONResponse({"error": "down for maintenance"}, status_code=503)

    server = LocalHTTP(routes={"/down": unavailable}).start()
    yield server
    server.stop()


# --- clients ------------------------------------------------------------------------------


def ws_transport(stack: Stack, token: str) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=stack.ws_url,
        subprotocols=[PROTOCOL],
        init_payload={"Authorization": f"Bearer {token}"},
    )


class Subscription:
    """One gql subscription (its own socket) running in the background, collecting results."""

    def __init__(self, stack: Stack, token: str, document: str, variables: dict[str, Any]) -> None:
        self.stack, self.token, self.document, self.variables = stack, token, document, variables
        self.results: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.completed = False
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async with Client(transport=ws_transport(self.stack, self.token)) as session:
                request = GraphQLRequest(self.document, variable_values=self.variables)
                async for data in session.subscribe(request):
                    self.received_at.append(time.time())
                    self.results.append(next(iter(data.values())))
                    self._changed.set()
            self.completed = True
        except Exception as error:
            self.error = error
        finally:
            self._changed.set()

    async def until(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20
    ) -> None:
        """Wait until the results so far satisfy ``predicate`` (hang guard: ``timeout``)."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                if predicate(self.results):
                    return
                if self.task.done():
                    raise AssertionError(
                        f"subscription ended first (error {self.error!r}): {self.results}"
                    )
                await self._changed.wait()

    async def finish(self, timeout: float = 20) -> list[dict[str, Any]]:
        """The results once the server completed the subscription."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self.task)
        if self.error is not None:
            raise self.error
        assert self.completed
        return self.results

    async def cancel(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def progress(stack: Stack, token: str, run_id: str, after_seq: int | None = None) -> Subscription:
    return Subscription(stack, token, RUN_PROGRESS, {"runId": run_id, "afterSeq": after_seq})


async def progress_events(
    stack: Stack,
    token: str,
    run_id: str,
    after_seq: int | None = None,
    *,
    take: int | None = None,
    timeout: float = 20,
) -> list[dict[str, Any]]:
    """Subscribe on a new socket; all events until complete, or the first ``take`` of them
    (then the socket is dropped)."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout), Client(transport=ws_transport(stack, token)) as session:
        request = GraphQLRequest(
            RUN_PROGRESS, variable_values={"runId": run_id, "afterSeq": after_seq}
        )
        async for data in session.subscribe(request):
            events.append(data["runProgress"])
            if take is not None and len(events) >= take:
                break
    return events


@dataclass
class SSEResult:
    frames: list[dict[str, Any]]
    completed: bool
    status: int
    content_type: str


async def sse(
    stack: Stack,
    query: str,
    variables: dict[str, Any],
    token: str | None,
    timeout: float = 20,
) -> SSEResult:
    """A graphql-sse (distinct connections) client: POST, then read `next`/`complete` events."""
    headers = {"accept": "text/event-stream"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    frames: list[dict[str, Any]] = []
    completed = False
    event_name: str | None = None
    data_lines: list[str] = []
    async with (
        asyncio.timeout(timeout),
        httpx.AsyncClient(timeout=timeout) as client,
        client.stream(
            "POST",
            f"{stack.http_url}/graphql",
            json={"query": query, "variables": variables},
            headers=headers,
        ) as response,
    ):
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            await response.aread()
            return SSEResult([response.json()], False, response.status_code, content_type)
        async for line in response.aiter_lines():
            if line == "":  # end of one event
                if event_name == "next":
                    frames.append(json.loads("\n".join(data_lines)))
                elif event_name == "complete":
                    completed = True
                    break
                event_name, data_lines = None, []
            elif line.startswith(":"):
                continue  # a comment: the heartbeat
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event_name = value
                elif name == "data":
                    data_lines.append(value)
    return SSEResult(frames, completed, response.status_code, content_type)


async def raw_socket(
    stack: Stack,
    payload: dict[str, Any] | None,
    *,
    origin: str | None = None,
    **options: Any,
) -> ClientConnection:
    """A graphql-transport-ws socket after connection_init (ack not awaited)."""
    ws = await connect(
        stack.ws_url,
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
        origin=origin,  # type: ignore[arg-type]
        open_timeout=10,
        close_timeout=2,
        **options,
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
    return ws


async def acked_socket(stack: Stack, token: str) -> ClientConnection:
    ws = await raw_socket(stack, {"Authorization": f"Bearer {token}"})
    async with asyncio.timeout(10):
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    return ws


async def close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server closes the socket; its close code."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await ws.recv()
                raise AssertionError(f"expected a close, got {message!r}")
    return ws.close_code


# --- graphs and the event log -------------------------------------------------------------


def parallel_graph() -> dict[str, Any]:
    """trigger → two transform.set nodes in parallel → logic.merge → output."""
    return flow(
        node("t", "trigger"),
        node("a", "transform.set", fields={"side": "a", "n": 1}),
        node("b", "transform.set", fields={"side": "b", "n": 2}),
        node("m", "logic.merge"),
        node("out", "output", value="{{ input }}"),
        edges="t->a, t->b, a->m, b->m, m->out",
        handle="out",
    )


PARALLEL_OUTPUT = {"a": {"side": "a", "n": 1}, "b": {"side": "b", "n": 2}}


def delay_chain(seconds: float, count: int) -> dict[str, Any]:
    """trigger → ``count`` flow.delay nodes in a row → output."""
    delays = [node(f"d{i}", "flow.delay", seconds=seconds) for i in range(1, count + 1)]
    return flow(node("t", "trigger"), *delays, node("out", "output", value="done"), handle="out")


async def event_log(engine: AsyncEngine, run_id: str) -> list[dict[str, Any]]:
    """The run's events as stored, in the API's field names (without `at`)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT seq, type, run_status, node_id, step_status, attempt, output, error"
                    " FROM run_events WHERE run_id = :id ORDER BY seq"
                ),
                {"id": decode_id("Run", run_id)},
            )
        ).all()
    return [
        {
            "seq": row.seq,
            "type": str(row.type),
            "runStatus": row.run_status and str(row.run_status),
            "nodeId": row.node_id,
            "stepStatus": row.step_status and str(row.step_status),
            "attempt": row.attempt,
            "output": row.output,
            "error": row.error,
        }
        for row in rows
    ]


def without_at(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in event.items() if k != "at"} for event in events]


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]


def types_of(events: list[dict[str, Any]], node_id: str) -> list[str]:
    return [event["type"] for event in events if event["nodeId"] == node_id]


def has(type_: str, node_id: str | None = None) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(
        e["type"] == type_ and (node_id is None or e["nodeId"] == node_id) for e in events
    )


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"]).timestamp()


async def start(api: Factory, owner: Account, graph: dict[str, Any]) -> str:
    workflow_id = await create_workflow(api, owner, graph, name=f"Flow {uuid.uuid4().hex[:8]}")
    return (await execute(api, owner, workflow_id))["run"]["id"]


# --- 1. a run with a parallel branch --------------------------------------------------------


async def test_websocket_subscriber_gets_every_event_of_a_parallel_run_in_order(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a workflow with a parallel branch, executed
    owner = await api.owner()
    run_id = await start(api, owner, parallel_graph())

    # when subscribing right away
    events = await progress_events(stack, owner.token, run_id)

    # then every event arrives once, in seq order, ending with RUN_SUCCEEDED, then complete
    assert seqs(events) == list(range(1, len(events) + 1))
    assert [e["type"] for e in events[:2]] == ["RUN_QUEUED", "RUN_STARTED"]
    assert events[0]["runStatus"] == "QUEUED"
    assert events[1]["runStatus"] == "RUNNING"
    last = events[-1]
    assert last["type"] == "RUN_SUCCEEDED"
    assert last["runStatus"] == "SUCCEEDED"
    assert last["output"] == PARALLEL_OUTPUT
    assert sum(e["type"] in TERMINAL_TYPES for e in events) == 1
    for node_id in ("t", "a", "b", "m", "out"):
        assert types_of(events, node_id) == ["STEP_STARTED", "STEP_SUCCEEDED"], node_id
    # the merge starts only after both branches succeeded
    position = {(e["type"], e["nodeId"]): e["seq"] for e in events}
    assert position[("STEP_STARTED", "m")] > position[("STEP_SUCCEEDED", "a")]
    assert position[("STEP_STARTED", "m")] > position[("STEP_SUCCEEDED", "b")]
    assert len(events) == 2 + 2 * 5 + 1

    # and they agree with the run's final steps and with the stored log
    run = await read_run(api, owner, run_id)
    assert run["status"] == "SUCCEEDED"
    assert run["output"] == PARALLEL_OUTPUT
    steps = steps_by_node(run)
    for event in events:
        if event["type"] == "STEP_SUCCEEDED":
            step = steps[event["nodeId"]]
            assert event["stepStatus"] == step["status"] == "SUCCEEDED"
            assert event["output"] == step["output"]
            assert event["attempt"] == step["attempt"] == 1
            assert event["error"] is None
    assert without_at(events) == await event_log(engine, run_id)
    assert [at(e) for e in events] == sorted(at(e) for e in events)


# --- 2. late subscribe --------------------------------------------------------------------


async def test_late_subscriber_after_the_end_gets_the_full_history_then_complete(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a run that has finished
    owner = await api.owner()
    run_id = await start(api, owner, parallel_graph())
    await wait_for(api, owner, run_id)

    # when subscribing now
    events = await progress_events(stack, owner.token, run_id)

    # then the whole log is replayed, then the subscription completes
    stored = await event_log(engine, run_id)
    assert without_at(events) == stored
    assert seqs(events) == list(range(1, 14))
    assert events[-1]["type"] == "RUN_SUCCEEDED"


async def test_mid_run_subscriber_gets_history_then_the_live_tail_without_gaps(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a run in the middle of a 1 s delay
    owner = await api.owner()
    run_id = await start(api, owner, delay_chain(1.0, 1))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while steps_by_node(await read_run(api, owner, run_id))["d1"]["status"] != "RUNNING":
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    history = await event_log(engine, run_id)

    # when subscribing then
    subscribed_at = time.time()
    events = await progress_events(stack, owner.token, run_id)

    # then the history comes first, then the live events, seq 1..N with nothing missing
    assert without_at(events[: len(history)]) == history
    assert (history[-1]["type"], history[-1]["nodeId"]) == ("STEP_STARTED", "d1")
    live = events[len(history) :]
    assert [(e["type"], e["nodeId"]) for e in live] == [
        ("STEP_SUCCEEDED", "d1"),
        ("STEP_STARTED", "out"),
        ("STEP_SUCCEEDED", "out"),
        ("RUN_SUCCEEDED", None),
    ]
    assert all(at(e) > subscribed_at for e in live)  # really live, not replayed
    assert without_at(events) == await event_log(engine, run_id)
    assert seqs(events) == list(range(1, len(events) + 1))


# --- 3. reconnect with afterSeq -----------------------------------------------------------


async def test_reconnect_with_after_seq_gets_exactly_the_rest(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a subscriber of a running run that saw the first 5 events, then lost its socket
    owner = await api.owner()
    run_id = await start(api, owner, delay_chain(0.3, 3))
    first = await progress_events(stack, owner.token, run_id, take=5)
    assert seqs(first) == [1, 2, 3, 4, 5]

    # when it resubscribes with afterSeq = 5
    rest = await progress_events(stack, owner.token, run_id, after_seq=5)

    # then it gets exactly the events after 5, and the two parts are the whole log
    assert seqs(rest) == list(range(6, 6 + len(rest)))
    assert rest[-1]["type"] == "RUN_SUCCEEDED"
    assert without_at(first + rest) == await event_log(engine, run_id)

    # and resuming from the last seq, or just before it, of a finished run
    total = len(first) + len(rest)
    assert await progress_events(stack, owner.token, run_id, after_seq=total) == []
    tail = await progress_events(stack, owner.token, run_id, after_seq=total - 1)
    assert without_at(tail) == without_at(rest[-1:])


# --- 4. retries then failure ---------------------------------------------------------------


async def test_failing_node_with_retries_streams_retrying_failed_and_run_failed(
    api: Factory, stack: Stack, engine: AsyncEngine, local_http: LocalHTTP
) -> None:
    # given a node calling a server that answers 503, with 3 attempts
    owner = await api.owner()
    graph = flow(
        node("t", "trigger"),
        node(
            "call",
            "http.request",
            url=local_http.url("/down"),
            retry={"maxAttempts": 3, "backoffSeconds": 0.05},
        ),
        node("out", "output", value="{{ input.body }}"),
        handle="out",
    )
    run_id = await start(api, owner, graph)

    # when subscribing
    events = await progress_events(stack, owner.token, run_id)

    # then the attempts, the failure and the run's failure come in order
    call = [(e["type"], e["attempt"]) for e in events if e["nodeId"] == "call"]
    assert call == [
        ("STEP_STARTED", 1),
        ("STEP_RETRYING", 1),
        ("STEP_STARTED", 2),
        ("STEP_RETRYING", 2),
        ("STEP_STARTED", 3),
        ("STEP_FAILED", 3),
    ]
    retrying = [e for e in events if e["type"] == "STEP_RETRYING"]
    assert all(e["error"] and "503" in e["error"] for e in retrying), retrying
    failed = next(e for e in events if e["type"] == "STEP_FAILED")
    assert failed["stepStatus"] == "FAILED"
    assert "503" in failed["error"]
    assert types_of(events, "out") == ["STEP_CANCELLED"]
    last = events[-1]
    assert last["type"] == "RUN_FAILED"
    assert last["runStatus"] == "FAILED"
    assert '"call"' in last["error"]
    assert seqs(events) == list(range(1, len(events) + 1))
    assert without_at(events) == await event_log(engine, run_id)

    run = await read_run(api, owner, run_id)
    assert run["status"] == "FAILED"
    assert run["errorNodeId"] == "call"
    assert last["error"] == run["error"]
    step = steps_by_node(run)["call"]
    assert (step["status"], step["attempt"], step["error"]) == (
        "FAILED",
        3,
        failed["error"],
    )
    assert local_http.count("/down") == 3


# --- 5. cancelled run -----------------------------------------------------------------------


async def test_cancelled_run_streams_step_cancelled_then_run_cancelled_last(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a subscriber of a run waiting in a 20 s delay
    owner = await api.owner()
    run_id = await start(api, owner, delay_chain(20, 1))
    subscriber = progress(stack, owner.token, run_id)
    await subscriber.until(has("STEP_STARTED", "d1"))

    # when the run is cancelled
    body = await api.gql(CANCEL, {"id": run_id}, token=owner.token)
    assert body["data"]["runCancel"] == {
        "run": {"id": run_id, "status": "CANCELLED"},
        "userErrors": [],
    }

    # then the open steps are cancelled, RUN_CANCELLED comes last, then complete
    events = await subscriber.finish()
    tail = [(e["type"], e["nodeId"]) for e in events if e["seq"] > 5]
    assert tail == [
        ("STEP_CANCELLED", "d1"),
        ("STEP_CANCELLED", "out"),
        ("RUN_CANCELLED", None),
    ]
    assert events[-1]["runStatus"] == "CANCELLED"
    assert seqs(events) == list(range(1, len(events) + 1))
    assert without_at(events) == await event_log(engine, run_id)
    run = await wait_for(api, owner, run_id)
    assert {s["nodeId"]: s["status"] for s in run["steps"]} == {
        "t": "SUCCEEDED",
        "d1": "CANCELLED",
        "out": "CANCELLED",
    }


async def job_settled(engine: AsyncEngine, run_id: str) -> None:
    """Wait until the run's queue job is no longer being worked on (hang guard)."""
    query = text(
        "SELECT j.status FROM runs r JOIN procrastinate_jobs j ON j.id = r.job_id WHERE r.id = :id"
    )
    async with asyncio.timeout(10):
        while True:
            async with engine.connect() as conn:
                status = await conn.scalar(query, {"id": decode_id("Run", run_id)})
            if str(status) not in ("todo", "doing", "aborting"):
                return
            await asyncio.sleep(0.05)


async def test_cancel_while_the_worker_is_unresponsive_still_ends_every_stream_with_run_cancelled(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a subscriber of a run held by a worker in a 20 s delay, and that worker paused
    owner = await api.owner()
    run_id = await start(api, owner, delay_chain(20, 1))
    early = progress(stack, owner.token, run_id)
    await early.until(has("STEP_STARTED", "d1"))
    late: Subscription | None = None
    try:
        with stack.worker_paused():
            # when the run is cancelled, and another subscriber connects right after
            body = await api.gql(CANCEL, {"id": run_id}, token=owner.token)
            assert body["data"]["runCancel"]["run"]["status"] == "CANCELLED"
            late = progress(stack, owner.token, run_id)
            await late.until(lambda events: len(events) >= 5)
            # then neither stream may complete without the terminal event (whoever appends it)
            for subscriber in (early, late):
                if subscriber.task.done():
                    assert subscriber.results[-1]["type"] == "RUN_CANCELLED", subscriber.results
        events = await late.finish()
        assert events[-1]["type"] == "RUN_CANCELLED"
        assert [e["type"] for e in events[5:]] == [
            "STEP_CANCELLED",
            "STEP_CANCELLED",
            "RUN_CANCELLED",
        ]
        assert await early.finish() == events
        # and once the resumed worker has let go of the run, nothing came after RUN_CANCELLED
        await job_settled(engine, run_id)
        assert without_at(events) == await event_log(engine, run_id)
        run = await read_run(api, owner, run_id)
        assert run["status"] == "CANCELLED"
        assert {s["nodeId"]: s["status"] for s in run["steps"]} == {
            "t": "SUCCEEDED",
            "d1": "CANCELLED",
            "out": "CANCELLED",
        }
    finally:
        for subscriber in (early, late):
            if subscriber is not None:
                await subscriber.cancel()


async def test_cancelling_a_queued_run_streams_its_steps_cancelled_and_nothing_after(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a run still queued (no worker has taken it)
    owner = await api.owner()
    with stack.worker_paused():
        run_id = await start(api, owner, parallel_graph())
        # when it is cancelled
        body = await api.gql(CANCEL, {"id": run_id}, token=owner.token)
        assert body["data"]["runCancel"]["run"]["status"] == "CANCELLED"
    events = await progress_events(stack, owner.token, run_id)

    # then: queued, every step cancelled, the run cancelled; and the worker, back, adds nothing
    assert [(e["type"], e["nodeId"]) for e in events] == [
        ("RUN_QUEUED", None),
        ("STEP_CANCELLED", "t"),
        ("STEP_CANCELLED", "a"),
        ("STEP_CANCELLED", "b"),
        ("STEP_CANCELLED", "m"),
        ("STEP_CANCELLED", "out"),
        ("RUN_CANCELLED", None),
    ]
    await job_settled(engine, run_id)
    assert without_at(events) == await event_log(engine, run_id)


# --- 6. tenancy -------------------------------------------------------------------------------


async def test_another_workspaces_run_is_not_found_like_a_missing_one(
    api: Factory, stack: Stack
) -> None:
    # given a run of workspace A and a user of workspace B
    owner = await api.owner("A")
    stranger = await api.owner("B")
    workflow_id = await create_workflow(api, owner, parallel_graph())
    run_id = (await execute(api, owner, workflow_id))["run"]["id"]

    errors: dict[str, Any] = {}
    for name, target in {
        "foreign": run_id,
        "missing": encode_id("Run", uuid.uuid4()),
        "garbage": "not-an-id",
    }.items():
        # when B subscribes to it
        with pytest.raises(TransportQueryError) as caught:
            await progress_events(stack, stranger.token, target)
        errors[name] = caught.value.errors

    await wait_for(api, owner, run_id)
    workflow_error = None
    try:
        async with Client(transport=ws_transport(stack, stranger.token)) as session:
            request = GraphQLRequest(WORKFLOW_RUNS, variable_values={"workflowId": workflow_id})
            async with asyncio.timeout(10):
                async for _ in session.subscribe(request):
                    pass
    except TransportQueryError as error:
        workflow_error = error.errors

    # then each reads "not found", the foreign one exactly like the missing one
    assert errors["foreign"] == errors["missing"]
    for name, found in errors.items():
        assert found is not None, name
        assert len(found) == 1, (name, found)
        assert found[0]["message"] == "Run not found.", (name, found)
    assert workflow_error is not None
    assert len(workflow_error) == 1, workflow_error
    assert workflow_error[0]["message"] == "Workflow not found."
    # with extensions.code NOT_FOUND, as the contract says for every top-level error
    codes = {
        name: [e.get("extensions", {}).get("code") for e in found]
        for name, found in [*errors.items(), ("workflowRuns", workflow_error)]
    }
    assert codes == {
        "foreign": ["NOT_FOUND"],
        "missing": ["NOT_FOUND"],
        "garbage": ["NOT_FOUND"],
        "workflowRuns": ["NOT_FOUND"],
    }


# --- 7. authentication on connect -----------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"Authorization": "Bearer fd_not_a_real_token"},
        {"token": "fd_not_a_real_token"},
        {},
    ],
    ids=["bad-bearer", "bad-token-key", "no-token"],
)
async def test_a_bad_token_in_connection_init_closes_the_socket_with_4403(
    api: Factory, stack: Stack, payload: dict[str, Any]
) -> None:
    ws = await raw_socket(stack, payload)
    assert await close_code(ws) == 4403


async def test_the_token_key_of_connection_init_signs_in_too(api: Factory, stack: Stack) -> None:
    owner = await api.owner()
    ws = await raw_socket(stack, {"token": owner.token})
    try:
        async with asyncio.timeout(10):
            assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    finally:
        await ws.close()


# --- 8. graphql-sse --------------------------------------------------------------------------


async def test_graphql_sse_streams_the_same_events_then_complete(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a run with a parallel branch
    owner = await api.owner()
    run_id = await start(api, owner, parallel_graph())

    # when subscribing over Server-Sent Events
    result = await sse(stack, RUN_PROGRESS, {"runId": run_id}, owner.token)

    # then every event arrives as `next`, and the stream ends with `complete`
    assert result.status == 200
    assert result.content_type.startswith("text/event-stream")
    assert result.completed
    assert all(set(frame) == {"data"} for frame in result.frames), result.frames
    events = [frame["data"]["runProgress"] for frame in result.frames]
    assert without_at(events) == await event_log(engine, run_id)
    assert seqs(events) == list(range(1, 14))
    assert events[-1]["type"] == "RUN_SUCCEEDED"
    assert events[-1]["output"] == PARALLEL_OUTPUT

    # and the same over graphql-transport-ws
    assert await progress_events(stack, owner.token, run_id) == events


async def test_graphql_sse_without_a_token_or_for_a_foreign_run_is_refused(
    api: Factory, stack: Stack
) -> None:
    owner = await api.owner("A")
    stranger = await api.owner("B")
    run_id = await start(api, owner, parallel_graph())

    anonymous = await sse(stack, RUN_PROGRESS, {"runId": run_id}, None)
    foreign = await sse(stack, RUN_PROGRESS, {"runId": run_id}, stranger.token)

    def codes(result: SSEResult) -> list[str]:
        return [
            error.get("extensions", {}).get("code")
            for frame in result.frames
            for error in frame.get("errors", [])
        ]

    await wait_for(api, owner, run_id)
    assert anonymous.completed
    assert foreign.completed
    assert all(frame.get("data") is None for frame in anonymous.frames + foreign.frames)
    assert codes(anonymous) == ["UNAUTHENTICATED"], anonymous
    assert codes(foreign) == ["NOT_FOUND"], foreign


# --- 9. a subscriber that never reads ------------------------------------------------------


def busy_graph(width: int, blob_chars: int) -> dict[str, Any]:
    """trigger → a node with a big string → ``width`` nodes copying it (big events)."""
    copies = [
        node(f"c{i}", "transform.set", fields={"blob": "{{ input.blob }}"}) for i in range(width)
    ]
    return flow(
        node("t", "trigger"),
        node("big", "transform.set", fields={"blob": "x" * blob_chars}),
        *copies,
        edges=", ".join(["t->big", *(f"big->c{i}" for i in range(width))]),
        handle="out",
    )


async def test_a_subscriber_that_never_reads_does_not_hold_up_the_others(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a socket subscribed to a busy run (megabytes of events) that never reads,
    # with a tiny receive buffer so the server's sends to it back up
    owner = await api.owner()
    busy_run = await start(api, owner, busy_graph(width=60, blob_chars=30_000))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", stack.port))
    sock.setblocking(False)
    stuck = await raw_socket(
        stack, {"Authorization": f"Bearer {owner.token}"}, sock=sock, max_queue=1
    )
    for i in range(MAX_SUBSCRIPTIONS_PER_CONNECTION):
        message = {
            "id": str(i),
            "type": "subscribe",
            "payload": {"query": RUN_PROGRESS, "variables": {"runId": busy_run}},
        }
        await stuck.send(json.dumps(message))
    await wait_for(api, owner, busy_run)
    try:
        # when other runs execute, followed by a subscriber on another connection
        workflow_id = await create_workflow(api, owner, parallel_graph(), name="Other")
        run_ids = [(await execute(api, owner, workflow_id))["run"]["id"] for _ in range(3)]
        runs = [progress(stack, owner.token, run_id) for run_id in run_ids]

        # then that subscriber gets every event of every run, promptly
        for run_id, subscriber in zip(run_ids, runs, strict=True):
            events = await subscriber.finish(timeout=15)
            assert without_at(events) == await event_log(engine, run_id)
            assert events[-1]["type"] == "RUN_SUCCEEDED"
        # and so does a late subscriber of the busy run itself
        busy = await progress_events(stack, owner.token, busy_run, timeout=15)
        assert without_at(busy) == await event_log(engine, busy_run)
    finally:
        assert stuck.transport is not None
        stuck.transport.abort()
    stack.check_alive()
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{stack.http_url}/healthz")).status_code == 200


def client_frame(payload: bytes) -> bytes:
    """A masked WebSocket text frame, as a client must send it (RFC 6455)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes([0x81, 0x80 | size])
    elif size < 65536:
        header = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stuck_subscriber(port: int, token: str, run_id: str, subscriptions: int) -> socket.socket:
    """A hand-made graphql-transport-ws client that subscribes, then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
    sock.sendall(client_frame(json.dumps(init).encode()))
    ack = sock.recv(64)  # the small connection_ack frame
    assert b"connection_ack" in ack, ack
    for i in range(subscriptions):
        message = {
            "id": str(i),
            "type": "subscribe",
            "payload": {"query": RUN_PROGRESS, "variables": {"runId": run_id}},
        }
        sock.sendall(client_frame(json.dumps(message).encode()))
    return sock


def read_until_closed(sock: socket.socket, seconds: float) -> bool:
    """Drain the socket; True when the server closed it within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(1 << 20):
            pass
    except TimeoutError:
        return False
    return True


async def test_a_subscriber_that_stopped_reading_is_disconnected(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a client that subscribes to a busy run (megabytes of events) and stops reading
    owner = await api.owner()
    busy_run = await start(api, owner, busy_graph(width=60, blob_chars=30_000))
    sock = await asyncio.to_thread(
        stuck_subscriber, stack.port, owner.token, busy_run, MAX_SUBSCRIPTIONS_PER_CONNECTION
    )
    try:
        await wait_for(api, owner, busy_run)
        # when its sends have stayed blocked past the limit
        await asyncio.sleep(SLOW_SUBSCRIBER_SECONDS + 3)
        # then the server ended the connection (reading on, the client reaches its end) well
        # before uvicorn's keepalive would (20 s pings), said
        # why in its log, and the events are all there to resume from
        assert await asyncio.to_thread(read_until_closed, sock, 10)
        assert "ending a WebSocket whose client stopped reading" in stack.api_log()
        events = await progress_events(stack, owner.token, busy_run, timeout=15)
        assert without_at(events) == await event_log(engine, busy_run)
    finally:
        sock.close()
    stack.check_alive()


# --- 10. the listener's connection killed mid-run ------------------------------------------


async def listener_pids(engine: AsyncEngine) -> set[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'flowdeck-listener'"
                " AND datname = current_database()"
            )
        )
        return {int(row.pid) for row in rows}


async def kill_listeners(engine: AsyncEngine) -> set[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pid, pg_terminate_backend(pid) AS killed FROM pg_stat_activity"
                " WHERE application_name = 'flowdeck-listener'"
                " AND datname = current_database()"
            )
        )
        killed = {int(row.pid) for row in rows if row.killed}
    assert killed, "no flowdeck-listener connection to kill"
    return killed


async def wait_new_listener(engine: AsyncEngine, killed: set[int]) -> None:
    async with asyncio.timeout(10):
        while not (await listener_pids(engine) - killed):
            await asyncio.sleep(0.05)


async def test_killing_the_listener_connection_mid_run_loses_no_event(
    api: Factory, stack: Stack, engine: AsyncEngine
) -> None:
    # given a subscriber of a run of four 0.3 s delays
    owner = await api.owner()
    run_id = await start(api, owner, delay_chain(0.3, 4))
    subscriber = progress(stack, owner.token, run_id)
    await subscriber.until(has("STEP_STARTED", "d1"))

    # when the API's LISTEN connection is terminated, twice, mid-run
    killed = await kill_listeners(engine)
    await subscriber.until(has("STEP_STARTED", "d2"))
    await wait_new_listener(engine, killed)
    killed |= await kill_listeners(engine)

    # then the subscriber still gets every event, the terminal one included
    events = await subscriber.finish()
    assert seqs(events) == list(range(1, len(events) + 1))
    assert without_at(events) == await event_log(engine, run_id)
    assert events[-1]["type"] == "RUN_SUCCEEDED"
    # promptly: woken by the reconnected listener, not by the 5 s fallback poll
    assert subscriber.received_at[-1] - at(events[-1]) < 2.0
    # and the listener is back
    await wait_new_listener(engine, killed)


async def set_connections_allowed(server_url: str, engine: AsyncEngine, allowed: bool) -> None:
    """Let new connections into the test database, or refuse them (from another database)."""
    async with engine.connect() as conn:
        name = await conn.scalar(text("SELECT current_database()"))
    flag = "true" if allowed else "false"
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {flag}')  # type: ignore[arg-type]


async def test_events_notified_while_the_listener_cannot_reconnect_are_caught_up(
    api: Factory, stack: Stack, engine: AsyncEngine, server_url: str
) -> None:
    # given a run in a 20 s delay, followed by runProgress and by workflowRuns
    owner = await api.owner()
    graph = flow(
        node("t", "trigger"),
        node("d", "flow.delay", seconds="{{ input.seconds }}"),
        node("out", "output", value="done"),
        handle="out",
    )
    workflow_id = await create_workflow(api, owner, graph)
    runs = Subscription(stack, owner.token, WORKFLOW_RUNS, {"workflowId": workflow_id})
    warm_up = (await execute(api, owner, workflow_id, {"seconds": 0.3}))["run"]["id"]
    await runs.until(lambda rs: (warm_up, "SUCCEEDED") in {(r["id"], r["status"]) for r in rs})
    run_id = (await execute(api, owner, workflow_id, {"seconds": 20}))["run"]["id"]
    subscriber = progress(stack, owner.token, run_id)
    await subscriber.until(has("STEP_STARTED", "d"))
    await runs.until(lambda rs: (run_id, "RUNNING") in {(r["id"], r["status"]) for r in rs})

    # when the database refuses new connections, the listener's is cut, and the run is
    # cancelled meanwhile (its NOTIFY reaches no listener), then connections come back
    await set_connections_allowed(server_url, engine, False)
    try:
        killed = await kill_listeners(engine)
        async with asyncio.timeout(10):
            while await listener_pids(engine):
                await asyncio.sleep(0.02)
        body = await api.gql(CANCEL, {"id": run_id}, token=owner.token)
        assert body["data"]["runCancel"]["run"]["status"] == "CANCELLED"
    finally:
        await set_connections_allowed(server_url, engine, True)
    await wait_new_listener(engine, killed)

    try:
        # then the run's subscriber gets the rest of its events
        events = await subscriber.finish(timeout=10)
        assert events[-1]["type"] == "RUN_CANCELLED"
        assert without_at(events) == await event_log(engine, run_id)
        # and the run list learns that the run was cancelled
        await runs.until(
            lambda rs: (run_id, "CANCELLED") in {(r["id"], r["status"]) for r in rs}, timeout=8
        )
    except TimeoutError:
        raise AssertionError(
            "no update after the listener came back; runProgress got "
            f"{[e['type'] for e in subscriber.results]}, workflowRuns got "
            f"{[(r['id'] == run_id, r['status']) for r in runs.results]}"
        ) from None
    finally:
        await subscriber.cancel()
        await runs.cancel()


# --- 11. the workflow's run list --------------------------------------------------------------


async def test_workflow_runs_streams_queued_running_and_succeeded(
    api: Factory, stack: Stack
) -> None:
    # given a subscriber of a workflow's runs, seen to be live with a first run
    owner = await api.owner()
    workflow_id = await create_workflow(api, owner, delay_chain(0.3, 1))
    runs = Subscription(stack, owner.token, WORKFLOW_RUNS, {"workflowId": workflow_id})
    warm_up = (await execute(api, owner, workflow_id))["run"]["id"]
    await runs.until(lambda rs: any(r["id"] == warm_up and r["status"] == "SUCCEEDED" for r in rs))
    seen_before = len(runs.results)

    # when two runs are executed (the worker paused until both are seen QUEUED)
    with stack.worker_paused():
        first = (await execute(api, owner, workflow_id))["run"]["id"]
        second = (await execute(api, owner, workflow_id))["run"]["id"]
        await runs.until(
            lambda rs: (
                {(r["id"], r["status"]) for r in rs} >= {(first, "QUEUED"), (second, "QUEUED")}
            )
        )
    await runs.until(
        lambda rs: (
            {(r["id"], r["status"]) for r in rs} >= {(first, "SUCCEEDED"), (second, "SUCCEEDED")}
        )
    )
    await runs.cancel()

    # then each went QUEUED → RUNNING → SUCCEEDED, with its timestamps as it went
    updates = runs.results[seen_before:]
    assert {u["id"] for u in updates} == {first, second}
    for run_id in (first, second):
        mine = [u for u in updates if u["id"] == run_id]
        statuses = [u["status"] for u in mine]
        deduped = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
        assert deduped == ["QUEUED", "RUNNING", "SUCCEEDED"], mine
        for update in mine:
            assert update["trigger"] == "MANUAL"
            assert update["queuedAt"] is not None
            assert (update["startedAt"] is None) == (update["status"] == "QUEUED")
            assert (update["finishedAt"] is None) == (update["status"] != "SUCCEEDED")


# --- 12. limits -------------------------------------------------------------------------------


async def test_connections_per_user_are_limited_and_released(api: Factory, stack: Stack) -> None:
    # given a user holding the maximum number of sockets
    owner = await api.owner()
    other = await api.owner()
    sockets = [await acked_socket(stack, owner.token) for _ in range(MAX_CONNECTIONS_PER_USER)]
    try:
        # when one more connects: it is closed with 4403; another user is not affected
        extra = await raw_socket(stack, {"Authorization": f"Bearer {owner.token}"})
        assert await close_code(extra) == 4403
        await (await acked_socket(stack, other.token)).close()

        # when one socket closes, a new one is accepted again
        await sockets.pop().close()
        async with asyncio.timeout(5):  # the server releases the slot after the close
            while True:
                ws = await raw_socket(stack, {"Authorization": f"Bearer {owner.token}"})
                try:
                    reply = await ws.recv()
                except ConnectionClosed:
                    await asyncio.sleep(0.05)
                    continue
                assert json.loads(reply) == {"type": "connection_ack"}
                sockets.append(ws)
                break
    finally:
        for ws in sockets:
            await ws.close()


async def test_subscriptions_per_connection_are_limited(api: Factory, stack: Stack) -> None:
    owner = await api.owner()
    workflow_id = await create_workflow(api, owner, parallel_graph())
    ws = await acked_socket(stack, owner.token)
    try:
        for i in range(MAX_SUBSCRIPTIONS_PER_CONNECTION):
            await ws.send(
                json.dumps(
                    {
                        "id": f"s{i}",
                        "type": "subscribe",
                        "payload": {
                            "query": WORKFLOW_RUNS,
                            "variables": {"workflowId": workflow_id},
                        },
                    }
                )
            )
        await ws.send(
            json.dumps(
                {
                    "id": "extra",
                    "type": "subscribe",
                    "payload": {"query": WORKFLOW_RUNS, "variables": {"workflowId": workflow_id}},
                }
            )
        )
        async with asyncio.timeout(10):
            reply = json.loads(await ws.recv())
        assert reply["id"] == "extra"
        assert reply["type"] == "error"
        assert "limit" in reply["payload"][0]["message"].lower()
    finally:
        await ws.close()


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://evil.example", False),
        ("http://localhost:1", False),
        (ALLOWED_ORIGIN, True),
        (None, True),  # not a browser: no ambient credentials to abuse
    ],
)
async def test_cross_origin_websocket_handshakes_are_refused_unless_allowed(
    api: Factory, stack: Stack, origin: str | None, allowed: bool
) -> None:
    owner = await api.owner()
    if not allowed:
        with pytest.raises(InvalidStatus) as refused:
            await raw_socket(stack, {"Authorization": f"Bearer {owner.token}"}, origin=origin)
        assert refused.value.response.status_code == 403
        return
    ws = await raw_socket(stack, {"Authorization": f"Bearer {owner.token}"}, origin=origin)
    try:
        async with asyncio.timeout(10):
            assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    finally:
        await ws.close()


async def test_same_origin_websocket_handshake_is_accepted(api: Factory, stack: Stack) -> None:
    owner = await api.owner()
    ws = await raw_socket(stack, {"Authorization": f"Bearer {owner.token}"}, origin=stack.http_url)
    try:
        async with asyncio.timeout(10):
            assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    finally:
        await ws.close()


# --- webhooks across processes -------------------------------------------------------------


async def test_a_signed_webhook_over_real_http_waits_for_the_worker_processes_result(
    api: Factory, stack: Stack
) -> None:
    # Given a workflow whose webhook is signed and waits for the result
    owner, _workflow_id, hook = await hooked_workflow(
        api, GREETING, requireSignature=True, waitForResult=True
    )
    assert hook["url"].startswith(f"{stack.http_url}/hooks/")
    # When a sender posts a signed delivery to the API process over HTTP
    payload = json.dumps({"name": "Ada"}).encode()
    async with httpx.AsyncClient(timeout=30) as sender:
        response = await sender.post(
            hook["url"], content=payload, headers=signed(hook["signingSecret"], payload)
        )
        unsigned = await sender.post(hook["url"], json={"name": "Eve"})
    # Then the worker process ran it and the API process answered with its output
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["status"], answer["output"], answer["error"]) == (
        "SUCCEEDED",
        "Hello Ada!",
        None,
    )
    run = await read_run(api, owner, answer["runId"])
    assert (run["trigger"], run["input"]) == ("WEBHOOK", {"name": "Ada"})
    assert unsigned.status_code == 401
    assert await api.scalar("SELECT count(*) FROM runs") == 1
