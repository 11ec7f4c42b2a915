"""Hostile requests to /graphql: bodies, headers, documents and query limits.

Operations' arguments are covered by ``test_hostile_inputs``; this module covers what
reaches the endpoint before any resolver runs. No request may ever produce an HTTP 500.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from graphql.language import Lexer, Source, TokenKind

from tests.factories import Account
from tests.hostile import (
    CREATE,
    NUL_PROBLEM,
    SIGN_IN,
    VIEWER,
    graph_of_size,
    unstorable,
    validation_failure,
    without_locations,
)

MAX_BODY = 4 * 1024 * 1024
TOO_LARGE = {
    "errors": [
        {
            "message": f"Request body over {MAX_BODY} bytes.",
            "extensions": {"code": "PAYLOAD_TOO_LARGE"},
        }
    ]
}
UNPARSEABLE = "Unable to parse request body as JSON"


def refused(message: str) -> dict[str, object]:
    """The GraphQL-shaped body of a refused request."""
    return {"errors": [{"message": message}]}


def create_body(owner: Account, graph: object, name: str = "Big") -> str:
    """A workflowCreate request body."""
    variables = {"input": {"workspaceId": owner.workspace_id, "name": name, "graph": graph}}
    return json.dumps({"query": CREATE, "variables": variables})


async def answer(response: httpx.Response) -> tuple[int, object]:
    """Status and body of a response: decoded JSON when it is JSON, else the text."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.status_code, without_locations(response.json())
    return response.status_code, response.text


# --- body size ----------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_over_four_mib_is_413_and_writes_nothing(api, owner, streamed):
    # Given a 5 MB body (a workflowCreate with a 5 MB graph), declared or streamed in chunks
    body = create_body(owner, graph_of_size(5 * 1000 * 1000)).encode()
    before = await api.state()
    # When it is posted
    if streamed:

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        response = await api.client.post(
            "/graphql",
            content=chunks(),
            headers={"content-type": "application/json", "authorization": f"Bearer {owner.token}"},
        )
    else:
        response = await api.post(body, owner.token)
    # Then 413 with PAYLOAD_TOO_LARGE, and nothing was written
    assert await answer(response) == (413, TOO_LARGE)
    assert await api.state() == before


async def test_body_of_exactly_four_mib_is_read_and_one_byte_more_is_413(api, owner):
    # Given a workflowCreate padded with JSON whitespace to exactly 4 MiB, and to 4 MiB + 1
    body = create_body(owner, {"nodes": [], "edges": []}, "Padded")
    exact = body[:-1] + " " * (MAX_BODY - len(body)) + "}"
    assert len(exact.encode()) == MAX_BODY
    # When each is posted
    over = await api.post(exact[:-1] + " }", owner.token)
    at_limit = await api.post(exact, owner.token)
    # Then only the one over the limit is refused
    assert await answer(over) == (413, TOO_LARGE)
    status, created = await answer(at_limit)
    assert (status, created["data"]["workflowCreate"]["workflow"]["name"]) == (200, "Padded")


# --- bodies that are not a GraphQL request --------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"query": ', id="truncated"),
        pytest.param(b"{'query': '{ viewer { email } }'}", id="single-quotes"),
        pytest.param(b'{"query": "{ viewer { email } }"} trailing', id="trailing-garbage"),
        pytest.param(b'{"query": "\xff\xfe"}', id="invalid-utf-8"),
        pytest.param(b'{"query": "\xed\xa0\x80"}', id="utf-8-encoded-surrogate"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_body_that_is_not_json_is_400(api, owner, body):
    response = await api.post(body, owner.token)
    assert await answer(response) == (400, refused(UNPARSEABLE))


@pytest.mark.parametrize(
    "body",
    [b"null", b"true", b"1", b'"{ viewer { email } }"'],
    ids=["null", "true", "number", "string"],
)
async def test_json_body_that_is_not_an_object_is_400(api, owner, body):
    # Any JSON value is parseable; a GraphQL request must be an object (a 500 is never right)
    response = await api.post(body, owner.token)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{}", "No GraphQL query found in the request", id="no-query"),
        pytest.param(b"[]", "Batching is not enabled", id="batch"),
        pytest.param(
            b'{"query": 5}',
            "The GraphQL operation's `query` must be a string or null, if provided.",
            id="query-number",
        ),
        pytest.param(
            b'{"query": "{ viewer { email } }", "variables": []}',
            "The GraphQL operation's `variables` must be an object or null, if provided.",
            id="variables-list",
        ),
        pytest.param(
            b'{"query": "{ viewer { email } }", "variables": "x"}',
            "The GraphQL operation's `variables` must be an object or null, if provided.",
            id="variables-string",
        ),
        pytest.param(
            b'{"query": "{ viewer { email } }", "extensions": 1}',
            "The GraphQL operation's `extensions` must be an object or null, if provided.",
            id="extensions-number",
        ),
        pytest.param(
            b'{"query": "query A { viewer { email } }", "operationName": "B"}',
            'Unknown operation named "B".',
            id="unknown-operation",
        ),
    ],
)
async def test_request_of_the_wrong_shape_is_400(api, owner, body, message):
    response = await api.post(body, owner.token)
    assert await answer(response) == (400, refused(message))


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_body_of_another_content_type_is_415(api, owner, content_type):
    # GraphQL over HTTP: an unsupported Content-Type is 415 Unsupported Media Type
    body = json.dumps({"query": VIEWER})
    response = await api.post(body, owner.token, headers={"content-type": content_type})
    assert await answer(response) == (
        415,
        refused("Send the request body as application/json (Content-Type: application/json)."),
    )


