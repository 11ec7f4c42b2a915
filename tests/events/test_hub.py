"""The events hub (app/events/hub.py), seen by real subscribers of a real API process: a slow
subscriber holds up no one, and a lost listener connection loses no event.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

import httpx
import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import Factory
from tests.live import (
    CANCEL,
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    RUN_PROGRESS,
    SLOW_SUBSCRIBER_SECONDS,
    WORKFLOW_RUNS,
    Stack,
    Subscription,
    at,
    delay_chain,
    event_log,
    has,
    parallel_graph,
    progress,
    progress_events,
    raw_socket,
    seqs,
    start,
    without_at,
)
from tests.runs import create_workflow, execute, flow, node, wait_for

# --- a subscriber that never reads ---------------------------------------------------------


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


# --- the listener's connection killed mid-run ----------------------------------------------


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
