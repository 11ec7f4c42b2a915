"""HTTP behaviour: operator endpoints, request ids, body cap, GraphiQL, masking, limits."""

from __future__ import annotations

import json

import httpx
import orjson
import psycopg
import pytest

from app.encoding import dumps
from app.errors import UNAVAILABLE_MESSAGE
from app.middleware import UNEXPECTED_MESSAGE, RequestContext
from tests.factories import Factory


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    ready = await client.get("/readyz")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["migration"] == ready.json()["head"]


async def test_readyz_says_migrating_when_the_database_is_behind(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    head = await factory.scalar("SELECT version_num FROM alembic_version")
    await factory.execute("UPDATE alembic_version SET version_num = 'older'")
    try:
        response = await client.get("/readyz")
    finally:
        await factory.execute("UPDATE alembic_version SET version_num = :v", v=head)

    assert response.status_code == 503
    assert response.json() == {
        "status": "migrating",
        "database": "ok",
        "migration": "older",
        "head": head,
    }


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert (
        'flowdeck_http_requests_total{method="GET",route="/healthz",status="200"}' in response.text
    )
    assert "flowdeck_http_request_duration_seconds_bucket" in response.text


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    generated = await client.get("/healthz")
    echoed = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    refused = await client.get("/healthz", headers={"x-request-id": "bad id\twith junk"})

    assert len(generated.headers["x-request-id"]) == 32
    assert echoed.headers["x-request-id"] == "abc-123"
    assert refused.headers["x-request-id"] != "bad id\twith junk"


async def test_bodies_over_the_cap_get_413_declared_or_streamed(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()
    big = b'{"query": "{ viewer { id } }", "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'

    declared = await client.post(
        "/graphql",
        content=big,
        headers={"content-type": "application/json", "authorization": f"Bearer {owner.token}"},
    )

    async def chunks():
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = await client.post(
        "/graphql",
        content=chunks(),
        headers={"content-type": "application/json", "authorization": f"Bearer {owner.token}"},
    )

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"] == {"code": "PAYLOAD_TOO_LARGE"}
    assert await factory.snapshot() == before


async def test_graphiql_is_served_to_browsers_in_development(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"accept": "text/html"})

    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_unexpected_errors_are_masked_with_a_request_id(factory: Factory) -> None:
    owner = await factory.owner()
    # A real fault: the database refuses the statement because the table is gone.
    await factory.execute("ALTER TABLE workflows RENAME TO workflows_away")
    try:
        body = await factory.gql(
            "query($ws: ID!) { workspace(id: $ws) { workflows(first: 1) { edges { cursor } } } }",
            {"ws": owner.workspace_id},
            token=owner.token,
        )
    finally:
        await factory.execute("ALTER TABLE workflows_away RENAME TO workflows")

    error = body["errors"][0]
    assert (
        error["message"]
        == "Unexpected error. It has been logged; quote the request id when reporting it."
    )
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert len(error["extensions"]["requestId"]) == 32
    assert error["path"] == ["workspace", "workflows"]
    assert "relation" not in str(body)
    assert "UndefinedTable" not in str(body)


async def test_query_depth_aliases_and_tokens_are_limited(factory: Factory) -> None:
    owner = await factory.owner()
    deep = "{ viewer { memberships { workspace { workflows(first: 1) { edges { node { workspace { workflows(first: 1) { edges { node { workspace { workflows(first: 1) { edges { node { id } } } } } } } } } } } } } } }"
    aliases = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(31)) + " }"
    tokens = "{ viewer { " + " ".join(["id"] * 3001) + " } }"

    for query, expected in (
        (deep, "exceeds maximum operation depth of 12"),
        (aliases, "31 aliases found. Allowed: 30"),
        (tokens, "Document contains more than 3000 tokens"),
    ):
        body = await factory.gql(query, token=owner.token)
        assert expected in body["errors"][0]["message"], body
        assert body.get("data") is None


async def test_field_suggestions_show_in_development(factory: Factory) -> None:
    owner = await factory.owner()

    body = await factory.gql("{ viewr { id } }", token=owner.token)

    assert (
        body["errors"][0]["message"]
        == "Cannot query field 'viewr' on type 'Query'. Did you mean 'viewer'?"
    )


