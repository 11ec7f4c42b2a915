"""A real API process and a separate worker, and real clients of their subscriptions.

The API runs as `flowdeck serve --no-worker` and one worker as `flowdeck worker`, both real
processes on the test database, started once per test module that asks for ``stack``.
Subscribers speak graphql-transport-ws (gql with its websockets transport, or the websockets
library for the low-level cases) and graphql-sse (httpx streaming). Timeouts are hang guards
only. The fixtures are registered by the conftest of each package that uses them.
"""

from __future__ import annotations

import asyncio
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
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from schema.ids import decode_id
from tests.conftest import TEST_SECRET_KEY
from tests.factories import Account, Factory
from tests.runs import create_workflow, execute, flow, node

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
        # The API process queues, the worker process drives: subscribers follow runs across
        # processes (runs driven where they were queued: tests/worker/test_inline*.py).
        FLOWDECK_INLINE_RUNS="0",
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
    """A Factory whose GraphQL goes over HTTP to the API process (rows via the test engine);
    afterwards, it waits until no run is in flight (the next test truncates the tables under
    the worker)."""
    stack.check_alive()
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        yield Factory(engine, client)
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
