"""GraphQL over HTTP (the specification's draft): every rule checked through HTTP.

https://graphql.github.io/graphql-over-http/draft/ — media types and Accept negotiation,
status codes for request errors with application/graphql-response+json (and the legacy
application/json answers), GET for queries only, Content-Type, methods, and GraphQL-shaped
refusals. Refused operations write nothing.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.factories import Account, Factory

MODERN = "application/graphql-response+json"
LEGACY = "application/json"
SPEC_ACCEPT = f"{MODERN}, {LEGACY};q=0.9"
TYPENAME = "{ __typename }"  # introspection only: runs without a token
VIEWER = "query Viewer { viewer { email } }"
CREATE_WORKSPACE = (
    'mutation Create { workspaceCreate(input: {name: "Over HTTP"}) { workspace { name } } }'
)
SIGN_IN = "Sign in with an API token: Authorization: Bearer <token>."
JSON_BODY = "Send the request body as application/json (Content-Type: application/json)."


def refused(message: str) -> dict[str, Any]:
    """The GraphQL-shaped body of a refused request."""
    return {"errors": [{"message": message}]}


def without_locations(body: dict[str, Any]) -> dict[str, Any]:
    """The body with every error's source locations removed (they add nothing here)."""
    for error in body.get("errors", []):
        error.pop("locations", None)
    return body


@pytest.fixture
async def owner(factory: Factory) -> Account:
    """The owner of workspace "Acme"."""
    return await factory.owner()


async def post(
    client: httpx.AsyncClient,
    body: object,
    *,
    accept: str | None = SPEC_ACCEPT,
    token: str | None = None,
    content_type: str | None = LEGACY,
) -> httpx.Response:
    """POST a GraphQL request (``body`` encoded as JSON unless it is bytes)."""
    headers = {}
    if accept is not None:
        headers["accept"] = accept
    if content_type is not None:
        headers["content-type"] = content_type
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = client.build_request("POST", "/graphql", content=content, headers=headers)
    if accept is None:
        del request.headers["accept"]  # httpx adds */* by default
    return await client.send(request)


def answer(response: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    """Status, media type and decoded body (locations removed)."""
    return (
        response.status_code,
        response.headers["content-type"],
        without_locations(response.json()),
    )


# --- media types: Accept negotiation ------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        pytest.param(None, LEGACY, id="no-accept"),
        pytest.param("*/*", LEGACY, id="any"),
        pytest.param("application/*", LEGACY, id="application-any"),
        pytest.param(LEGACY, LEGACY, id="json"),
        pytest.param(MODERN, MODERN, id="graphql-response"),
        pytest.param(f"{MODERN}; charset=utf-8", MODERN, id="graphql-response-utf-8"),
        pytest.param(SPEC_ACCEPT, MODERN, id="spec-recommended"),
        pytest.param(f"{LEGACY}, {MODERN}", MODERN, id="both-named"),
        pytest.param(f"{LEGACY}, {MODERN};q=0.5", LEGACY, id="json-preferred"),
        pytest.param(f"{MODERN};q=0.2, */*;q=0.1", MODERN, id="graphql-response-over-wildcard"),
        pytest.param(f"text/html, {MODERN};q=0.9, */*;q=0.8", MODERN, id="browser-like"),
    ],
)
async def test_the_response_media_type_follows_accept(client, accept, media_type):
    response = await post(client, {"query": TYPENAME}, accept=accept)

    assert answer(response) == (
        200,
        f"{media_type}; charset=utf-8",
        {"data": {"__typename": "Query"}},
    )


@pytest.mark.parametrize(
    "accept",
    ["text/plain", "text/html", f"{MODERN};q=0, {LEGACY};q=0", "application/xml, text/*"],
)
async def test_an_accept_header_allowing_no_json_type_is_406_and_runs_nothing(
    client, factory, owner, accept
):
    before = await factory.snapshot()

    response = await post(client, {"query": CREATE_WORKSPACE}, accept=accept, token=owner.token)

    assert answer(response) == (
        406,
        "application/json; charset=utf-8",
        refused(
            "Cannot answer in any media type the Accept header allows: send Accept: "
            "application/graphql-response+json, application/json;q=0.9"
        ),
    )
    assert await factory.snapshot() == before


