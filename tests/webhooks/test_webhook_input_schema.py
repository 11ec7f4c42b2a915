"""A webhook delivery whose body does not match the trigger's input schema is answered 422
INPUT_INVALID with each path, and nothing is written: on the way through a worker's queue and
on the way where the API process drives the run it was delivered (born in memory)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from tests.factories import Factory
from tests.runs import flow, node, wait_for
from tests.webhooks.helpers import hooked_workflow, path_of, signed

ORDER = {
    "type": "object",
    "required": ["orderId", "items"],
    "properties": {
        "orderId": {"type": "string"},
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"quantity": {"type": "integer"}}},
        },
    },
}
ORDERS = flow(
    node("t", "trigger", inputSchema=ORDER),
    node("out", "output", value="{{ size(trigger.items) }}"),
    handle="out",
)
PREFIX = "The run input does not match the trigger's input schema at "


@pytest.fixture
async def inline_client(inline_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an API app that drives the runs of its deliveries itself."""
    transport = httpx.ASGITransport(app=inline_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as c:
        yield c


async def refused_deliveries(
    factory: Factory, client: httpx.AsyncClient, **options: object
) -> None:
    owner, _workflow_id, hook = await hooked_workflow(factory, ORDERS, **options)
    path = path_of(hook["url"])
    secret = hook["signingSecret"]
    bodies = {
        "wrong types": {"orderId": 42, "items": [{"quantity": 1}, {"quantity": "two"}]},
        "missing": {"items": []},
        "not an object": ["orderId"],
        "deep": {"orderId": "A1", "items": [{"quantity": 1}] * 999 + [{"quantity": 1.5}]},
    }
    before = await factory.snapshot()

    answers = {}
    for name, value in bodies.items():
        body = json.dumps(value).encode()
        headers = signed(secret, body) if secret else {"content-type": "application/json"}
        answers[name] = await client.post(path, content=body, headers=headers)

    def problem(path: list[str], where: str, reason: str) -> dict[str, object]:
        return {"path": path, "message": f"{PREFIX}{where}: {reason}"}

    expected = {
        "wrong types": [
            problem(
                ["items", "1", "quantity"], "$.items[1].quantity", "'two' is not of type 'integer'"
            ),
            problem(["orderId"], "$.orderId", "42 is not of type 'string'"),
        ],
        "missing": [problem([], "$", "'orderId' is a required property")],
        "not an object": [problem([], "$", "['orderId'] is not of type 'object'")],
        "deep": [
            problem(
                ["items", "999", "quantity"],
                "$.items[999].quantity",
                "1.5 is not of type 'integer'",
            )
        ],
    }
    for name, problems in expected.items():
        assert answers[name].status_code == 422, name
        assert answers[name].headers["content-type"] == "application/json"
        message = "; ".join(p["message"] for p in problems)  # type: ignore[misc]
        assert answers[name].json() == {
            "error": {"code": "INPUT_INVALID", "message": message, "problems": problems}
        }, name
    assert await factory.snapshot() == before  # no run, step, event or job

    # And a matching body starts its run
    body = json.dumps({"orderId": "A1", "items": [{"quantity": 2}]}).encode()
    headers = signed(secret, body) if secret else {"content-type": "application/json"}
    accepted = await client.post(path, content=body, headers=headers)
    assert accepted.status_code == (200 if options.get("waitForResult") else 202), accepted.text
    run = await wait_for(factory, owner, accepted.json()["runId"])
    assert (run["status"], run["output"]) == ("SUCCEEDED", 1)


async def test_a_queued_delivery_that_does_not_match_is_422_and_writes_nothing(
    factory: Factory, client: httpx.AsyncClient, worker: None
) -> None:
    await refused_deliveries(factory, client)


async def test_a_delivery_driven_here_that_does_not_match_is_422_and_writes_nothing(
    factory: Factory, inline_client: httpx.AsyncClient
) -> None:
    await refused_deliveries(factory, inline_client, requireSignature=True)


async def test_a_waiting_delivery_driven_here_that_does_not_match_is_422(
    factory: Factory, inline_client: httpx.AsyncClient
) -> None:
    await refused_deliveries(factory, inline_client, waitForResult=True)
