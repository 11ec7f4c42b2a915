"""Live run progress over runProgress and workflowRuns, with real clients against a real API
process and a separate worker (tests/live.py): order, history, reconnects, failures,
cancellation, tenancy, authentication, graphql-sse, limits, and a webhook across processes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from websockets.exceptions import ConnectionClosed, InvalidStatus

from schema.ids import decode_id, encode_id
from tests.factories import Factory
from tests.live import (
    ALLOWED_ORIGIN,
    CANCEL,
    MAX_CONNECTIONS_PER_USER,
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    PARALLEL_OUTPUT,
    RUN_PROGRESS,
    TERMINAL_TYPES,
    WORKFLOW_RUNS,
    SSEResult,
    Stack,
    Subscription,
    acked_socket,
    at,
    close_code,
    delay_chain,
    event_log,
    has,
    parallel_graph,
    progress,
    progress_events,
    raw_socket,
    seqs,
    sse,
    start,
    types_of,
    without_at,
    ws_transport,
)
from tests.runs import create_workflow, execute, flow, node, read_run, steps_by_node, wait_for
from tests.servers import LocalHTTP
from tests.webhooks.helpers import GREETING, hooked_workflow, signed


@pytest.fixture
def local_http() -> Iterator[LocalHTTP]:
    async def unavailable(request: Request) -> Response:
        return JSONResponse({"error": "down for maintenance"}, status_code=503)

    server = LocalHTTP(routes={"/down": unavailable}).start()
    yield server
    server.stop()


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


# --- 9. the workflow's run list --------------------------------------------------------------


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


# --- 10. limits -------------------------------------------------------------------------------


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