# --- status codes with application/graphql-response+json, and the legacy answers -----------


async def test_a_result_without_errors_is_200(client, owner):
    response = await post(client, {"query": VIEWER}, token=owner.token)

    assert answer(response) == (
        200,
        f"{MODERN}; charset=utf-8",
        {"data": {"viewer": {"email": owner.user.email}}},
    )


async def test_a_document_that_does_not_parse_is_400_without_data(client, owner):
    body = {"query": "{ viewer { email }"}
    error = {"errors": [{"message": "Syntax Error: Expected Name, found <EOF>."}]}

    modern = await post(client, body, token=owner.token)
    legacy = await post(client, body, accept=LEGACY, token=owner.token)

    assert answer(modern) == (400, f"{MODERN}; charset=utf-8", error)
    assert answer(legacy) == (200, f"{LEGACY}; charset=utf-8", {"data": None, **error})


async def test_a_document_over_the_token_limit_is_a_parse_error(client, owner):
    body = {"query": "{ viewer { " + " ".join(["email"] * 3001) + " } }"}

    response = await post(client, body, token=owner.token)

    assert answer(response) == (
        400,
        f"{MODERN}; charset=utf-8",
        refused("Syntax Error: Document contains more than 3000 tokens. Parsing aborted."),
    )


async def test_a_document_that_does_not_validate_is_422_and_writes_nothing(client, factory, owner):
    body = {"query": 'mutation { workspaceCreate(input: {name: "X"}) { workspace { nope } } }'}
    error = refused("Cannot query field 'nope' on type 'Workspace'. Did you mean 'name'?")
    before = await factory.snapshot()

    modern = await post(client, body, token=owner.token)
    legacy = await post(client, body, accept=LEGACY, token=owner.token)

    assert answer(modern) == (422, f"{MODERN}; charset=utf-8", error)
    assert answer(legacy) == (200, f"{LEGACY}; charset=utf-8", {"data": None, **error})
    assert await factory.snapshot() == before


