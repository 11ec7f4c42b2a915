"""The API over a database that goes away, drops connections, or is held by one tenant.

A real `flowdeck serve --no-worker` (production settings, JSON logs at INFO) runs over a
database of its own (tests/faults.py), which the tests refuse, cut off and lock. Every
database failure reaches clients as SERVICE_UNAVAILABLE with a request id (HTTP 503 and
Retry-After where the transport allows), never as driver or SQL text; no log line at INFO or
above carries that text either; refused requests write nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.db import IDLE_CHECK_SECONDS, create_engine, create_pool, libpq_url
from app.errors import UNAVAILABLE_MESSAGE
from app.settings import Settings
from bench.reads import EDITOR
from schema.ids import decode_id
from tests.factories import Account, Factory
from tests.faults import FaultyDatabase, FlowdeckProcess, raw_error_text
from tests.runs import create_workflow, flow, node
from tests.webhooks.helpers import enable

VIEWER = "{ viewer { email } }"
EXECUTE = """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
  run { id } userErrors { field code message } } }"""
SAVE = """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) {
  workflow { id } userErrors { field code message } } }"""
PROGRESS = "subscription($id: ID!) { runProgress(runId: $id) { seq type } }"
GRAPH = flow(node("start", "trigger"), node("out", "output", value="{{ input }}"))
RETRY_AFTER = "5"


def unavailable(request_id: str, path: list[str] | None = None) -> dict[str, Any]:
    """The one error of a request the database failed."""
    error: dict[str, Any] = {
        "message": UNAVAILABLE_MESSAGE,
        "extensions": {"code": "SERVICE_UNAVAILABLE", "requestId": request_id},
    }
    if path is not None:
        error["path"] = path
    return error


def without_locations(body: dict[str, Any]) -> dict[str, Any]:
    errors = [{k: v for k, v in e.items() if k != "locations"} for e in body.get("errors", [])]
    return {**body, "errors": errors} if "errors" in body else body


@pytest.fixture(scope="module")
def faulty(server_url: str) -> Iterator[FaultyDatabase]:
    """A database of this module's own, to break."""
    with FaultyDatabase.scratch(server_url) as database:
        yield database


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("database-faults")


@pytest.fixture(scope="module")
def api(faulty: FaultyDatabase, logs: Path) -> Iterator[FlowdeckProcess]:
    """`flowdeck serve --no-worker` over the faulty database (it migrates it)."""
    process = FlowdeckProcess.api(faulty.url, logs).start()
    yield process
    process.stop()


@pytest.fixture
async def on_faulty(
    faulty: FaultyDatabase, api: FlowdeckProcess, settings: Settings
) -> AsyncIterator[Factory]:
    """A Factory writing rows into the faulty database and calling the API process."""
    engine: AsyncEngine = create_engine(faulty.url, settings)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        yield Factory(engine, client)
    await engine.dispose()


@pytest.fixture(autouse=True)
def no_raw_text_logged(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, no process of it logged raw driver text at INFO or above."""
    yield
    for name in ("api", "pool_api"):
        if name in request.fixturenames:
            process: FlowdeckProcess = request.getfixturevalue(name)
            assert process.leaked_log_lines() == []


async def counts(factory: Factory, account: Account) -> dict[str, int]:
    """Rows of the account's workspace a request could have written."""
    workspace = str(account.workspace.id)
    return {
        table: await factory.scalar(
            f"SELECT count(*) FROM {table} WHERE workspace_id = CAST(:w AS uuid)", w=workspace
        )
        for table in ("workflows", "workflow_versions", "runs", "run_steps")
    }


async def gql(
    client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"authorization": f"Bearer {token}"},
    )


async def webhook_path(factory: Factory, owner: Account, workflow_id: str) -> str:
    hook = await enable(factory, owner, workflow_id)
    return "/hooks/" + hook["url"].rsplit("/", 1)[1]


