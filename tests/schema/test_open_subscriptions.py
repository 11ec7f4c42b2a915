"""An open subscription stops within seconds once its API token no longer works."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from tests.factories import Account, Factory
from tests.runs import create_workflow, edge, node

PROTOCOL = "graphql-transport-ws"
WORKFLOW_RUNS = "subscription($id: ID!) { workflowRuns(workflowId: $id) { id status } }"
GRAPH = {
    "nodes": [node("start", "trigger"), node("out", "output", value="{{ input }}")],
    "edges": [edge("start", "out")],
}


@pytest.fixture
async def served(app: Starlette) -> AsyncIterator[str]:
    """The test app behind a real HTTP server on a local port (in this event loop)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"ws://127.0.0.1:{port}/graphql"
    server.should_exit = True
    await task


async def subscribe(url: str, account: Account, workflow_id: str) -> ClientConnection:
    """A signed-in socket with a workflowRuns subscription open (id "1")."""
    ws = await connect(url, subprotocols=[PROTOCOL])  # type: ignore[list-item]
    await ws.send(
        json.dumps(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {account.token}"}}
        )
    )
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    await ws.send(
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": WORKFLOW_RUNS, "variables": {"id": workflow_id}},
            }
        )
    )
    return ws


async def next_message(ws: ClientConnection, seconds: float) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), seconds))


async def test_a_subscription_ends_within_seconds_of_its_token_expiring(
    factory: Factory, served: str
) -> None:
    # Given an open subscription that has nothing to send
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH)
    ws = await subscribe(served, owner, workflow_id)
    with pytest.raises(TimeoutError):
        await next_message(ws, 1.5)  # it is open, and quiet
    loop = asyncio.get_running_loop()

    # When its token stops working
    await factory.execute(
        "UPDATE api_tokens SET expires_at = now() WHERE user_id = :user", user=owner.user.id
    )
    stopped_at = loop.time()

    # Then within token_recheck_seconds (1 s here) it ends, saying why
    message = await next_message(ws, 5)
    assert loop.time() - stopped_at < 2.5
    assert message["type"] == "next"
    assert message["id"] == "1"
    assert [(e["message"], e["extensions"]["code"]) for e in message["payload"]["errors"]] == [
        ("This API token has expired.", "UNAUTHENTICATED")
    ]
    assert (await next_message(ws, 5)) == {"id": "1", "type": "complete"}
    # And the socket cannot start another one
    await ws.send(
        json.dumps(
            {
                "id": "2",
                "type": "subscribe",
                "payload": {"query": WORKFLOW_RUNS, "variables": {"id": workflow_id}},
            }
        )
    )
    refused = await next_message(ws, 5)
    assert refused["id"] == "2"
    assert refused["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    await ws.close()


async def test_a_subscription_ends_within_seconds_of_its_token_being_revoked(
    factory: Factory, served: str
) -> None:
    # Given a second token of the owner, and a subscription open with it
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH)
    made = await factory.gql(
        """mutation($i: ApiTokenCreateInput!) { apiTokenCreate(input: $i) {
             apiToken { id } token } }""",
        {"i": {"name": "dashboard"}},
        token=owner.token,
    )
    dashboard = made["data"]["apiTokenCreate"]
    watcher = Account(owner.user, dashboard["token"], owner.workspace, owner.role)
    ws = await subscribe(served, watcher, workflow_id)
    loop = asyncio.get_running_loop()

    # When the owner revokes it through the API
    revoked = await factory.gql(
        """mutation($id: ID!) { apiTokenRevoke(id: $id) { revokedId } }""",
        {"id": dashboard["apiToken"]["id"]},
        token=owner.token,
    )
    assert revoked["data"]["apiTokenRevoke"]["revokedId"] == dashboard["apiToken"]["id"]
    revoked_at = loop.time()

    # Then the subscription ends within seconds
    message = await next_message(ws, 5)
    assert loop.time() - revoked_at < 2.5
    assert [(e["message"], e["extensions"]["code"]) for e in message["payload"]["errors"]] == [
        ("Invalid API token.", "UNAUTHENTICATED")
    ]
    assert (await next_message(ws, 5)) == {"id": "1", "type": "complete"}
    await ws.close()