async def test_a_selection_past_the_depth_limit_is_422(client, owner):
    deep = (
        "query Deep { viewer { memberships { workspace { workflows(first: 1) { edges { node {"
        " workspace { workflows(first: 1) { edges { node { workspace { workflows(first: 1) {"
        " edges { node { id } } } } } } } } } } } } } } }"
    )

    response = await post(client, {"query": deep}, token=owner.token)

    assert answer(response) == (
        422,
        f"{MODERN}; charset=utf-8",
        refused("'Deep' exceeds maximum operation depth of 12"),
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        pytest.param(
            {"first": "ten"},
            "Variable '$first' has invalid value: Int cannot represent non-integer value: 'ten'",
            id="wrong-type",
        ),
        pytest.param(
            {},
            "Variable '$first' has invalid value: Expected a value of non-null type 'Int!'"
            " to be provided.",
            id="missing",
        ),
    ],
)
async def test_variables_that_do_not_coerce_are_422(client, owner, variables, message):
    query = (
        "query($ws: ID!, $first: Int!) { workspace(id: $ws) {"
        " workflows(first: $first) { totalCount } } }"
    )
    body = {"query": query, "variables": {"ws": owner.workspace_id, **variables}}

    modern = await post(client, body, token=owner.token)
    legacy = await post(client, body, accept=LEGACY, token=owner.token)

    assert answer(modern) == (422, f"{MODERN}; charset=utf-8", refused(message))
    assert answer(legacy) == (
        200,
        f"{LEGACY}; charset=utf-8",
        {"data": None, **refused(message)},
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"query": VIEWER, "operationName": "Other"},
            'Unknown operation named "Other".',
            id="unknown-name",
        ),
        pytest.param(
            {"query": f"{VIEWER} query Other {{ __typename }}"},
            "Must provide operation name if query contains multiple operations.",
            id="several-without-a-name",
        ),
    ],
)
async def test_an_operation_that_cannot_be_chosen_is_422(client, owner, body, message):
    modern = await post(client, body, token=owner.token)
    legacy = await post(client, body, accept=LEGACY, token=owner.token)

    assert answer(modern) == (422, f"{MODERN}; charset=utf-8", refused(message))
    assert answer(legacy) == (400, f"{LEGACY}; charset=utf-8", refused(message))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({}, "No GraphQL query found in the request", id="no-query"),
        pytest.param(
            {"query": 5},
            "The GraphQL operation's `query` must be a string or null, if provided.",
            id="query-number",
        ),
        pytest.param(
            {"query": VIEWER, "variables": [7]},
            "The GraphQL operation's `variables` must be an object or null, if provided.",
            id="variables-list",
        ),
        pytest.param(
            {"query": VIEWER, "extensions": "x"},
            "The GraphQL operation's `extensions` must be an object or null, if provided.",
            id="extensions-string",
        ),
        pytest.param(
            {"query": VIEWER, "operationName": 5},
            "The GraphQL operation's `operationName` must be a string or null, if provided.",
            id="operation-name-number",
        ),
        pytest.param(["x"], "Batching is not enabled", id="batch"),
        pytest.param(
            "{ viewer { email } }", "The request body must be a JSON object.", id="string"
        ),
    ],
)
async def test_a_request_that_is_not_well_formed_is_422(client, owner, body, message):
    modern = await post(client, body, token=owner.token)
    legacy = await post(client, body, accept=LEGACY, token=owner.token)

    assert answer(modern) == (422, f"{MODERN}; charset=utf-8", refused(message))
    assert answer(legacy) == (400, f"{LEGACY}; charset=utf-8", refused(message))


@pytest.mark.parametrize("body", [b"NONSENSE", b'{"query":', b'{"query": "\xff"}'])
async def test_a_body_that_is_not_json_is_400_as_application_json(client, owner, body):
    response = await post(client, body, token=owner.token)

    assert answer(response) == (
        400,
        f"{LEGACY}; charset=utf-8",
        refused("Unable to parse request body as JSON"),
    )


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, SIGN_IN), ("fdk_not-a-token", "Invalid API token.")],
    ids=["no-token", "unknown-token"],
)
async def test_no_valid_token_is_401_with_a_bearer_challenge(client, token, message):
    modern = await post(client, {"query": VIEWER}, token=token)
    legacy = await post(client, {"query": VIEWER}, accept=LEGACY, token=token)

    error = {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]}
    assert answer(modern) == (401, f"{MODERN}; charset=utf-8", error)
    assert modern.headers["www-authenticate"] == "Bearer"
    assert answer(legacy) == (200, f"{LEGACY}; charset=utf-8", {"data": None, **error})
    assert "www-authenticate" not in legacy.headers


async def test_data_with_a_field_error_is_294_partial_success(client, owner):
    body = {"query": 'query { viewer { email } workflow(id: "V29ya2Zsb3c6bm9wZQ==") { id } }'}

    modern = await post(client, body, token=owner.token)
    legacy = await post(client, body, accept=LEGACY, token=owner.token)

    for response, status, media_type in ((modern, 294, MODERN), (legacy, 200, LEGACY)):
        assert response.status_code == status
        assert response.headers["content-type"] == f"{media_type}; charset=utf-8"
        decoded = response.json()
        assert decoded["data"] == {"viewer": {"email": owner.user.email}, "workflow": None}
        assert [e["extensions"]["code"] for e in decoded["errors"]] == ["NOT_FOUND"]
        assert [e["path"] for e in decoded["errors"]] == [["workflow"]]