async def sse_frames(
    client: httpx.AsyncClient, token: str, query: str, variables: dict
) -> tuple[str, list]:
    """The request id and the `next` payloads of a graphql-sse subscription, to its end."""
    frames = []
    async with client.stream(
        "POST",
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {token}", "accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                if event == "complete":
                    break
            elif line.startswith("data: ") and event == "next":
                frames.append(json.loads(line.removeprefix("data: ")))
    return response.headers["x-request-id"], frames


async def test_an_unreachable_database_is_503_with_a_request_id_on_every_path(
    faulty: FaultyDatabase, api: FlowdeckProcess, on_faulty: Factory
) -> None:
    # Given a workspace with a workflow, a webhook, a queued run, and a signed-in socket
    owner = await on_faulty.owner()
    workflow_id = await create_workflow(on_faulty, owner, GRAPH)
    hook = await webhook_path(on_faulty, owner, workflow_id)
    run_id = (await on_faulty.gql(EXECUTE, {"i": {"workflowId": workflow_id}}, token=owner.token))[
        "data"
    ]["workflowExecute"]["run"]["id"]
    ws_url = api.base_url.replace("http", "ws") + "/graphql"
    signed_in = await connect(ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await signed_in.send(json.dumps({"type": "connection_init", "payload": {"token": owner.token}}))
    assert json.loads(await signed_in.recv()) == {"type": "connection_ack"}
    # ... and a user whose token this API process has not seen yet: signing it in needs the
    # database (a token the process has seen is signed in from its cache, FLOWDECK_TOKEN_CACHE_SECONDS)
    newcomer = await on_faulty.owner("newcomer")
    before = await counts(on_faulty, owner)
    client = on_faulty.client
    # ... and the editor's read, which this process answers by its compiled plan
    editor_read = {"id": workflow_id}
    assert "errors" not in (await gql(client, owner.token, EDITOR, editor_read)).json()
    # When the database refuses connections and every backend is gone
    with faulty.down():
        started = time.monotonic()
        editor = await gql(client, owner.token, EDITOR, editor_read)
        editor_seconds = time.monotonic() - started
        viewer = await gql(client, newcomer.token, VIEWER)
        executed = await gql(client, owner.token, EXECUTE, {"i": {"workflowId": workflow_id}})
        delivered = await client.post(hook, json={"a": 1})
        ready = await client.get("/readyz")
        sse_id, frames = await sse_frames(client, owner.token, PROGRESS, {"id": run_id})
        await signed_in.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": PROGRESS, "variables": {"id": run_id}},
                }
            )
        )
        subscribed = json.loads(await asyncio.wait_for(signed_in.recv(), 10))
        async with connect(ws_url, subprotocols=["graphql-transport-ws"]) as fresh:  # type: ignore[list-item]
            await fresh.send(
                json.dumps({"type": "connection_init", "payload": {"token": newcomer.token}})
            )
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(fresh.recv(), 10)
    await signed_in.close()
    # Then HTTP answers 503 with Retry-After and the code and request id, in each one's shape
    assert (editor.status_code, editor.headers["retry-after"]) == (503, RETRY_AFTER)
    # (a field error when its sign-in was kept; a request error when the lost LISTEN
    # connection made the process drop its kept sign-ins and sign in again: both are 503)
    assert editor.json()["data"] in (None, {"workflow": None})
    assert (
        editor.json()["errors"][0]["extensions"]
        == unavailable(editor.headers["x-request-id"])["extensions"]
    )
    # ... after one wait for the pool (FLOWDECK_DB_POOL_TIMEOUT_SECONDS, 5 s), not one on each
    # path: the compiled path gave up and the general path answered
    assert editor_seconds < 9
    for response in (viewer, executed):
        assert (response.status_code, response.headers["retry-after"]) == (503, RETRY_AFTER)
        assert response.json() == {
            "data": None,
            "errors": [unavailable(response.headers["x-request-id"])],
        }
    assert (delivered.status_code, delivered.headers["retry-after"]) == (503, RETRY_AFTER)
    assert delivered.json() == {
        "error": {
            "code": "SERVICE_UNAVAILABLE",
            "message": UNAVAILABLE_MESSAGE,
            "requestId": delivered.headers["x-request-id"],
        }
    }
    assert (ready.status_code, ready.json()) == (
        503,
        {"status": "unavailable", "database": "unreachable"},
    )
    # ... subscriptions get an error message with the code; a new socket is closed 1013
    assert [without_locations(frame) for frame in frames] == [
        {"data": None, "errors": [unavailable(sse_id)]}
    ]
    assert subscribed["type"] == "next"
    [socket_error] = subscribed["payload"]["errors"]
    assert socket_error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert socket_error["message"] == UNAVAILABLE_MESSAGE
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013
    assert closed.value.rcvd.reason.startswith("SERVICE_UNAVAILABLE request ")
    # ... no answer carries driver text, and the log names each request id, without its text
    answers = [
        editor.text,
        viewer.text,
        executed.text,
        delivered.text,
        ready.text,
        json.dumps(frames),
    ]
    assert [raw_error_text(answer) for answer in answers] == [[]] * 6
    warned = {
        line.get("request_id")
        for line in api.log_lines()
        if str(line.get("event", "")).startswith(("database unavailable", "webhook delivery"))
    }
    assert {r.headers["x-request-id"] for r in (editor, viewer, executed, delivered)} <= warned
    # ... nothing was written, and everything works again once the database is back
    assert await counts(on_faulty, owner) == before
    again = await gql(client, owner.token, VIEWER)
    assert (again.status_code, again.json()) == (
        200,
        {"data": {"viewer": {"email": owner.user.email}}},
    )
    assert (await client.get("/readyz")).status_code == 200