async def test_mutation_over_get_is_refused_and_writes_nothing(api, owner):
    before = await api.state()
    response = await api.client.get(
        "/graphql",
        params={
            "query": 'mutation { workspaceCreate(input: {name: "Via GET"}) { workspace { id } } }'
        },
        headers={"authorization": f"Bearer {owner.token}", "accept": "application/json"},
    )
    # GraphQL over HTTP: a mutation over GET is 405, with the method it needs
    assert await answer(response) == (405, refused("Mutations are sent with POST, not GET."))
    assert response.headers["allow"] == "POST"
    assert await api.state() == before


# --- hostile characters in the document ---------------------------------------------------

CREATE_WORKSPACE_LITERAL = (
    "mutation { workspaceCreate(input: {name: NAME}) {"
    " workspace { name } userErrors { field code message } } }"
)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            "{ viewer { email } }\x00",
            "Syntax Error: Unexpected character: U+0000.",
            id="nul",
        ),
        pytest.param(
            "{ viewer { email } } # \ud800",
            "Syntax Error: Invalid character: U+D800.",
            id="lone-surrogate-in-comment",
        ),
        pytest.param(
            CREATE_WORKSPACE_LITERAL.replace("NAME", '"\ud800"'),
            "Syntax Error: Invalid character within String: U+D800.",
            id="lone-surrogate-in-string",
        ),
        pytest.param(
            CREATE_WORKSPACE_LITERAL.replace("NAME", '"\\ud800"'),
            "Syntax Error: Invalid Unicode escape sequence: '\\ud800'.",
            id="escaped-lone-surrogate",
        ),
    ],
)
async def test_document_with_unusable_characters_is_a_syntax_error(api, owner, document, message):
    before = await api.state()
    body = await api.gql(document, token=owner.token)
    assert body == validation_failure(message)
    assert await api.state() == before


async def test_nul_escaped_in_a_string_literal_is_refused_before_anything_runs(api, owner):
    # The literal parses (\u0000 is a valid escape), but no String argument may carry NUL.
    before = await api.state()
    body = await api.gql(CREATE_WORKSPACE_LITERAL.replace("NAME", '"a\\u0000"'), token=owner.token)
    assert body == unstorable("workspaceCreate", ("input", "name"), NUL_PROBLEM)
    assert await api.state() == before


async def test_two_operations_without_an_operation_name_are_refused(api, owner):
    # GraphQL spec, GetOperation: with several operations, operationName is required.
    document = (
        'mutation A { workspaceCreate(input: {name: "A"}) { workspace { name } } }'
        ' mutation B { workspaceCreate(input: {name: "B"}) { workspace { name } } }'
    )
    before = await api.state()
    response = await api.post(json.dumps({"query": document}), owner.token)
    assert await answer(response) == (
        400,
        refused("Must provide operation name if query contains multiple operations."),
    )
    assert await api.state() == before


# --- the Authorization header -------------------------------------------------------------


async def test_only_a_bearer_authorization_header_authenticates(api, owner):
    shapes = {
        "bearer-without-token": "Bearer",
        "bearer-blank": "Bearer   ",
        "basic-scheme": f"Basic {owner.token}",
        "no-scheme": owner.token,
        "lower-case-padded": f"bearer   {owner.token}  ",
    }
    results = {}
    for label, value in shapes.items():
        response = await api.client.post(
            "/graphql", json={"query": VIEWER}, headers={"authorization": value}
        )
        results[label] = await answer(response)
    # Checked once per operation, before any resolver: the error belongs to no field.
    denied = (
        200,
        {"data": None, "errors": [{"message": SIGN_IN, "extensions": {"code": "UNAUTHENTICATED"}}]},
    )
    assert results == {
        "bearer-without-token": denied,
        "bearer-blank": denied,
        "basic-scheme": denied,
        "no-scheme": denied,
        "lower-case-padded": (200, {"data": {"viewer": {"email": owner.user.email}}}),
    }