# --- Content-Type -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/graphql",
        "application/jsonx",
        "application/json; charset=latin-1",
    ],
)
async def test_a_body_not_in_json_utf_8_is_415_and_writes_nothing(
    client, factory, owner, content_type
):
    before = await factory.snapshot()

    response = await post(
        client, {"query": CREATE_WORKSPACE}, content_type=content_type, token=owner.token
    )

    message = (
        "The request body must be UTF-8 (charset=utf-8, or no charset)."
        if content_type and "charset" in content_type
        else JSON_BODY
    )
    assert answer(response) == (415, f"{LEGACY}; charset=utf-8", refused(message))
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON; Charset=UTF-8"]
)
async def test_json_with_a_utf_8_charset_is_accepted(client, owner, content_type):
    response = await post(client, {"query": VIEWER}, content_type=content_type, token=owner.token)

    assert response.json() == {"data": {"viewer": {"email": owner.user.email}}}


# --- GET: queries only --------------------------------------------------------------------


async def get(
    client: httpx.AsyncClient, params: dict[str, str], *, token: str | None = None, **headers: str
) -> httpx.Response:
    """GET /graphql with ``params`` in the query string."""
    sent = {"accept": SPEC_ACCEPT, **headers}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    return await client.get("/graphql", params=params, headers=sent)


async def test_a_query_runs_over_get(client, owner):
    response = await get(
        client,
        {"query": "query Me($x: Boolean!) { viewer @include(if: $x) { email } }"}
        | {"variables": json.dumps({"x": True}), "operationName": "Me"},
        token=owner.token,
    )

    assert answer(response) == (
        200,
        f"{MODERN}; charset=utf-8",
        {"data": {"viewer": {"email": owner.user.email}}},
    )


async def test_empty_optional_get_parameters_count_as_absent(client, owner):
    response = await get(
        client,
        {"query": VIEWER, "operationName": "", "variables": "", "extensions": ""},
        token=owner.token,
    )

    assert answer(response) == (
        200,
        f"{MODERN}; charset=utf-8",
        {"data": {"viewer": {"email": owner.user.email}}},
    )


@pytest.mark.parametrize("accept", [SPEC_ACCEPT, LEGACY])
async def test_a_mutation_over_get_is_405_and_writes_nothing(client, factory, owner, accept):
    before = await factory.snapshot()

    response = await get(client, {"query": CREATE_WORKSPACE}, token=owner.token, accept=accept)

    media_type = MODERN if accept == SPEC_ACCEPT else LEGACY
    assert answer(response) == (
        405,
        f"{media_type}; charset=utf-8",
        refused("Mutations are sent with POST, not GET."),
    )
    assert response.headers["allow"] == "POST"
    assert await factory.snapshot() == before


async def test_the_named_operation_decides_whether_get_may_run_it(client, factory, owner):
    document = f"{VIEWER} {CREATE_WORKSPACE}"
    before = await factory.snapshot()

    query = await get(client, {"query": document, "operationName": "Viewer"}, token=owner.token)
    mutation = await get(client, {"query": document, "operationName": "Create"}, token=owner.token)

    assert query.json() == {"data": {"viewer": {"email": owner.user.email}}}
    assert mutation.status_code == 405
    assert await factory.snapshot() == before


# --- subscriptions, methods ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_subscription_as_a_plain_request_says_how_to_stream_it(client, owner, method):
    document = 'subscription { runProgress(runId: "UnVuOng=") { seq } }'
    if method == "GET":
        response = await get(client, {"query": document}, token=owner.token)
    else:
        response = await post(client, {"query": document}, token=owner.token)

    assert answer(response) == (
        422,
        f"{MODERN}; charset=utf-8",
        refused(
            "A subscription streams: open a WebSocket (graphql-transport-ws) or send "
            "Accept: text/event-stream (graphql-sse)."
        ),
    )


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def test_other_methods_are_405_with_the_allowed_ones(client, method):
    response = await client.request(method, "/graphql", json={"query": TYPENAME})

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.headers["content-type"] == f"{LEGACY}; charset=utf-8"
    if method != "HEAD":
        assert response.json() == refused("GraphQL is served over GET (queries) and POST.")