async def test_connections_terminated_under_traffic_never_leak_and_lose_no_run(
    faulty: FaultyDatabase, api: FlowdeckProcess, on_faulty: Factory
) -> None:
    # Given 120 executions, each with its own idempotency key
    owner = await on_faulty.owner()
    workflow_id = await create_workflow(on_faulty, owner, GRAPH)
    keys = [f"key-{n}" for n in range(120)]
    gate = asyncio.Semaphore(8)

    async def execute(key: str) -> httpx.Response:
        async with gate:
            return await gql(
                on_faulty.client,
                owner.token,
                EXECUTE,
                {"i": {"workflowId": workflow_id, "idempotencyKey": key}},
            )

    # When every backend of the database is terminated every 0.1 s while they are sent
    with faulty.terminating(every=0.1):
        answers = dict(zip(keys, await asyncio.gather(*(execute(k) for k in keys)), strict=True))
    # Then each answer is a run, or 503 SERVICE_UNAVAILABLE with its request id: never text
    refused = [k for k, r in answers.items() if r.status_code == 503]
    assert refused, "no request met a terminated connection: the test proved nothing"
    for key, response in answers.items():
        body = without_locations(response.json())
        if response.status_code == 200:
            assert "errors" not in body, body
            assert body["data"]["workflowExecute"]["userErrors"] == []
        else:
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == RETRY_AFTER
            request_id = response.headers["x-request-id"]
            assert body["errors"] in (
                [unavailable(request_id)],
                [unavailable(request_id, ["workflowExecute"])],
            ), body
        assert raw_error_text(response.text) == [], key
    # ... and once the database is calm, retrying the refused keys gives exactly one run each
    for key in refused:
        retried = await execute(key)
        assert retried.status_code == 200, retried.text
    assert await on_faulty.scalar(
        "SELECT count(*) FROM runs WHERE workflow_id IN (SELECT id FROM workflows"
        " WHERE workspace_id = CAST(:w AS uuid))",
        w=str(owner.workspace.id),
    ) == len(keys)
    assert await on_faulty.scalar(
        "SELECT count(DISTINCT idempotency_key) FROM runs WHERE workspace_id = CAST(:w AS uuid)",
        w=str(owner.workspace.id),
    ) == len(keys)


async def test_a_pooled_connection_that_died_while_idle_is_replaced_not_handed_out(
    database_url: str, settings: Settings
) -> None:
    # Given the lean reads' pool with one connection, used once
    pool = create_pool(database_url, settings)
    await pool.open(wait=True)
    try:
        async with pool.connection() as conn:
            dead = conn.info.backend_pid
        # When its backend is terminated while it lies idle (an outage, a restart, an admin),
        # and the pool has not heard of it (no reconnection of the event listener)
        with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (dead,))
        await asyncio.sleep(IDLE_CHECK_SECONDS + 0.3)
        # Then the next read gets a working connection, not the dead one
        async with pool.connection() as conn:
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
            assert conn.info.backend_pid != dead
    finally:
        await pool.close()


async def test_readyz_follows_the_database_within_a_second_and_logs_each_change_once(
    faulty: FaultyDatabase, api: FlowdeckProcess
) -> None:
    async def first_answer(status: int, within: float) -> float:
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=5) as client:
            while time.monotonic() - started < within:
                if (await client.get("/readyz")).status_code == status:
                    return time.monotonic() - started
                await asyncio.sleep(0.05)
        raise AssertionError(f"/readyz did not answer {status} within {within} s")

    marks = len(api.log_lines())
    assert await first_answer(200, 1.0) < 1.0
    # When the database goes away, then comes back
    faulty.refuse()
    try:
        gone = await first_answer(503, 1.0)
        for _ in range(10):  # probes while it stays away
            assert (await first_answer(503, 1.0)) < 1.0
    finally:
        faulty.allow()
    back = await first_answer(200, 1.0)
    # Then /readyz says so within a second each way, and the log says each change once
    assert (gone < 1.0, back < 1.0) == (True, True)
    events = [line["event"] for line in api.log_lines()[marks:] if line.get("logger") == "app.ops"]
    assert events == ["database unreachable", "database reachable again"]


# --- one tenant holding the pool ----------------------------------------------------------


@pytest.fixture(scope="module")
def pool_api(faulty: FaultyDatabase, api: FlowdeckProcess, logs: Path) -> Iterator[FlowdeckProcess]:
    """An API process with a pool of 2, a 0.5 s pool wait and a 1.5 s statement timeout,
    driving no runs itself."""
    process = FlowdeckProcess.api(
        faulty.url,
        logs,
        db_pool_size="2",
        db_pool_overflow="0",
        db_pool_timeout_seconds="0.5",
        db_statement_timeout_seconds="1.5",
        inline_runs="0",  # runs stay QUEUED: no worker here, and this process drives none
    ).start()
    yield process
    process.stop()