# --- query limits: depth, aliases, tokens, nesting ----------------------------------------

DEEP_FIELDS = [
    "workflowCreate(input: $input)",
    "workflow",
    "workspace",
    "workflows(first: 1)",
    "edges",
    "node",
    "workspace",
    "workflows(first: 1)",
    "edges",
    "node",
    "workspace",
    "workflows(first: 1)",
    "edges",
]


def deep_create(depth: int) -> str:
    """A workflowCreate whose selection reaches ``depth`` (12: totalCount, 13: cursor)."""
    fields = DEEP_FIELDS[:depth]
    leaf = {12: "totalCount", 13: "cursor"}[depth]
    selection = " { ".join(fields) + " { " + leaf + " }" * len(fields)
    return "mutation Deep($input: WorkflowCreateInput!) { " + selection + " }"


def aliased_creates(count: int) -> str:
    """One operation creating ``count`` workflows under aliases."""
    calls = " ".join(
        f'a{i}: workflowCreate(input: {{workspaceId: $ws, name: "W{i}"}}) {{ userErrors {{ code }} }}'
        for i in range(count)
    )
    return "mutation Many($ws: ID!) { " + calls + " }"


def token_count(document: str) -> int:
    """Lexer tokens of a GraphQL document, as the token limit counts them."""
    lexer, count = Lexer(Source(document)), 0
    while lexer.advance().kind is not TokenKind.EOF:
        count += 1
    return count


def create_with_tokens(total: int) -> str:
    """A workflowCreate of exactly ``total`` tokens (an inline graph literal pads it)."""

    def document(padding: int) -> str:
        return (
            'mutation Big($ws: ID!) { workflowCreate(input: {workspaceId: $ws, name: "Big",'
            " graph: {nodes: [], edges: [], pad: [" + "0 " * padding + "]}})"
            " { userErrors { code } } }"
        )

    padded = document(total - token_count(document(0)))
    assert token_count(padded) == total
    return padded


async def test_selection_twelve_deep_is_executed(api, owner):
    variables = {"input": {"workspaceId": owner.workspace_id, "name": "Deep"}}
    body = await api.gql(deep_create(12), variables, owner.token)
    assert "errors" not in body, body
    assert (await api.factory.snapshot())["workflows"] == 1


async def test_selection_thirteen_deep_is_rejected_and_not_executed(api, owner):
    before = await api.state()
    variables = {"input": {"workspaceId": owner.workspace_id, "name": "Deep"}}
    body = await api.gql(deep_create(13), variables, owner.token)
    assert body == validation_failure("'Deep' exceeds maximum operation depth of 12")
    assert await api.state() == before


async def test_thirty_aliases_are_executed(api, owner):
    body = await api.gql(aliased_creates(30), {"ws": owner.workspace_id}, owner.token)
    assert body == {"data": {f"a{i}": {"userErrors": []} for i in range(30)}}
    assert (await api.factory.snapshot())["workflows"] == 30


async def test_thirty_one_aliases_are_rejected_and_not_executed(api, owner):
    before = await api.state()
    body = await api.gql(aliased_creates(31), {"ws": owner.workspace_id}, owner.token)
    assert body == validation_failure("31 aliases found. Allowed: 30")
    assert await api.state() == before


async def test_three_thousand_tokens_are_executed(api, owner):
    body = await api.gql(create_with_tokens(3000), {"ws": owner.workspace_id}, owner.token)
    assert body == {"data": {"workflowCreate": {"userErrors": []}}}


async def test_three_thousand_and_one_tokens_are_rejected_and_not_executed(api, owner):
    before = await api.state()
    body = await api.gql(create_with_tokens(3001), {"ws": owner.workspace_id}, owner.token)
    assert body == validation_failure(
        "Syntax Error: Document contains more than 3000 tokens. Parsing aborted."
    )
    assert await api.state() == before


@pytest.mark.parametrize(
    "document",
    [
        pytest.param("{" + "a {" * 900 + " b" + " }" * 900 + " }", id="selection-900-deep"),
        pytest.param(
            'mutation { workflowCreate(input: {workspaceId: "x", name: "D", graph: '
            + "[" * 1400
            + "]" * 1400
            + "}) { userErrors { code } } }",
            id="literal-1400-deep",
        ),
    ],
)
async def test_document_nested_too_deeply_is_rejected_and_not_executed(api, owner, document):
    before = await api.state()
    body = await api.gql(document, token=owner.token)
    assert body == validation_failure(
        "Syntax Error: Document is nested too deeply. Parsing aborted."
    )
    assert await api.state() == before