async def test_database_errors_in_logs_carry_neither_parameters_nor_row_details(
    factory: Factory,
) -> None:
    import io
    import logging

    from sqlalchemy.exc import IntegrityError

    from app.logs import configure_logging

    secret_id = "00000000-0000-0000-0000-00000000abcd"
    try:
        await factory.execute(
            "INSERT INTO users (id, email, name) VALUES (:id, :email, 'x')",
            id=secret_id,
            email=None,
        )
    except IntegrityError as error:
        failure = error
    else:
        raise AssertionError("the insert should have failed")
    # The engine keeps statement parameters out of its errors
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(failure)
    # PostgreSQL's DETAIL quotes the row; the log renderer hides it
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("INFO", json=True)
        stream = io.StringIO()
        root.handlers[0].stream = stream  # type: ignore[attr-defined]
        logging.getLogger("tests").error("failed", exc_info=failure)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = stream.getvalue()
    assert "DETAIL: [hidden]" in line
    assert secret_id not in line
    assert "null value in column" in line


async def test_an_error_quoting_a_lone_surrogate_back_is_still_json(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # Given a DateTime argument that is a lone surrogate (its parse error quotes the value;
    # orjson refuses to encode it, which made the answer a plain-text 500)
    owner = await factory.owner()
    query = "mutation($i: ApiTokenCreateInput!) { apiTokenCreate(input: $i) { token } }"
    body = {"query": query, "variables": {"i": {"name": "x", "expiresAt": "\ud800"}}}
    before = await factory.snapshot()
    # When it is sent (json.dumps writes the surrogate as a \ud800 escape)
    response = await client.post(
        "/graphql",
        content=json.dumps(body),
        headers={"authorization": f"Bearer {owner.token}", "content-type": "application/json"},
    )
    # Then the answer is JSON, the surrogate shown as U+FFFD, and no token was made
    assert (response.status_code, response.headers["content-type"]) == (
        200,
        "application/json; charset=utf-8",
    )
    assert response.json() == {
        "data": None,
        "errors": [
            {
                "message": "Variable '$i' has invalid value at .expiresAt: Value cannot "
                'represent a DateTime: "\ufffd". ISO-8601 strings should contain only ASCII '
                "characters",
                "locations": [{"line": 1, "column": 10}],
            }
        ],
    }
    assert await factory.snapshot() == before


def test_the_response_encoder_takes_what_orjson_refuses() -> None:
    # Lone surrogates (values and keys) become U+FFFD; integers past 64 bits stay exact;
    # stored JSON spliced in as orjson.Fragment passes through untouched.
    value = {"a\udfff": ["x\ud800y", 2**70, -(2**70), orjson.Fragment(b'{"z":[1]}')], "n": 1}

    assert (
        dumps(value)
        == (
            '{"a\ufffd":["x\ufffdy",1180591620717411303424,-1180591620717411303424,{"z":[1]}],"n":1}'
        ).encode()
    )


@pytest.mark.parametrize(
    ("path", "error", "status", "code"),
    [
        (
            "/graphql",
            psycopg.OperationalError("connection failed: secret host"),
            503,
            "SERVICE_UNAVAILABLE",
        ),
        (
            "/hooks/x",
            psycopg.OperationalError("connection failed: secret host"),
            503,
            "SERVICE_UNAVAILABLE",
        ),
        ("/graphql", RuntimeError("SELECT secret FROM somewhere"), 500, "INTERNAL_SERVER_ERROR"),
        ("/other", RuntimeError("SELECT secret FROM somewhere"), 500, "INTERNAL_SERVER_ERROR"),
    ],
    ids=["graphql-database", "hooks-database", "graphql-bug", "other-bug"],
)
async def test_an_exception_no_handler_caught_is_answered_masked_with_its_request_id(
    path: str, error: Exception, status: int, code: str
) -> None:
    # Given an app behind the request middleware that raises whatever it is asked
    async def failing(scope: dict, receive: object, send: object) -> None:
        raise error

    app = RequestContext(failing, retry_after=7)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as client:
        # When a request reaches it
        response = await client.post(path, json={})
    # Then the answer is JSON in the path's shape, with the code and the request id only
    request_id = response.headers["x-request-id"]
    message = UNAVAILABLE_MESSAGE if status == 503 else UNEXPECTED_MESSAGE
    expected: dict = (
        {
            "data": None,
            "errors": [{"message": message, "extensions": {"code": code, "requestId": request_id}}],
        }
        if path == "/graphql"
        else {"error": {"code": code, "message": message, "requestId": request_id}}
    )
    assert (response.status_code, response.json()) == (status, expected)
    assert response.headers.get("retry-after") == ("7" if status == 503 else None)
    assert "secret" not in response.text