async def test_one_tenant_holding_the_pool_does_not_stop_another(
    faulty: FaultyDatabase, pool_api: FlowdeckProcess, on_faulty: Factory
) -> None:
    # Given tenant A, whose workflow row the test holds locked, and tenant B
    tenant_a = await on_faulty.owner("A")
    tenant_b = await on_faulty.owner("B")
    workflow_a = await create_workflow(on_faulty, tenant_a, GRAPH)
    before = await counts(on_faulty, tenant_a)
    stalls = pool_api.loop_stalls()
    async with httpx.AsyncClient(base_url=pool_api.base_url, timeout=30) as client:
        with psycopg.connect(faulty.url) as lock:
            lock.execute(
                "SELECT 1 FROM workflows WHERE id = %s FOR UPDATE",
                (decode_id("Workflow", workflow_a),),
            )

            async def save_a(n: int) -> tuple[httpx.Response, float]:
                started = time.monotonic()
                variables = {
                    "i": {
                        "workflowId": workflow_a,
                        "baseVersion": 1,
                        "graph": GRAPH,
                        "message": f"{n}",
                    }
                }
                response = await gql(client, tenant_a.token, SAVE, variables)
                return response, time.monotonic() - started

            # When A sends 4 saves that wait on the lock, holding both pooled connections
            saves = [asyncio.create_task(save_a(n)) for n in range(4)]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            first_b = await gql(client, tenant_b.token, VIEWER)
            first_b_seconds = time.monotonic() - started
            answers_a = await asyncio.gather(*saves)
            # (the lock is still held)
            later_b = await gql(client, tenant_b.token, VIEWER)
            lock.rollback()
    # Then B was told 503 quickly while the pool was full (the pool wait is 0.5 s)
    assert (first_b.status_code, first_b.headers["retry-after"]) == (503, RETRY_AFTER)
    assert first_b.json() == {
        "data": None,
        "errors": [unavailable(first_b.headers["x-request-id"])],
    }
    assert first_b_seconds < 1.5
    # ... A's saves ended 503 within the statement timeout (or the pool wait), writing nothing
    for response, seconds in answers_a:
        assert response.status_code == 503, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert raw_error_text(response.text) == []
        assert seconds < 4.0  # 1.5 s timeout, after at most one 0.5 s wait, plus load
    # ... the API's event loop never stalled meanwhile
    assert pool_api.loop_stalls() == stalls
    assert await counts(on_faulty, tenant_a) == before
    # ... and B was served while A's lock was still held: A no longer held the pool
    assert (later_b.status_code, later_b.json()) == (
        200,
        {"data": {"viewer": {"email": tenant_b.user.email}}},
    )


async def test_open_sse_subscriptions_hold_no_pooled_connection(
    pool_api: FlowdeckProcess, on_faulty: Factory
) -> None:
    # Given a queued run (no worker runs it) and a pool of two connections
    owner = await on_faulty.owner()
    workflow_id = await create_workflow(on_faulty, owner, GRAPH)
    body = await on_faulty.gql(EXECUTE, {"i": {"workflowId": workflow_id}}, token=owner.token)
    run_id = body["data"]["workflowExecute"]["run"]["id"]
    async with (
        httpx.AsyncClient(base_url=pool_api.base_url, timeout=30) as client,
        contextlib.AsyncExitStack() as streams,
    ):
        # When three graphql-sse subscriptions are open and have sent their first event
        for _ in range(3):
            response = await streams.enter_async_context(
                client.stream(
                    "POST",
                    "/graphql",
                    json={"query": PROGRESS, "variables": {"id": run_id}},
                    headers={
                        "authorization": f"Bearer {owner.token}",
                        "accept": "text/event-stream",
                    },
                )
            )
            lines = response.aiter_lines()
            while not (line := await anext(lines)).startswith("data: "):
                pass
            first = json.loads(line.removeprefix("data: "))
            assert first == {"data": {"runProgress": {"seq": 1, "type": "RUN_QUEUED"}}}
        held = await on_faulty.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
            " AND client_port = ANY(:ports)",
            ports=pool_api.database_ports(),
        )
        # Then no connection is held in an open transaction (a stream kept its sign-in's
        # open, one pooled connection each, for as long as it ran), and others get one
        viewer = await gql(client, owner.token, VIEWER)
    assert held == 0
    assert (viewer.status_code, viewer.json()) == (
        200,
        {"data": {"viewer": {"email": owner.user.email}}},
    )
