"""Tests for the http.request node against a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.engine.nodes.base import NodeContext, NodeFailure, NodeOutcome
from app.engine.nodes.http_request import HttpRequestConfig, HttpStatusError, run
from app.engine.outbound import OutboundBlocked, ResponseTooLarge
from tests.engine.test_outbound import Reply, StubServer
from tests.servers import LocalHTTP

RUN_ID = uuid.UUID("0b9f6d1e-5a43-4c1e-9a57-3d2f1c8e7a01")
WORKSPACE_ID = uuid.UUID("7c2e4f10-9b8d-4e6a-8f35-1a2b3c4d5e6f")
IDEMPOTENCY_KEY = f"{RUN_ID}:call_api"
JSON = (("Content-Type", "application/json"),)


@pytest.fixture
async def server() -> AsyncIterator[StubServer]:
    stub = await StubServer().start()
    yield stub
    await stub.close()


def context(attempt: int = 1, **settings: Any) -> NodeContext:
    values = {"outbound_allow": ["127.0.0.1/32"], **settings}
    return NodeContext(
        run_id=RUN_ID,
        workspace_id=WORKSPACE_ID,
        node_id="call_api",
        attempt=attempt,
        step_started_at=datetime(2026, 11, 22, 9, 30, tzinfo=UTC),
        settings=SimpleNamespace(**values),
    )


async def call(data: dict[str, Any], ctx: NodeContext | None = None) -> NodeOutcome:
    """Run the node with this config (as the builder saves it), with a hang guard."""
    config = HttpRequestConfig.model_validate(data)
    return await asyncio.wait_for(run(ctx or context(), config, {}), 10)


# --- the node type and its config --------------------------------------------------------


def test_config_reads_camel_case_and_fills_defaults() -> None:
    config = HttpRequestConfig.model_validate(
        {
            "url": "https://api.example/v1",
            "method": "post",
            "expectStatus": [200, 404],
            "label": "Call",
        }
    )

    assert config.model_dump() == {
        "retry": None,
        "timeout_seconds": None,
        "continue_on_fail": False,
        "method": "POST",
        "url": "https://api.example/v1",
        "headers": None,
        "query": None,
        "body": None,
        "expect_status": [200, 404],
        "follow_redirects": True,
    }


@pytest.mark.parametrize(
    ("data", "location", "message"),
    [
        (
            {"method": "FETCH"},
            ("method",),
            "Input should be 'GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD' or 'OPTIONS'",
        ),
        (
            {"headers": {"Bad Header": "x"}},
            ("headers",),
            "Value error, 'Bad Header' is not a valid header name",
        ),
        (
            {"headers": {"X-A": "a\r\nX-B: b"}},
            ("headers",),
            "Value error, header 'X-A' has a value that is not printable ASCII",
        ),
        (
            {"expectStatus": []},
            ("expectStatus",),
            "List should have at least 1 item after validation, not 0",
        ),
        (
            {"expectStatus": [99]},
            ("expectStatus", 0),
            "Input should be greater than or equal to 100",
        ),
        ({"url": ""}, ("url",), "String should have at least 1 character"),
    ],
)
def test_config_rejects_what_cannot_be_sent(
    data: dict[str, Any], location: tuple[str | int, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as invalid:
        HttpRequestConfig.model_validate({"url": "https://api.example/", **data})

    assert [(e["loc"], e["msg"]) for e in invalid.value.errors()] == [(location, message)]


# --- requests and outputs ----------------------------------------------------------------


async def test_get_returns_status_headers_and_parsed_json(server: StubServer) -> None:
    server.routes["/items"] = Reply(200, b'{"items": [1, 2], "next": null}', JSON)

    outcome = await call({"url": server.url("/items")})

    assert outcome == NodeOutcome(
        {
            "status": 200,
            "headers": {"content-type": "application/json", "content-length": "31"},
            "body": {"items": [1, 2], "next": None},
        }
    )
    [received] = server.requests
    assert (received.method, received.target, received.body) == ("GET", "/items", b"")


@pytest.mark.parametrize(
    ("content_type", "body", "parsed"),
    [
        ("application/problem+json", b'{"title": "gone"}', {"title": "gone"}),
        ("application/json; charset=utf-8", b"[true]", [True]),
        ("application/json", b"{oops", "{oops"),
        ("application/json", b'{"x": NaN}', '{"x": NaN}'),
        ("application/json", b"", ""),
        ("text/plain; charset=iso-8859-1", "café".encode("latin-1"), "café"),
        ("text/html", b"<p>hi</p>", "<p>hi</p>"),
        ("application/octet-stream", b"\xff\xfe", "\ufffd\ufffd"),
    ],
)
async def test_body_is_json_when_the_response_says_so_else_text(
    server: StubServer, content_type: str, body: bytes, parsed: Any
) -> None:
    server.routes["/"] = Reply(200, body, (("Content-Type", content_type),))

    outcome = await call({"url": server.url("/")})

    assert outcome.output["body"] == parsed


async def test_json_body_is_sent_as_json(server: StubServer) -> None:
    server.routes["/orders"] = Reply(201, b'{"id": 7}', JSON)

    outcome = await call(
        {"url": server.url("/orders"), "method": "POST", "body": {"sku": "A-1", "qty": 2}}
    )

    assert (outcome.output["status"], outcome.output["body"]) == (201, {"id": 7})
    [received] = server.requests
    assert (received.method, received.body) == ("POST", b'{"sku":"A-1","qty":2}')
    assert received.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("headers", "content_type"),
    [({}, "text/plain; charset=utf-8"), ({"content-type": "text/csv"}, "text/csv")],
)
async def test_string_body_is_sent_as_text(
    server: StubServer, headers: dict[str, str], content_type: str
) -> None:
    server.routes["/notes"] = Reply(204)

    await call(
        {"url": server.url("/notes"), "method": "PUT", "body": "a,b\n1,2", "headers": headers}
    )

    [received] = server.requests
    assert (received.method, received.body) == ("PUT", b"a,b\n1,2")
    assert received.headers["content-type"] == content_type


async def test_query_is_added_to_the_url(server: StubServer) -> None:
    server.routes["/search"] = Reply(200)
    query = {"q": "flow deck", "page": 2, "exact": True}

    await call({"url": server.url("/search?lang=en"), "query": query})

    assert [r.target for r in server.requests] == ["/search?lang=en&q=flow+deck&page=2&exact=true"]


async def test_headers_idempotency_key_and_user_agent_are_sent(server: StubServer) -> None:
    server.routes["/"] = Reply(200)

    await call({"url": server.url("/"), "headers": {"X-Trace": "abc"}})
    await call({"url": server.url("/")}, context(attempt=2))
    await call({"url": server.url("/"), "headers": {"idempotency-key": "mine"}})

    assert [
        (r.headers.get("x-trace"), r.headers["idempotency-key"], r.headers["user-agent"])
        for r in server.requests
    ] == [
        ("abc", IDEMPOTENCY_KEY, "Flowdeck/0.1"),
        (None, IDEMPOTENCY_KEY, "Flowdeck/0.1"),
        (None, "mine", "Flowdeck/0.1"),
    ]


async def test_head_has_an_empty_body(server: StubServer) -> None:
    server.routes["/file"] = Reply(200, b"0123456789", (("Content-Type", "text/plain"),))

    outcome = await call({"url": server.url("/file"), "method": "head"})

    assert outcome.output == {
        "status": 200,
        "headers": {"content-type": "text/plain", "content-length": "10"},
        "body": "",
    }


# --- statuses ----------------------------------------------------------------------------


async def test_an_unexpected_status_fails_with_the_output_kept(server: StubServer) -> None:
    server.routes["/broken"] = Reply(500, b'{"error":\n  "database down"}', JSON)

    with pytest.raises(HttpStatusError) as failed:
        await call({"url": server.url("/broken")})

    assert str(failed.value) == 'HTTP 500 from 127.0.0.1: {"error": "database down"}'
    assert failed.value.output == {
        "status": 500,
        "headers": {"content-type": "application/json", "content-length": "28"},
        "body": {"error": "database down"},
    }
    assert isinstance(failed.value, NodeFailure)


async def test_the_error_quotes_a_short_excerpt_of_the_body(server: StubServer) -> None:
    server.routes["/long"] = Reply(502, b"x" * 300)
    server.routes["/empty"] = Reply(404)

    with pytest.raises(HttpStatusError) as long_body:
        await call({"url": server.url("/long")})
    with pytest.raises(HttpStatusError) as empty_body:
        await call({"url": server.url("/empty")})

    assert str(long_body.value) == "HTTP 502 from 127.0.0.1: " + "x" * 199 + "…"
    assert str(empty_body.value) == "HTTP 404 from 127.0.0.1"
    assert empty_body.value.output == {
        "status": 404,
        "headers": {"content-length": "0"},
        "body": "",
    }


async def test_expect_status_replaces_the_2xx_default(server: StubServer) -> None:
    server.routes["/missing"] = Reply(404, b"none")
    server.routes["/ok"] = Reply(200, b"fine")

    missing = await call({"url": server.url("/missing"), "expectStatus": [404, 410]})
    with pytest.raises(HttpStatusError) as failed:
        await call({"url": server.url("/ok"), "expectStatus": [404, 410]})

    assert (missing.output["status"], missing.output["body"]) == (404, "none")
    assert str(failed.value) == "HTTP 200 from 127.0.0.1: fine"


async def test_redirects_are_followed_or_returned(server: StubServer) -> None:
    server.routes["/old"] = Reply(301, b"", (("Location", "/new"),))
    server.routes["/new"] = Reply(200, b'"moved"', JSON)

    followed = await call({"url": server.url("/old")})
    returned = await call(
        {"url": server.url("/old"), "followRedirects": False, "expectStatus": [301]}
    )

    assert followed.output["body"] == "moved"
    assert returned.output == {
        "status": 301,
        "headers": {"location": "/new", "content-length": "0"},
        "body": "",
    }
    assert [r.target for r in server.requests] == ["/old", "/new", "/old"]


# --- the outbound policy, through the node ------------------------------------------------


async def test_without_the_allow_list_a_local_address_is_refused(server: StubServer) -> None:
    server.routes["/"] = Reply(200, b"internal")

    with pytest.raises(OutboundBlocked) as refused:
        await call({"url": server.url("/")}, context(outbound_allow=[]))

    assert str(refused.value) == "Refused to connect to 127.0.0.1: loopback address is not allowed."
    assert isinstance(refused.value, NodeFailure)
    assert server.connections == 0


async def test_the_response_size_cap_applies(server: StubServer) -> None:
    server.routes["/big"] = Reply(200, json.dumps(["x" * 100]).encode(), JSON)

    with pytest.raises(ResponseTooLarge) as too_large:
        await call({"url": server.url("/big")}, context(http_max_response_bytes=64))

    assert str(too_large.value) == "Response from 127.0.0.1 is larger than 64 bytes."


async def test_a_node_timeout_bounds_its_call_instead_of_the_server_default() -> None:
    async def slowly(request: Request) -> Response:
        await asyncio.sleep(1.5)
        return JSONResponse({"done": True})

    server = LocalHTTP(routes={"/slow": slowly}).start()
    try:
        # The server's default (1 s here) cuts a call the node did not bound itself...
        with pytest.raises(
            NodeFailure, match=r"No complete response from 127\.0\.0\.1 within 1 seconds"
        ):
            await call({"url": server.url("/slow")}, context(http_timeout_seconds=1.0))
        # ...while a node that allows 5 s gets its answer
        outcome = await call(
            {"url": server.url("/slow"), "timeoutSeconds": 5}, context(http_timeout_seconds=1.0)
        )
        assert outcome.output["body"] == {"done": True}
    finally:
        server.stop()
