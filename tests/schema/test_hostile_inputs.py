"""Hostile inputs to every mutation and query: refused exactly, nothing written, never a 500.

Every request goes through ``Api``, which fails the test on an HTTP 500 or a masked
INTERNAL_SERVER_ERROR, whatever else the test asserts. Refused mutations are checked with
``Api.state()``: row counts (``factory.snapshot()``) plus a digest of every column that a
mutation may change, so an UPDATE that should not have happened is caught too.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from app.auth.tokens import hash_token
from app.models import Role
from tests.factories import Account, Factory, gid
from tests.hostile import (
    CREATE,
    MIB,
    SAVE,
    SIGN_IN,
    SQL_INJECTION,
    VERSION_FIELDS,
    VIEWER,
    Api,
    bad_input,
    chain,
    edge,
    graph_of_size,
    node,
    problem_of,
    signed_out,
    top_error,
    unstorable,
    user_error,
    validation_failure,
)

# --- operations ---------------------------------------------------------------------------

ROLLBACK = (
    "mutation Rollback($input: WorkflowRollbackInput!) { workflowRollback(input: $input) {"
    f" workflow {{ id currentVersion {{ {VERSION_FIELDS} }} }}"
    " userErrors { field code message } } }"
)
DELETE = (
    "mutation Delete($id: ID!) { workflowDelete(id: $id) {"
    " deletedId userErrors { field code message } } }"
)
SET_TEMPLATE = (
    "mutation SetTemplate($input: WorkflowSetTemplateInput!) {"
    " workflowSetTemplate(input: $input) {"
    " workflow { id isTemplate templateCategory } userErrors { field code message } } }"
)
CLONE = (
    "mutation Clone($input: TemplateCloneInput!) { templateClone(input: $input) {"
    " workflow { id name currentVersion { number graph } } userErrors { field code message } } }"
)
WORKSPACE_CREATE = (
    "mutation WorkspaceCreate($input: WorkspaceCreateInput!) { workspaceCreate(input: $input) {"
    " workspace { id name } userErrors { field code message } } }"
)
MEMBER_SET = (
    "mutation MemberSet($input: MemberSetInput!) { memberSet(input: $input) {"
    " membership { role user { email } } userErrors { field code message } } }"
)
TOKEN_CREATE = (
    "mutation TokenCreate($input: ApiTokenCreateInput!) { apiTokenCreate(input: $input) {"
    " apiToken { name expiresAt } token userErrors { field code message } } }"
)
WORKFLOW = (
    "query Workflow($id: ID!) { workflow(id: $id) {"
    f" id name description currentVersion {{ {VERSION_FIELDS} }} }} }}"
)
WORKSPACE = "query Workspace($id: ID!) { workspace(id: $id) { id name } }"
WORKFLOW_LIST = (
    "query List($id: ID!, $first: Int!, $after: String, $search: String) {"
    " workspace(id: $id) { workflows(first: $first, after: $after, search: $search) {"
    " totalCount pageInfo { hasNextPage endCursor } edges { node { name } } } } }"
)
VERSION_LIST = (
    "query History($id: ID!, $first: Int!, $after: String) { workflow(id: $id) {"
    " versions(first: $first, after: $after) {"
    " totalCount pageInfo { hasNextPage endCursor } edges { node { number } } } } }"
)
VERSION = (
    "query Version($id: ID!, $n: Int!) { workflow(id: $id) { version(number: $n) { number } } }"
)
DIFF = (
    "query Diff($id: ID!, $from: Int!, $to: Int!) { workflow(id: $id) { diff(from: $from, to: $to)"
    " { nodesAdded nodesRemoved nodesChanged { nodeId fields } edgesAdded edgesRemoved } } }"
)
VALIDATE = (
    "query Validate($graph: JSON!) {"
    " validateGraph(graph: $graph) { severity code message nodeId edgeId path } }"
)
TEMPLATES = "query Templates($id: ID!) { templates(workspaceId: $id) { id name source } }"

# Payload fields other than userErrors, all null on a refusal.
PAYLOAD_NULLS: dict[str, dict[str, None]] = {
    "workflowCreate": {"workflow": None},
    "workflowSave": {"workflow": None},
    "workflowRollback": {"workflow": None},
    "workflowDelete": {"deletedId": None},
    "workflowSetTemplate": {"workflow": None},
    "templateClone": {"workflow": None},
    "workspaceCreate": {"workspace": None},
    "memberSet": {"membership": None},
    "apiTokenCreate": {"apiToken": None, "token": None},
}
MUTATIONS = list(PAYLOAD_NULLS)
BUILTIN_TEMPLATE = gid("Template", "call-api-and-branch")

# --- messages -----------------------------------------------------------------------------

INVALID_TOKEN = "Invalid API token."
EXPIRED_TOKEN = "This API token has expired."
BLANK = "Must not be blank."
TOO_LONG = "At most 200 characters."
CONTROL = "Must not contain control characters."
BAD_EMAIL = "Not a valid email address."
NAN = "Number is NaN or infinite, which JSON cannot store."
BIG_INT = "Integer does not fit in 64 bits."
NUL = "String contains a NUL character, which JSONB cannot store."
SURROGATE = "String contains a lone surrogate, which is not valid UTF-8."
NUL_KEY = "Object has a key that contains a NUL character, which JSONB cannot store."
SURROGATE_KEY = "Object has a key that contains a lone surrogate, which is not valid UTF-8."
TOO_DEEP = "Value is nested deeper than 32 levels."
INVALID_CURSOR = "Invalid cursor."
PAGE_SIZE = "first must be between 0 and 100."
LAST_OWNER = "A workspace keeps at least one owner; make someone else owner first."


def forbidden(needed: Role, role: Role) -> str:
    """The FORBIDDEN message for a caller with ``role`` when ``needed`` is required."""
    return f"This needs the {needed.value} role in the workspace; you are {role.value}."


def refused(mutation: str, *errors: dict[str, Any]) -> dict[str, Any]:
    """The exact response body of a mutation refused with ``errors``."""
    return {"data": {mutation: {**PAYLOAD_NULLS[mutation], "userErrors": list(errors)}}}


# --- graphs -------------------------------------------------------------------------------

SAMPLE = chain(2)


def one_value(value_json: str) -> str:
    """Graph JSON text with one trigger node whose data.v is ``value_json`` (raw JSON text)."""
    return (
        '{"nodes": [{"id": "a", "type": "trigger", "data": {"v": '
        + value_json
        + '}}], "edges": []}'
    )


def one_key(key_json: str) -> str:
    """Graph JSON text with one trigger node whose data has the key ``key_json`` (raw JSON)."""
    node_json = '{"id": "a", "type": "trigger", "data": {' + key_json + ": 1}}"
    return '{"nodes": [' + node_json + '], "edges": []}'


def with_raw_graph(variables: dict[str, Any], graph_json: str) -> str:
    """Variables as JSON text, with the raw ``graph_json`` as input.graph (or as graph)."""
    placeholder = "__GRAPH__"
    if "input" in variables:
        variables = {**variables, "input": {**variables["input"], "graph": placeholder}}
    else:
        variables = {**variables, "graph": placeholder}
    return json.dumps(variables).replace(json.dumps(placeholder), graph_json)


def nested(depth: int) -> str:
    """Graph JSON text with ``depth`` nested arrays under "deep" (the graph is level 1)."""
    return '{"nodes": [], "edges": [], "deep": ' + "[" * depth + "]" * depth + "}"


VALUE = ("nodes", "0", "data", "v")
DEEP_PATH = ("deep", *("0",) * 31)

# (graph as raw JSON text, [(path in the graph, diagnostic code, message)])
BAD_GRAPHS = [
    pytest.param(
        "[]", [((), "GRAPH_NOT_OBJECT", "The graph must be an object, got array.")], id="array"
    ),
    pytest.param(
        '"g"', [((), "GRAPH_NOT_OBJECT", "The graph must be an object, got string.")], id="string"
    ),
    pytest.param(
        "42", [((), "GRAPH_NOT_OBJECT", "The graph must be an object, got number.")], id="number"
    ),
    pytest.param(
        "true",
        [((), "GRAPH_NOT_OBJECT", "The graph must be an object, got boolean.")],
        id="boolean",
    ),
    pytest.param(
        '{"nodes": {}, "edges": []}',
        [(("nodes",), "NODES_NOT_LIST", '"nodes" must be an array, got object.')],
        id="nodes-object",
    ),
    pytest.param(
        '{"nodes": null, "edges": []}',
        [(("nodes",), "NODES_NOT_LIST", '"nodes" must be an array, got null.')],
        id="nodes-null",
    ),
    pytest.param(
        '{"nodes": [], "edges": "e"}',
        [(("edges",), "EDGES_NOT_LIST", '"edges" must be an array, got string.')],
        id="edges-string",
    ),
    pytest.param(
        '{"nodes": [1], "edges": []}',
        [(("nodes", "0"), "NODE_NOT_OBJECT", "Node #0 must be an object, got number.")],
        id="node-not-object",
    ),
    pytest.param(
        '{"nodes": [{"type": "trigger"}], "edges": []}',
        [(("nodes", "0", "id"), "ID_MISSING", "Node #0 has no id; it must be a non-empty string.")],
        id="node-without-id",
    ),
    pytest.param(
        '{"nodes": [{"id": "a", "type": "trigger"}, {"id": "a", "type": "x"}], "edges": []}',
        [(("nodes", "1", "id"), "ID_DUPLICATE", 'Node id "a" is used by more than one node.')],
        id="duplicate-node-id",
    ),
    pytest.param(
        '{"nodes": [{"id": "a", "type": "trigger"}],'
        ' "edges": [{"id": "e", "source": "a", "target": "zzz"}]}',
        [
            (
                ("edges", "0", "target"),
                "EDGE_TARGET_UNKNOWN",
                'Edge "e" points to node "zzz", which does not exist.',
            )
        ],
        id="edge-to-missing-node",
    ),
    pytest.param(one_value("NaN"), [(VALUE, "INVALID_JSON_VALUE", NAN)], id="nan"),
    pytest.param(one_value("Infinity"), [(VALUE, "INVALID_JSON_VALUE", NAN)], id="infinity"),
    pytest.param(one_value("-Infinity"), [(VALUE, "INVALID_JSON_VALUE", NAN)], id="-infinity"),
    pytest.param(one_value("1e400"), [(VALUE, "INVALID_JSON_VALUE", NAN)], id="1e400"),
    pytest.param(one_value(str(10**400)), [(VALUE, "INVALID_JSON_VALUE", BIG_INT)], id="10**400"),
    pytest.param(
        one_value(str(-(10**400))), [(VALUE, "INVALID_JSON_VALUE", BIG_INT)], id="-10**400"
    ),
    pytest.param(one_value(str(2**63)), [(VALUE, "INVALID_JSON_VALUE", BIG_INT)], id="2**63"),
    pytest.param(
        one_value('"a\\u0000b"'), [(VALUE, "INVALID_JSON_VALUE", NUL)], id="nul-in-string"
    ),
    pytest.param(
        one_key('"k\\u0000"'),
        [(("nodes", "0", "data"), "INVALID_JSON_VALUE", NUL_KEY)],
        id="nul-in-key",
    ),
    pytest.param(
        one_value('"\\ud800"'), [(VALUE, "INVALID_JSON_VALUE", SURROGATE)], id="lone-surrogate"
    ),
    pytest.param(
        one_key('"\\udfff"'),
        [(("nodes", "0", "data"), "INVALID_JSON_VALUE", SURROGATE_KEY)],
        id="lone-surrogate-key",
    ),
    pytest.param(nested(32), [(DEEP_PATH, "TOO_DEEP", TOO_DEEP)], id="depth-33"),
    pytest.param(
        json.dumps(chain(501)),
        [(("nodes",), "TOO_MANY_NODES", "The graph has 501 nodes; the maximum is 500.")],
        id="501-nodes",
    ),
    pytest.param(
        json.dumps(
            {
                "nodes": [node("t", "trigger"), node("a")],
                "edges": [edge(f"e{i}", "t", "a") for i in range(2001)],
            }
        ),
        [(("edges",), "TOO_MANY_EDGES", "The graph has 2001 edges; the maximum is 2000.")],
        id="2001-edges",
    ),
    pytest.param(
        json.dumps({"nodes": [node("i" * 201, "trigger")], "edges": []}),
        [
            (
                ("nodes", "0", "id"),
                "ID_TOO_LONG",
                "Node #0 has an id of 201 characters; the maximum is 200.",
            )
        ],
        id="201-char-id",
    ),
    pytest.param(
        one_value(json.dumps("s" * 100_001)),
        [(VALUE, "STRING_TOO_LONG", "String is 100001 characters long; the maximum is 100000.")],
        id="100001-char-string",
    ),
]

# Graphs at the limits, and values that look odd but are plain JSON: all saved exactly.
GOOD_GRAPHS = [
    pytest.param(chain(500), id="500-nodes"),
    pytest.param(
        {
            "nodes": [node("t", "trigger"), node("a")],
            "edges": [edge(f"e{i}", "t", "a") for i in range(2000)],
        },
        id="2000-edges",
    ),
    pytest.param({"nodes": [node("i" * 200, "trigger")], "edges": []}, id="200-char-id"),
    pytest.param(
        {"nodes": [node("t", "trigger", v="s" * 100_000)], "edges": []}, id="100000-chars"
    ),
    pytest.param(json.loads(nested(31)), id="depth-32"),
    pytest.param(
        {
            "nodes": [node("t", "trigger", big=2**63 - 1, small=-(2**63) + 1, f=0.1, neg=-1.5)],
            "edges": [],
        },
        id="64-bit-numbers",
    ),
    pytest.param(
        {
            "nodes": [
                node(
                    SQL_INJECTION,
                    "trigger",
                    sql=SQL_INJECTION,
                    like="%_\\",
                    unicode="\u00e9\U0001f600\u202e\u2028\u200b",
                    quote='"',
                    **{"": "empty key", "k\\ey": None, "\u00e9": [True, False, {}]},
                )
            ],
            "edges": [],
            "unknownTopLevelKey": {"kept": True},
        },
        id="odd-but-valid-json",
    ),
    pytest.param(graph_of_size(MIB), id="exactly-1MiB"),
]


def cursor(key: object) -> str:
    """A cursor encoded the way the API encodes its own."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@pytest.fixture
async def workflow(api: Api, owner: Account) -> str:
    """The ID of workflow "Existing" of the owner's workspace, at version 1 with SAMPLE."""
    return await api.create(owner, "Existing", SAMPLE)


async def outsider(api: Api) -> tuple[Account, str]:
    """The owner of another workspace, and the ID of a workflow there."""
    other = await api.factory.owner("Elsewhere")
    return other, await api.create(other, "Theirs", SAMPLE)


def call(
    mutation: str, workspace_id: str, workflow_id: str, template_id: str = BUILTIN_TEMPLATE
) -> tuple[str, dict[str, Any]]:
    """A call of ``mutation`` on the given workspace, workflow and template IDs."""
    return {
        "workflowCreate": (CREATE, {"input": {"workspaceId": workspace_id, "name": "New"}}),
        "workflowSave": (
            SAVE,
            {"input": {"workflowId": workflow_id, "graph": SAMPLE, "baseVersion": 1}},
        ),
        "workflowRollback": (ROLLBACK, {"input": {"workflowId": workflow_id, "toVersion": 1}}),
        "workflowDelete": (DELETE, {"id": workflow_id}),
        "workflowSetTemplate": (
            SET_TEMPLATE,
            {"input": {"workflowId": workflow_id, "isTemplate": True}},
        ),
        "templateClone": (
            CLONE,
            {"input": {"templateId": template_id, "workspaceId": workspace_id}},
        ),
        "workspaceCreate": (WORKSPACE_CREATE, {"input": {"name": "New"}}),
        "memberSet": (
            MEMBER_SET,
            {"input": {"workspaceId": workspace_id, "email": "new@example.com", "role": "VIEWER"}},
        ),
        "apiTokenCreate": (TOKEN_CREATE, {"input": {"name": "ci"}}),
    }[mutation]


async def send_all(
    api: Api, calls: dict[str, tuple[str, dict[str, Any]]], token: str | None
) -> dict[str, Any]:
    """Send each call in turn; returns each response (or crash) under its label."""
    return {
        label: await api.gql(query, variables, token, strict=False)
        for label, (query, variables) in calls.items()
    }


def mutation_calls(
    mutations: list[str], workspace_id: str, workflow_id: str, template_id: str = BUILTIN_TEMPLATE
) -> dict[str, tuple[str, dict[str, Any]]]:
    """``call`` of each mutation, labelled by its name."""
    return {m: call(m, workspace_id, workflow_id, template_id) for m in mutations}


# --- authentication -----------------------------------------------------------------------


async def expired_token(factory: Factory, account: Account) -> str:
    """A token of the account that expired a second ago."""
    token = await factory.token(account.user)
    async with factory.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = :h"
            ),
            {"h": hash_token(token)},
        )
    return token


CREDENTIALS = [
    pytest.param(None, SIGN_IN, id="no-token"),
    pytest.param("garbage", INVALID_TOKEN, id="garbage"),
    pytest.param("fdk_" + "x" * 43, INVALID_TOKEN, id="unknown-well-formed"),
    pytest.param("fdk_" + "x" * 500, INVALID_TOKEN, id="oversized"),
    pytest.param("expired", EXPIRED_TOKEN, id="expired"),
]
# Queries with arguments, and whether their field is nullable (data is then {field: null}).
QUERIES = {
    "viewer": (VIEWER, False),
    "workflow": (WORKFLOW, True),
    "workspace": (WORKSPACE, True),
    "templates": (TEMPLATES, False),
    "validateGraph": (VALIDATE, False),
}


@pytest.mark.parametrize(("credential", "message"), CREDENTIALS)
async def test_without_a_valid_token_every_operation_is_unauthenticated(
    api, factory, owner, workflow, credential, message
):
    # Given well-formed calls on real objects, and no usable token
    token = await expired_token(factory, owner) if credential == "expired" else credential
    calls = mutation_calls(MUTATIONS, owner.workspace_id, workflow)
    for field, (query, _) in QUERIES.items():
        calls[field] = (
            query,
            {"id": workflow if field == "workflow" else owner.workspace_id, "graph": SAMPLE},
        )
    before = await api.state()
    # When each is sent
    results = await send_all(api, calls, token)
    # Then each is UNAUTHENTICATED, and nothing was written
    expected = {m: signed_out(message) for m in MUTATIONS}
    for field in QUERIES:
        expected[field] = signed_out(message)
    assert results == expected
    assert await api.state() == before


async def test_malformed_ids_without_a_token_are_unauthenticated(api):
    # Given garbage IDs and no token: authentication must come before looking at any ID
    with_ids = [m for m in MUTATIONS if m not in ("workspaceCreate", "apiTokenCreate")]
    before = await api.state()
    results = await send_all(api, mutation_calls(with_ids, "garbage", "garbage", "garbage"), None)
    assert results == {m: signed_out(SIGN_IN) for m in with_ids}
    assert await api.state() == before


async def test_token_expiring_in_the_future_works(api, owner):
    variables = {"input": {"name": "soon", "expiresAt": "2999-01-01T00:00:00+00:00"}}
    body = await api.gql(TOKEN_CREATE, variables, owner.token)
    token = body["data"]["apiTokenCreate"]["token"]
    assert await api.gql(VIEWER, token=token) == {"data": {"viewer": {"email": owner.user.email}}}


# --- IDs ----------------------------------------------------------------------------------

BAD_IDS = [
    "garbage",
    "empty",
    "random",
    "not-a-uuid",
    "other-kind",
    "other-workspace",
    "201-chars",
    "lone-surrogate",
    "nul",
    "sql",
]


async def bad_id(api: Api, kind: str, bad: str, owner: Account, workflow: str) -> str:
    """An ID of ``kind`` ("Workflow" or "Workspace") that must read as not found."""
    if bad == "other-workspace":
        other, theirs = await outsider(api)
        return theirs if kind == "Workflow" else other.workspace_id
    return {
        "garbage": "garbage",
        "empty": "",
        "random": gid(kind, uuid.uuid4()),
        "not-a-uuid": gid(kind, "not-a-uuid"),
        "other-kind": owner.workspace_id if kind == "Workflow" else workflow,
        "201-chars": "V" * 201,
        "lone-surrogate": "\ud800",
        "nul": "V29ya2Zsb3c6\x00",
        "sql": SQL_INJECTION,
    }[bad]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_workflow_id_that_does_not_resolve_is_not_found(api, owner, workflow, bad):
    # Given an ID that is not one of the caller's workflows (missing, foreign, malformed)
    workflow_id = await bad_id(api, "Workflow", bad, owner, workflow)
    targets = ["workflowSave", "workflowRollback", "workflowDelete", "workflowSetTemplate"]
    calls = mutation_calls(targets, owner.workspace_id, workflow_id)
    calls["workflow"] = (WORKFLOW, {"id": workflow_id})
    before = await api.state()
    # When it is used
    results = await send_all(api, calls, owner.token)
    # Then it reads exactly like a missing workflow, and nothing was written
    expected = {t: top_error("Workflow not found.", "NOT_FOUND", [t]) for t in targets}
    expected["workflow"] = top_error(
        "Workflow not found.", "NOT_FOUND", ["workflow"], {"workflow": None}
    )
    assert results == expected
    assert await api.state() == before


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_workspace_id_that_does_not_resolve_is_not_found(api, owner, workflow, bad):
    workspace_id = await bad_id(api, "Workspace", bad, owner, workflow)
    targets = ["workflowCreate", "memberSet", "templateClone"]
    calls = mutation_calls(targets, workspace_id, workflow)
    calls["workspace"] = (WORKSPACE, {"id": workspace_id})
    calls["templates"] = (TEMPLATES, {"id": workspace_id})
    before = await api.state()
    results = await send_all(api, calls, owner.token)
    expected = {
        t: top_error("Workspace not found.", "NOT_FOUND", [t]) for t in [*targets, "templates"]
    }
    expected["workspace"] = top_error(
        "Workspace not found.", "NOT_FOUND", ["workspace"], {"workspace": None}
    )
    assert results == expected
    assert await api.state() == before


async def test_template_id_that_does_not_resolve_is_not_found(api, owner, workflow):
    # Given template IDs that are none of the caller's templates, one a foreign template
    other, theirs = await outsider(api)
    flag = {"input": {"workflowId": theirs, "isTemplate": True}}
    assert (await api.gql(SET_TEMPLATE, flag, other.token))["data"]["workflowSetTemplate"][
        "userErrors"
    ] == []
    template_ids = {
        "garbage": "garbage",
        "empty": "",
        "unknown-slug": gid("Template", "no-such-template"),
        "path-slug": gid("Template", "../gallery/daily-digest"),
        "random-workflow": gid("Workflow", uuid.uuid4()),
        "not-a-template": workflow,
        "other-workspace-template": theirs,
        "workspace-id": owner.workspace_id,
        "lone-surrogate": "\udfff",
        "201-chars": "T" * 201,
    }
    calls = {
        label: call("templateClone", owner.workspace_id, workflow, template_id)
        for label, template_id in template_ids.items()
    }
    before = await api.state()
    # When each is cloned
    results = await send_all(api, calls, owner.token)
    # Then every one reads the same: "Template not found.", and nothing was written
    not_found = top_error("Template not found.", "NOT_FOUND", ["templateClone"])
    assert results == dict.fromkeys(template_ids, not_found)
    assert await api.state() == before


# --- roles --------------------------------------------------------------------------------

NEEDS = {
    "workflowCreate": Role.EDITOR,
    "workflowSave": Role.EDITOR,
    "workflowRollback": Role.EDITOR,
    "workflowSetTemplate": Role.EDITOR,
    "templateClone": Role.EDITOR,
    "workflowDelete": Role.OWNER,
    "memberSet": Role.OWNER,
}


@pytest.mark.parametrize("mutation", list(NEEDS))
async def test_weaker_roles_are_forbidden_and_write_nothing(
    api, factory, owner, workflow, mutation
):
    # Given members of every role below what the mutation needs
    needed = NEEDS[mutation]
    weaker = [role for role in Role if role.rank < needed.rank]
    members = {role: await factory.member(of=owner, role=role) for role in weaker}
    query, variables = call(mutation, owner.workspace_id, workflow)
    before = await api.state()
    # When each calls it
    results = {role: await api.gql(query, variables, members[role].token) for role in weaker}
    # Then each is FORBIDDEN, naming both roles, and nothing was written
    assert results == {
        role: top_error(forbidden(needed, role), "FORBIDDEN", [mutation]) for role in weaker
    }
    assert await api.state() == before


@pytest.mark.parametrize("mutation", MUTATIONS)
async def test_least_role_a_mutation_needs_is_enough(api, factory, owner, workflow, mutation):
    needed = NEEDS.get(mutation, Role.VIEWER)
    caller = owner if needed is Role.OWNER else await factory.member(of=owner, role=needed)
    query, variables = call(mutation, owner.workspace_id, workflow)
    body = await api.gql(query, variables, caller.token)
    assert "errors" not in body, body
    assert body["data"][mutation]["userErrors"] == []


# --- names, descriptions, messages --------------------------------------------------------

BAD_NAMES = [
    pytest.param("", BLANK, id="empty"),
    pytest.param("   ", BLANK, id="spaces"),
    pytest.param(" \t\r\n ", BLANK, id="whitespace"),
    pytest.param("\u3000\u00a0", BLANK, id="unicode-spaces"),
    pytest.param("x" * 201, TOO_LONG, id="201-chars"),
    pytest.param("x" * 1_000_000, TOO_LONG, id="1M-chars"),
    pytest.param("a\x1bb", CONTROL, id="escape"),
    pytest.param("a\nb", CONTROL, id="inner-newline"),
    pytest.param("a\x7fb", CONTROL, id="delete"),
    pytest.param("a\x85b", CONTROL, id="c1-control"),
]
# Not storable at all: refused for every String argument before anything runs.
UNSTORABLE_TEXTS = [
    pytest.param("a\x00b", id="nul"),
    pytest.param("\ud800", id="lone-high-surrogate"),
    pytest.param("a\udfffb", id="lone-low-surrogate"),
]
GOOD_NAMES = {
    "200-chars": ("x" * 200, "x" * 200),
    "trimmed": ("  padded\t", "padded"),
    "200-emoji": ("\U0001f600" * 200, "\U0001f600" * 200),
    "sql-injection": (SQL_INJECTION, SQL_INJECTION),
    "bobby": ("Robert'); DROP TABLE students;--", "Robert'); DROP TABLE students;--"),
    "like-wildcards": ("100% _done_ \\o/", "100% _done_ \\o/"),
    "unicode": (
        "\u00c9t\u00e9 \u2014 \u05e9\u05dc\u05d5\u05dd",
        "\u00c9t\u00e9 \u2014 \u05e9\u05dc\u05d5\u05dd",
    ),
}
# Mutations that take a name: the payload field holding it, and the table storing it.
NAMED = {
    "workflowCreate": ("workflow", "workflows"),
    "workflowSave": ("workflow", "workflows"),
    "templateClone": ("workflow", "workflows"),
    "workspaceCreate": ("workspace", "workspaces"),
    "apiTokenCreate": ("apiToken", "api_tokens"),
}


def named_call(
    mutation: str, owner: Account, workflow: str, name: str, base: int = 1
) -> tuple[str, dict[str, Any]]:
    """A call of ``mutation`` that sets a name (a save from version ``base``)."""
    query, variables = call(mutation, owner.workspace_id, workflow)
    extra = {"baseVersion": base} if mutation == "workflowSave" else {}
    return query, {"input": {**variables["input"], "name": name, **extra}}


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
async def test_bad_name_is_refused_everywhere_and_writes_nothing(
    api, owner, workflow, name, message
):
    # Given a name that is blank, too long or not storable
    calls = {m: named_call(m, owner, workflow, name) for m in NAMED}
    before = await api.state()
    # When each mutation that takes a name gets it
    results = await send_all(api, calls, owner.token)
    # Then each answers INVALID on input.name, and nothing was written
    assert results == {
        m: refused(m, user_error(("input", "name"), "INVALID", message)) for m in NAMED
    }
    assert await api.state() == before


@pytest.mark.parametrize("name", UNSTORABLE_TEXTS)
async def test_unstorable_name_is_refused_everywhere_and_writes_nothing(api, owner, workflow, name):
    # Given a name PostgreSQL cannot store (NUL, a lone surrogate)
    calls = {m: named_call(m, owner, workflow, name) for m in NAMED}
    before = await api.state()
    # When each mutation that takes a name gets it
    results = await send_all(api, calls, owner.token)
    # Then each is refused before it runs, naming input.name, and nothing was written
    assert results == {m: unstorable(m, ("input", "name"), problem_of(name)) for m in NAMED}
    assert await api.state() == before


@pytest.mark.parametrize("mutation", list(NAMED))
async def test_good_names_are_stored_literally(api, owner, workflow, mutation):
    # Given names at the limits, or that look like SQL (a save renames the same workflow)
    payload, table = NAMED[mutation]
    returned, stored = {}, {}
    for base, (label, (name, clean)) in enumerate(GOOD_NAMES.items(), start=1):
        # When each is sent
        body = await api.gql(*named_call(mutation, owner, workflow, name, base), owner.token)
        returned[label] = (
            body["data"][mutation]["userErrors"],
            body["data"][mutation][payload]["name"],
        )
        stored[label] = await api.factory.scalar(
            f"SELECT count(*) FROM {table} WHERE name = :n", n=clean
        )
    # Then each is returned and stored exactly (trimmed only), once
    assert returned == {label: ([], clean) for label, (_, clean) in GOOD_NAMES.items()}
    assert stored == dict.fromkeys(GOOD_NAMES, 1)


@pytest.mark.parametrize(
    ("mutation", "name", "message_name"),
    [
        ("workflowCreate", "EXISTING", "EXISTING"),
        ("workflowSave", "  existing  ", "existing"),
        ("templateClone", "eXiStInG", "eXiStInG"),
    ],
)
async def test_name_taken_in_any_case_is_not_unique(
    api, owner, workflow, mutation, name, message_name
):
    # Given "Existing", and for a save a second workflow to rename
    target = await api.create(owner, "Second") if mutation == "workflowSave" else workflow
    before = await api.state()
    # When another workflow would take its name in another case
    body = await api.gql(*named_call(mutation, owner, target, name), owner.token)
    # Then NOT_UNIQUE, and nothing was written
    message = f'A workflow named "{message_name}" already exists in this workspace.'
    assert body == refused(mutation, user_error(("input", "name"), "NOT_UNIQUE", message))
    assert await api.state() == before


async def test_same_name_in_another_workspace_is_fine(api, owner, workflow):
    other, _ = await outsider(api)
    assert await api.create(other, "EXISTING")


BAD_TEXTS = [
    pytest.param("description", "d" * 10_001, "At most 10000 characters.", id="description-10001"),
    pytest.param("description", "a\x1b[31m", CONTROL, id="description-escape"),
    pytest.param("description", "\x7f", CONTROL, id="description-delete"),
    pytest.param("message", "m" * 2_001, "At most 2000 characters.", id="message-2001"),
    pytest.param("message", "a\x1bb", CONTROL, id="message-escape"),
    pytest.param("message", "a\x85b", CONTROL, id="message-c1-control"),
]
UNSTORABLE_FIELD_TEXTS = [
    pytest.param("description", "a\x00b", id="description-nul"),
    pytest.param("description", "\ud800", id="description-lone-surrogate"),
    pytest.param("message", "a\x00b", id="message-nul"),
    pytest.param("message", "\udfff", id="message-lone-surrogate"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_TEXTS)
async def test_bad_description_or_message_is_refused(api, owner, workflow, field, value, message):
    # workflowCreate takes a description but no message; workflowSave takes both
    mutations = ["workflowSave"] if field == "message" else ["workflowCreate", "workflowSave"]
    calls = {}
    for mutation in mutations:
        query, variables = call(mutation, owner.workspace_id, workflow)
        calls[mutation] = (query, {"input": {**variables["input"], field: value}})
    before = await api.state()
    results = await send_all(api, calls, owner.token)
    assert results == {
        m: refused(m, user_error(("input", field), "INVALID", message)) for m in mutations
    }
    assert await api.state() == before


@pytest.mark.parametrize(("field", "value"), UNSTORABLE_FIELD_TEXTS)
async def test_unstorable_description_or_message_is_refused(api, owner, workflow, field, value):
    mutations = ["workflowSave"] if field == "message" else ["workflowCreate", "workflowSave"]
    calls = {}
    for mutation in mutations:
        query, variables = call(mutation, owner.workspace_id, workflow)
        calls[mutation] = (query, {"input": {**variables["input"], field: value}})
    before = await api.state()
    results = await send_all(api, calls, owner.token)
    assert results == {m: unstorable(m, ("input", field), problem_of(value)) for m in mutations}
    assert await api.state() == before


async def test_longest_description_and_message_with_newlines_and_sql_are_saved_exactly(
    api, owner, workflow
):
    description = ("line\r\n\t" + SQL_INJECTION + "\n").ljust(10_000, "d")
    message = ("%_\\ \u2028" + SQL_INJECTION).ljust(2_000, "m")
    variables = {
        "input": {
            "workflowId": workflow,
            "graph": SAMPLE,
            "baseVersion": 1,
            "description": description,
            "message": message,
        }
    }
    body = await api.gql(SAVE, variables, owner.token)
    saved = body["data"]["workflowSave"]["workflow"]
    assert (saved["description"], saved["currentVersion"]["message"]) == (description, message)
    reloaded = (await api.gql(WORKFLOW, {"id": workflow}, owner.token))["data"]["workflow"]
    assert (reloaded["description"], reloaded["currentVersion"]["message"]) == (
        description,
        message,
    )


async def test_every_problem_of_a_save_is_reported_at_once(api, owner, workflow):
    fields = {"workflowId": workflow, "baseVersion": 1, "name": " ", "message": "\x1b"}
    variables_json = with_raw_graph(
        {"input": {**fields, "description": "d" * 10_001}}, one_value("NaN")
    )
    before = await api.state()
    body = await api.raw_variables(SAVE, variables_json, owner.token)
    assert body == refused(
        "workflowSave",
        user_error(("input", "name"), "INVALID", BLANK),
        user_error(("input", "description"), "INVALID", "At most 10000 characters."),
        user_error(("input", "message"), "INVALID", CONTROL),
        user_error(("input", "graph", *VALUE), "GRAPH_INVALID", NAN),
    )
    assert await api.state() == before


async def test_bad_template_category_is_refused(api, owner, workflow):
    categories = {
        "empty": ("", BLANK),
        "blank": (" \t ", BLANK),
        "101-chars": ("c" * 101, "At most 100 characters."),
        "escape": ("a\x1b", CONTROL),
    }
    unstorable_categories = {"nul": "a\x00", "lone-surrogate": "\ud800"}
    calls = {
        label: (
            SET_TEMPLATE,
            {"input": {"workflowId": workflow, "isTemplate": True, "category": c}},
        )
        for label, c in {
            **{label: c for label, (c, _) in categories.items()},
            **unstorable_categories,
        }.items()
    }
    before = await api.state()
    results = await send_all(api, calls, owner.token)
    assert results == {
        **{
            label: refused("workflowSetTemplate", user_error(("input", "category"), "INVALID", m))
            for label, (_, m) in categories.items()
        },
        **{
            label: unstorable("workflowSetTemplate", ("input", "category"), problem_of(c))
            for label, c in unstorable_categories.items()
        },
    }
    assert await api.state() == before


async def test_template_category_is_stored_literally_and_listed(api, owner, workflow):
    results = {}
    for category in ("c" * 100, SQL_INJECTION, "%_\\"):
        variables = {"input": {"workflowId": workflow, "isTemplate": True, "category": category}}
        body = await api.gql(SET_TEMPLATE, variables, owner.token)
        results[category] = body["data"]["workflowSetTemplate"]
    assert results == {
        category: {
            "workflow": {"id": workflow, "isTemplate": True, "templateCategory": category},
            "userErrors": [],
        }
        for category in results
    }
    listed = await api.gql(TEMPLATES, {"id": owner.workspace_id}, owner.token)
    assert {"id": workflow, "name": "Existing", "source": "WORKSPACE"} in listed["data"][
        "templates"
    ]


# --- graphs -------------------------------------------------------------------------------


async def current_version(api: Api, account: Account, workflow_id: str) -> int:
    """The number of the workflow's current version, as the API reports it."""
    body = await api.gql(WORKFLOW, {"id": workflow_id}, account.token)
    return body["data"]["workflow"]["currentVersion"]["number"]


@pytest.mark.parametrize(
    "graph_json",
    [
        pytest.param(one_value("9" * 5000), id="5000-digits"),
        pytest.param(nested(10_000), id="depth-10000"),
    ],
)
async def test_a_body_the_json_parser_cannot_decode_is_400(api, owner, workflow, graph_json):
    # Given a graph JSON's own parser gives up on (integers past Python's 4,300-digit limit,
    # nesting past its recursion): refused as a request, before GraphQL, like any bad body.
    save = with_raw_graph({"input": {"workflowId": workflow, "baseVersion": 1}}, graph_json)
    before = await api.state()
    # When it is saved
    saved = await api.raw_variables(SAVE, save, owner.token, strict=False)
    # Then the request is refused with a 400 and nothing is written
    assert saved == {
        "httpStatus": 400,
        "text": '{"errors":[{"message":"Unable to parse request body as JSON"}]}',
    }
    assert await api.state() == before
    assert await current_version(api, owner, workflow) == 1


@pytest.mark.parametrize(("graph_json", "errors"), BAD_GRAPHS)
async def test_bad_graph_is_refused_and_reported_by_validate_graph(
    api, owner, workflow, graph_json, errors
):
    # Given a graph, as raw JSON text, that cannot be stored or is not a graph
    create = with_raw_graph({"input": {"workspaceId": owner.workspace_id, "name": "G"}}, graph_json)
    save = with_raw_graph({"input": {"workflowId": workflow, "baseVersion": 1}}, graph_json)
    before = await api.state()
    # When a workflow is created with it, saved with it, and it is validated
    created = await api.raw_variables(CREATE, create, owner.token, strict=False)
    saved = await api.raw_variables(SAVE, save, owner.token, strict=False)
    validated = await api.raw_variables(
        VALIDATE, with_raw_graph({}, graph_json), owner.token, strict=False
    )
    # Then create and save refuse it with a GRAPH_INVALID user error at each problem's path,
    # nothing is written, and validateGraph reports the same problems as ERROR diagnostics
    graph_errors = [user_error(("input", "graph", *p), "GRAPH_INVALID", m) for p, _, m in errors]
    found = {"workflowCreate": created, "workflowSave": saved, "validateGraph": validated}
    if "data" in validated:
        found["validateGraph"] = [
            (tuple(d["path"]), d["code"], d["message"], d["severity"])
            for d in validated["data"]["validateGraph"]
        ]
    assert found == {
        "workflowCreate": refused("workflowCreate", *graph_errors),
        "workflowSave": refused("workflowSave", *graph_errors),
        "validateGraph": [(path, code, message, "ERROR") for path, code, message in errors],
    }
    assert await api.state() == before
    assert await current_version(api, owner, workflow) == 1


async def test_validate_graph_names_the_node_and_edge_at_fault(api, owner):
    graph = {"nodes": [node("t", "trigger"), node("t")], "edges": [edge("e1", "t", "ghost")]}
    body = await api.gql(VALIDATE, {"graph": graph}, owner.token)
    assert body == {
        "data": {
            "validateGraph": [
                {
                    "severity": "ERROR",
                    "code": "ID_DUPLICATE",
                    "message": 'Node id "t" is used by more than one node.',
                    "nodeId": "t",
                    "edgeId": None,
                    "path": ["nodes", "1", "id"],
                },
                {
                    "severity": "ERROR",
                    "code": "EDGE_TARGET_UNKNOWN",
                    "message": 'Edge "e1" points to node "ghost", which does not exist.',
                    "nodeId": None,
                    "edgeId": "e1",
                    "path": ["edges", "0", "target"],
                },
            ]
        }
    }


@pytest.mark.parametrize("size", [MIB + 1, 2 * MIB], ids=["1MiB+1", "2MiB"])
async def test_graph_over_one_mib_is_refused(api, owner, workflow, size):
    # Given a graph whose compact JSON is just over the 1 MiB limit (or twice it)
    graph = graph_of_size(size)
    calls = {}
    for mutation in ("workflowCreate", "workflowSave"):
        query, variables = call(mutation, owner.workspace_id, workflow)
        calls[mutation] = (query, {"input": {**variables["input"], "graph": graph}})
    before = await api.state()
    # When a workflow is created or saved with it
    results = await send_all(api, calls, owner.token)
    # Then it is refused with its exact size, and nothing was written
    message = f"The graph is {size} bytes; the limit is {MIB}."
    assert results == {
        m: refused(m, user_error(("input", "graph"), "GRAPH_INVALID", message)) for m in calls
    }
    assert await api.state() == before


async def test_validate_graph_reports_a_graph_over_one_mib(api, owner):
    # The contract: validateGraph runs "the save-time checks without saving".
    body = await api.gql(VALIDATE, {"graph": graph_of_size(2 * MIB)}, owner.token)
    found = [(d["severity"], d["message"], d["path"]) for d in body["data"]["validateGraph"]]
    assert found == [("ERROR", f"The graph is {2 * MIB} bytes; the limit is {MIB}.", [])]


@pytest.mark.parametrize("graph", GOOD_GRAPHS)
async def test_graph_at_the_limits_is_saved_and_read_back_exactly(api, owner, workflow, graph):
    # Given a graph right at the limits (or merely odd-looking JSON)
    variables = {"input": {"workflowId": workflow, "graph": graph, "baseVersion": 1}}
    # When it is saved
    body = await api.gql(SAVE, variables, owner.token)
    # Then it is version 2 with no diagnostics, reads back exactly, and validates clean
    version = body["data"]["workflowSave"]["workflow"]["currentVersion"]
    assert (version["number"], version["diagnostics"], version["graph"] == graph) == (2, [], True)
    reloaded = await api.gql(WORKFLOW, {"id": workflow}, owner.token)
    assert reloaded["data"]["workflow"]["currentVersion"]["graph"] == graph
    assert await api.gql(VALIDATE, {"graph": graph}, owner.token) == {"data": {"validateGraph": []}}


async def test_create_without_graph_starts_an_empty_canvas(api, owner):
    variables = {"input": {"workspaceId": owner.workspace_id, "name": "Blank", "graph": None}}
    body = await api.gql(CREATE, variables, owner.token)
    version = body["data"]["workflowCreate"]["workflow"]["currentVersion"]
    assert (version["number"], version["graph"]) == (1, {"nodes": [], "edges": []})


# --- versions: save, rollback, delete -----------------------------------------------------

STALE = "Version 2 was saved after version 1; reload the workflow and apply your change again."


async def test_save_from_a_stale_version_is_a_conflict(api, owner, workflow):
    # Given version 2 saved meanwhile
    await api.save(owner, workflow, 1, chain(3))
    before = await api.state()
    # When another editor saves from version 1
    variables = {"input": {"workflowId": workflow, "graph": chain(4), "baseVersion": 1}}
    body = await api.gql(SAVE, variables, owner.token)
    # Then VERSION_CONFLICT, and version 2 stays current
    conflict = user_error(("input", "baseVersion"), "VERSION_CONFLICT", STALE)
    assert body == refused("workflowSave", conflict)
    assert await api.state() == before
    assert await current_version(api, owner, workflow) == 2


async def test_save_from_a_version_that_is_not_current_is_a_conflict(api, owner, workflow):
    bases = [0, -1, 2, 2**31 - 1, -(2**31)]
    calls = {
        base: (SAVE, {"input": {"workflowId": workflow, "graph": chain(3), "baseVersion": base}})
        for base in bases
    }
    before = await api.state()
    results = await send_all(api, calls, owner.token)
    outcomes = {
        base: (
            body["data"]["workflowSave"]["workflow"],
            [(e["field"], e["code"]) for e in body["data"]["workflowSave"]["userErrors"]],
        )
        for base, body in results.items()
    }
    assert outcomes == dict.fromkeys(
        bases, (None, [(["input", "baseVersion"], "VERSION_CONFLICT")])
    )
    assert await api.state() == before
    assert await current_version(api, owner, workflow) == 1


async def test_rollback_to_a_version_that_does_not_exist_is_not_found(api, owner, workflow):
    versions = [0, -1, 2, 999, 2**31 - 1, -(2**31)]
    calls = {n: (ROLLBACK, {"input": {"workflowId": workflow, "toVersion": n}}) for n in versions}
    before = await api.state()
    results = await send_all(api, calls, owner.token)
    assert results == {
        n: refused(
            "workflowRollback",
            user_error(("input", "toVersion"), "NOT_FOUND", f"Version {n} does not exist."),
        )
        for n in versions
    }
    assert await api.state() == before


async def test_rollback_from_a_stale_version_is_a_conflict(api, owner, workflow):
    await api.save(owner, workflow, 1, chain(3))
    before = await api.state()
    variables = {"input": {"workflowId": workflow, "toVersion": 1, "baseVersion": 1}}
    body = await api.gql(ROLLBACK, variables, owner.token)
    conflict = user_error(("input", "baseVersion"), "VERSION_CONFLICT", STALE)
    assert body == refused("workflowRollback", conflict)
    assert await api.state() == before
    assert await current_version(api, owner, workflow) == 2


async def test_rollback_copies_the_old_graph_into_a_new_version(api, owner, workflow):
    await api.save(owner, workflow, 1, chain(3))
    variables = {"input": {"workflowId": workflow, "toVersion": 1, "baseVersion": 2}}
    body = await api.gql(ROLLBACK, variables, owner.token)
    version = body["data"]["workflowRollback"]["workflow"]["currentVersion"]
    summary = (version["number"], version["restoredFrom"], version["message"], version["graph"])
    assert summary == (3, 1, "Rollback to version 1", SAMPLE)


async def test_delete_twice_is_not_found_the_second_time(api, owner, workflow):
    # Given a deleted workflow
    first = await api.gql(DELETE, {"id": workflow}, owner.token)
    assert first == {"data": {"workflowDelete": {"deletedId": workflow, "userErrors": []}}}
    rows = await api.factory.snapshot()
    assert (rows["workflows"], rows["workflow_versions"]) == (0, 0)
    before = await api.state()
    # When it is deleted again
    second = await api.gql(DELETE, {"id": workflow}, owner.token)
    # Then it is NOT_FOUND
    assert second == top_error("Workflow not found.", "NOT_FOUND", ["workflowDelete"])
    assert await api.state() == before


# --- templates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Ops \\ Deploy", "C:\\temp\\", "100% _done_", SQL_INJECTION, "a_b%c\\d"]
)
async def test_clone_without_a_name_picks_a_free_name_literally(api, owner, name):
    # Given a workspace template whose name contains LIKE wildcards or backslashes
    template = await api.create(owner, name, SAMPLE)
    flag = {"input": {"workflowId": template, "isTemplate": True}}
    assert (await api.gql(SET_TEMPLATE, flag, owner.token))["data"]["workflowSetTemplate"][
        "userErrors"
    ] == []
    # When it is cloned twice without a name
    variables = {"input": {"templateId": template, "workspaceId": owner.workspace_id}}
    results = [
        (await api.gql(CLONE, variables, owner.token))["data"]["templateClone"] for _ in range(2)
    ]
    # Then the clones get the next free names, the name matched literally
    outcomes = [(r["userErrors"], r["workflow"] and r["workflow"]["name"]) for r in results]
    assert outcomes == [([], f"{name} (2)"), ([], f"{name} (3)")]


async def test_clone_of_a_builtin_template_twice_gets_a_free_name(api, owner):
    variables = {"input": {"templateId": BUILTIN_TEMPLATE, "workspaceId": owner.workspace_id}}
    first = await api.gql(CLONE, variables, owner.token)
    second = await api.gql(CLONE, variables, owner.token)
    names = [b["data"]["templateClone"]["workflow"]["name"] for b in (first, second)]
    assert names == [
        "Call an API and branch on the result",
        "Call an API and branch on the result (2)",
    ]


# --- members ------------------------------------------------------------------------------

BAD_EMAILS = {
    "empty": "",
    "blank": "   ",
    "no-at": "no-at-sign",
    "no-dot": "a@b",
    "no-local-part": "@example.com",
    "no-domain": "a@",
    "two-ats": "a@@example.com",
    "inner-space": "a b@example.com",
    "empty-tld": "a@example.",
    "control": "a\x1f@example.com",
    "321-chars": "x" * 309 + "@example.com",
    "sql-injection": SQL_INJECTION,
}


async def test_member_with_an_invalid_email_is_refused(api, owner):
    # Given addresses that are not email addresses, or not storable
    calls = {
        label: (
            MEMBER_SET,
            {"input": {"workspaceId": owner.workspace_id, "email": e, "role": "VIEWER"}},
        )
        for label, e in BAD_EMAILS.items()
    }
    before = await api.state()
    # When each is given a role
    results = await send_all(api, calls, owner.token)
    # Then each is INVALID on input.email, and no user or membership was written
    invalid = refused("memberSet", user_error(("input", "email"), "INVALID", BAD_EMAIL))
    assert results == dict.fromkeys(BAD_EMAILS, invalid)
    assert await api.state() == before


async def test_member_with_an_unstorable_email_is_refused_before_anything_runs(api, owner):
    emails = {"nul": "a\x00@example.com", "lone-surrogate": "a\ud800@example.com"}
    calls = {
        label: (
            MEMBER_SET,
            {"input": {"workspaceId": owner.workspace_id, "email": e, "role": "VIEWER"}},
        )
        for label, e in emails.items()
    }
    before = await api.state()
    results = await send_all(api, calls, owner.token)
    assert results == {
        label: unstorable("memberSet", ("input", "email"), problem_of(e))
        for label, e in emails.items()
    }
    assert await api.state() == before


async def test_member_with_a_valid_email_is_created_normalised(api, owner):
    emails = {
        "  New.Person@Example.COM ": "new.person@example.com",
        "o'brien+tag@example.com": "o'brien+tag@example.com",
        "x" * 64 + "@example.com": "x" * 64 + "@example.com",
    }
    results, stored = {}, {}
    for email, clean in emails.items():
        variables = {"input": {"workspaceId": owner.workspace_id, "email": email, "role": "EDITOR"}}
        results[email] = (await api.gql(MEMBER_SET, variables, owner.token))["data"]["memberSet"]
        stored[email] = await api.factory.scalar(
            "SELECT count(*) FROM users WHERE email = :e", e=clean
        )
    assert results == {
        email: {"membership": {"role": "EDITOR", "user": {"email": clean}}, "userErrors": []}
        for email, clean in emails.items()
    }
    assert stored == dict.fromkeys(emails, 1)


async def test_demoting_the_last_owner_is_refused(api, owner):
    # Given the only owner, named by their email exactly or upper-cased and padded
    spellings = {"exact": owner.user.email, "upper-padded": f"  {owner.user.email.upper()}  "}
    calls = {
        (spelling, role): (
            MEMBER_SET,
            {"input": {"workspaceId": owner.workspace_id, "email": email, "role": role}},
        )
        for spelling, email in spellings.items()
        for role in ("VIEWER", "MEMBER", "EDITOR")
    }
    before = await api.state()
    # When they demote themselves
    results = await send_all(api, calls, owner.token)
    # Then LAST_OWNER each time, and they are still OWNER
    last_owner = refused("memberSet", user_error(("input", "role"), "LAST_OWNER", LAST_OWNER))
    assert results == dict.fromkeys(calls, last_owner)
    assert await api.state() == before


async def test_an_owner_can_step_down_once_there_is_another(api, factory, owner):
    await factory.member(of=owner, role=Role.OWNER)
    email = owner.user.email
    variables = {"input": {"workspaceId": owner.workspace_id, "email": email, "role": "EDITOR"}}
    body = await api.gql(MEMBER_SET, variables, owner.token)
    assert body["data"]["memberSet"] == {
        "membership": {"role": "EDITOR", "user": {"email": email}},
        "userErrors": [],
    }


# --- API tokens ---------------------------------------------------------------------------


async def test_token_expiry_in_the_past_or_without_time_zone_is_refused(api, owner):
    expiries = {
        "2000-01-01T00:00:00Z": "Must be in the future.",
        "1970-01-01T00:00:00+00:00": "Must be in the future.",
        "2999-01-01T00:00:00": "Give a time zone offset.",
        "2000-01-01T00:00:00": "Give a time zone offset.",
    }
    calls = {e: (TOKEN_CREATE, {"input": {"name": "ci", "expiresAt": e}}) for e in expiries}
    before = await api.state()
    results = await send_all(api, calls, owner.token)
    assert results == {
        e: refused("apiTokenCreate", user_error(("input", "expiresAt"), "INVALID", m))
        for e, m in expiries.items()
    }
    assert await api.state() == before


async def test_token_with_blank_name_and_past_expiry_reports_both(api, owner):
    before = await api.state()
    variables = {"input": {"name": " ", "expiresAt": "2000-01-01T00:00:00Z"}}
    body = await api.gql(TOKEN_CREATE, variables, owner.token)
    assert body == refused(
        "apiTokenCreate",
        user_error(("input", "name"), "INVALID", BLANK),
        user_error(("input", "expiresAt"), "INVALID", "Must be in the future."),
    )
    assert await api.state() == before


async def test_token_the_api_accepts_is_a_token_that_works(api, owner):
    # Given an expiry in year 9999 at UTC-14, which is year 10000 in UTC
    variables = {"input": {"name": "far", "expiresAt": "9999-12-31T23:59:59-14:00"}}
    before = await api.state()
    # When a token is created with it
    payload = (await api.gql(TOKEN_CREATE, variables, owner.token))["data"]["apiTokenCreate"]
    # Then the API either refuses the expiry up front, or the token it issued authenticates
    if payload["userErrors"]:
        errors = [(e["field"], e["code"]) for e in payload["userErrors"]]
        assert errors == [(["input", "expiresAt"], "INVALID")]
        assert await api.state() == before
    else:
        viewer = await api.gql(VIEWER, token=payload["token"])
        assert viewer == {"data": {"viewer": {"email": owner.user.email}}}


# --- queries: pages, cursors, search, versions, diffs -------------------------------------

LISTS = {
    "workflows": (WORKFLOW_LIST, ["workspace", "workflows"], "workspace"),
    "versions": (VERSION_LIST, ["workflow", "versions"], "workflow"),
}


def list_call(
    which: str, owner: Account, workflow: str, **arguments: Any
) -> tuple[str, dict[str, Any]]:
    """A list query on the owner's workspace (workflows) or the workflow (versions)."""
    target = owner.workspace_id if which == "workflows" else workflow
    return LISTS[which][0], {"id": target, **arguments}


def list_error(which: str, field: str, message: str) -> dict[str, Any]:
    """The response of a list query refused for ``field`` (the list's parent reads null)."""
    _, path, parent = LISTS[which]
    return {"data": {parent: None}, "errors": [bad_input(path, "INVALID", [field], message)]}


async def test_page_size_out_of_range_is_bad_input(api, owner, workflow):
    sizes = [-1, 101, -(2**31), 2**31 - 1]
    calls = {
        (which, n): list_call(which, owner, workflow, first=n) for which in LISTS for n in sizes
    }
    results = await send_all(api, calls, owner.token)
    assert results == {(which, n): list_error(which, "first", PAGE_SIZE) for which, n in calls}


CURSORS = {
    "workflows": {
        "garbage": "garbage!!",
        "empty": "",
        "501-chars": "c" * 501,
        "non-ascii": "\u00e9",
        "object": cursor({}),
        "null": cursor(None),
        "one-key": cursor([1]),
        "not-a-date": cursor(["x", "y"]),
        "booleans": cursor([True, True]),
        "not-a-uuid": cursor(["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
        "nulls": cursor([None, None]),
        "no-offset": cursor(["2024-01-01T00:00:00", "ffffffff-ffff-ffff-ffff-ffffffffffff"]),
    },
    "versions": {
        "garbage": "garbage!!",
        "empty": "",
        "empty-key": cursor([]),
        "two-keys": cursor([1, 2]),
        "float": cursor([1.5]),
        "string": cursor(["1"]),
        "null": cursor([None]),
        "boolean": cursor([True]),
        "2**31": cursor([2**31]),
        "-2**31-1": cursor([-(2**31) - 1]),
        "10**30": cursor([10**30]),
    },
}


@pytest.mark.parametrize("which", list(LISTS))
async def test_cursor_the_api_did_not_issue_is_bad_input(api, owner, workflow, which):
    # Given cursors the API never issued: garbage, wrong shape, out-of-range keys
    calls = {
        label: list_call(which, owner, workflow, first=10, after=after)
        for label, after in CURSORS[which].items()
    }
    # When each is used as `after`
    results = await send_all(api, calls, owner.token)
    # Then each is an INVALID `after`
    assert results == dict.fromkeys(CURSORS[which], list_error(which, "after", INVALID_CURSOR))


async def test_unstorable_cursor_or_search_is_refused_before_anything_runs(api, owner, workflow):
    # Given text no cursor or name can hold: a NUL, a lone surrogate
    calls = {
        ("after", text): list_call("workflows", owner, workflow, first=10, after=text)
        for text in ("a\x00b", "\ud800")
    }
    calls |= {
        ("search", text): (
            WORKFLOW_LIST,
            {"id": owner.workspace_id, "first": 10, "search": text},
        )
        for text in ("a\x00b", "\ud800")
    }
    # When each is used
    results = await send_all(api, calls, owner.token)
    # Then each is one BAD_USER_INPUT error naming the argument, and no data
    assert results == {
        (argument, text): unstorable("workflows", (argument,), problem_of(text))
        for argument, text in calls
    }


async def test_workflow_pages_follow_their_cursors(api, owner):
    for name in ("One", "Two", "Three"):
        await api.create(owner, name)
    variables = {"id": owner.workspace_id, "first": 2}
    first = (await api.gql(WORKFLOW_LIST, variables, owner.token))["data"]["workspace"]["workflows"]
    after = {**variables, "after": first["pageInfo"]["endCursor"]}
    rest = (await api.gql(WORKFLOW_LIST, after, owner.token))["data"]["workspace"]["workflows"]
    pages = [[e["node"]["name"] for e in page["edges"]] for page in (first, rest)]
    assert pages == [["Three", "Two"], ["One"]]
    assert [first["pageInfo"]["hasNextPage"], rest["pageInfo"]["hasNextPage"]] == [True, False]
    empty = await api.gql(WORKFLOW_LIST, {**variables, "first": 0}, owner.token)
    assert empty["data"]["workspace"]["workflows"] == {
        "totalCount": 3,
        "pageInfo": {"hasNextPage": True, "endCursor": None},
        "edges": [],
    }


async def test_version_pages_follow_their_cursors(api, owner, workflow):
    for base in (1, 2, 3):
        await api.save(owner, workflow, base, chain(base + 2))
    variables = {"id": workflow, "first": 2}
    first = (await api.gql(VERSION_LIST, variables, owner.token))["data"]["workflow"]["versions"]
    after = {**variables, "after": first["pageInfo"]["endCursor"]}
    rest = (await api.gql(VERSION_LIST, after, owner.token))["data"]["workflow"]["versions"]
    pages = [[e["node"]["number"] for e in page["edges"]] for page in (first, rest)]
    assert pages == [[4, 3], [2, 1]]
    flags = [first["totalCount"], first["pageInfo"]["hasNextPage"], rest["pageInfo"]["hasNextPage"]]
    assert flags == [4, True, False]


SEARCH_NAMES = [
    "100% done",
    "100 percent done",
    "snake_case",
    "snakeXcase",
    "back\\slash",
    "backslash",
    SQL_INJECTION,
    "O'Brien",
    'say "hi"',
]
SEARCHES = {
    "%": ["100% done"],
    "_": ["snake_case"],
    "\\": ["back\\slash"],
    SQL_INJECTION: [SQL_INJECTION],
    "drop TABLE": [SQL_INJECTION],
    "'": [SQL_INJECTION, "O'Brien"],
    '"': ['say "hi"'],
    "SNAKE": ["snake_case", "snakeXcase"],
    "%_\\": [],
    "s" * 200: [],
    "": SEARCH_NAMES,
}


async def test_search_matches_names_literally(api, owner):
    # Given workflows whose names contain LIKE wildcards, quotes and SQL
    for name in SEARCH_NAMES:
        await api.create(owner, name)
    # When searching for each text
    found = {}
    for search in SEARCHES:
        variables = {"id": owner.workspace_id, "first": 100, "search": search}
        body = await api.gql(WORKFLOW_LIST, variables, owner.token, strict=False)
        if "data" not in body or "errors" in body:
            found[search] = body
            continue
        page = body["data"]["workspace"]["workflows"]
        found[search] = (page["totalCount"], sorted(e["node"]["name"] for e in page["edges"]))
    # Then exactly the names containing the text match, and every table is intact
    assert found == {search: (len(names), sorted(names)) for search, names in SEARCHES.items()}
    assert (await api.factory.snapshot())["workflows"] == len(SEARCH_NAMES)


async def test_search_over_200_characters_is_bad_input(api, owner):
    variables = {"id": owner.workspace_id, "first": 10, "search": "s" * 201}
    body = await api.gql(WORKFLOW_LIST, variables, owner.token)
    assert body == list_error("workflows", "search", "At most 200 characters.")


async def test_version_that_does_not_exist_is_null(api, owner, workflow):
    numbers = [0, -1, 2, 999, 2**31 - 1, -(2**31)]
    calls = {n: (VERSION, {"id": workflow, "n": n}) for n in numbers}
    results = await send_all(api, calls, owner.token)
    assert results == {n: {"data": {"workflow": {"version": None}}} for n in numbers}


async def test_diff_with_a_missing_version_is_not_found(api, owner, workflow):
    pairs = {
        (1, 999): 999,
        (0, 1): 0,
        (-1, -1): -1,
        (2**31 - 1, 1): 2**31 - 1,
        (1, -(2**31)): -(2**31),
    }
    calls = {pair: (DIFF, {"id": workflow, "from": pair[0], "to": pair[1]}) for pair in pairs}
    results = await send_all(api, calls, owner.token)
    assert results == {
        pair: top_error(
            f"Version {n} not found.", "NOT_FOUND", ["workflow", "diff"], {"workflow": None}
        )
        for pair, n in pairs.items()
    }


async def test_diff_between_existing_versions(api, owner, workflow):
    await api.save(owner, workflow, 1, chain(3))
    body = await api.gql(DIFF, {"id": workflow, "from": 1, "to": 2}, owner.token)
    assert body == {
        "data": {
            "workflow": {
                "diff": {
                    "nodesAdded": ["n2"],
                    "nodesRemoved": [],
                    "nodesChanged": [],
                    "edgesAdded": ["e1"],
                    "edgesRemoved": [],
                }
            }
        }
    }


# --- GraphQL type errors: wrong types, missing fields, null where required ----------------

WF = gid("Workflow", uuid.UUID(int=1))
WS = gid("Workspace", uuid.UUID(int=2))
NOT_NONE = "Expected value of non-null type '{}' not to be None."
NOT_GIVEN = "Expected a value of non-null type '{}' to be provided."
NOT_32_BIT = "Int cannot represent non 32-bit signed integer value: {}"
NOT_STRING = "String cannot represent a non string value: {}"


def bad_variable(name: str, message: str, at: str | None = None) -> str:
    """The validation message of a variable (or a field of it) with a bad value."""
    where = f" at .{at}" if at else ""
    return f"Variable '${name}' has invalid value{where}: {message}"


def missing_field(type_name: str, field: str, found: str) -> str:
    """The validation message of an input object without a required field."""
    message = f"Expected value of type '{type_name}' to include required field '{field}'"
    return bad_variable("input", f"{message}, found: {found}.")


TYPE_ERRORS: dict[str, tuple[str, dict[str, tuple[dict[str, Any], str]]]] = {
    "workflowCreate": (
        CREATE,
        {
            "no-input": ({}, bad_variable("input", NOT_GIVEN.format("WorkflowCreateInput!"))),
            "null-input": (
                {"input": None},
                bad_variable("input", NOT_NONE.format("WorkflowCreateInput!")),
            ),
            "input-string": (
                {"input": "x"},
                bad_variable(
                    "input",
                    "Expected value of type 'WorkflowCreateInput' to be an object, found: 'x'.",
                ),
            ),
            "no-name": (
                {"input": {"workspaceId": WS}},
                missing_field("WorkflowCreateInput", "name", f"{{'workspaceId': '{WS}'}}"),
            ),
            "null-name": (
                {"input": {"workspaceId": WS, "name": None}},
                bad_variable("input", NOT_NONE.format("String!"), "name"),
            ),
            "name-number": (
                {"input": {"workspaceId": WS, "name": 5}},
                bad_variable("input", NOT_STRING.format(5), "name"),
            ),
            "name-list": (
                {"input": {"workspaceId": WS, "name": ["a"]}},
                bad_variable("input", NOT_STRING.format("['a']"), "name"),
            ),
            "null-workspace": (
                {"input": {"workspaceId": None, "name": "a"}},
                bad_variable("input", NOT_NONE.format("ID!"), "workspaceId"),
            ),
            "workspace-boolean": (
                {"input": {"workspaceId": True, "name": "a"}},
                bad_variable("input", "ID cannot represent value: True", "workspaceId"),
            ),
            "description-number": (
                {"input": {"workspaceId": WS, "name": "a", "description": 5}},
                bad_variable("input", NOT_STRING.format(5), "description"),
            ),
            "unknown-field": (
                {"input": {"workspaceId": WS, "name": "a", "bogus": 1}},
                bad_variable(
                    "input",
                    "Expected value of type 'WorkflowCreateInput' not to include unknown field"
                    f" 'bogus', found: {{'workspaceId': '{WS}', 'name': 'a', 'bogus': 1}}.",
                ),
            ),
        },
    ),
    "workflowSave": (
        SAVE,
        {
            "no-graph": (
                {"input": {"workflowId": WF, "baseVersion": 1}},
                missing_field(
                    "WorkflowSaveInput", "graph", f"{{'workflowId': '{WF}', 'baseVersion': 1}}"
                ),
            ),
            "null-graph": (
                {"input": {"workflowId": WF, "graph": None, "baseVersion": 1}},
                bad_variable("input", NOT_NONE.format("JSON!"), "graph"),
            ),
            "null-base": (
                {"input": {"workflowId": WF, "graph": {}, "baseVersion": None}},
                bad_variable("input", NOT_NONE.format("Int!"), "baseVersion"),
            ),
            "base-string": (
                {"input": {"workflowId": WF, "graph": {}, "baseVersion": "1"}},
                bad_variable("input", "Int cannot represent non-integer value: '1'", "baseVersion"),
            ),
            "base-float": (
                {"input": {"workflowId": WF, "graph": {}, "baseVersion": 1.5}},
                bad_variable("input", "Int cannot represent non-integer value: 1.5", "baseVersion"),
            ),
            "base-nan": (
                {"input": {"workflowId": WF, "graph": {}, "baseVersion": float("nan")}},
                bad_variable("input", "Int cannot represent non-integer value: nan", "baseVersion"),
            ),
            "base-infinity": (
                {"input": {"workflowId": WF, "graph": {}, "baseVersion": float("inf")}},
                bad_variable("input", "Int cannot represent non-integer value: inf", "baseVersion"),
            ),
            "base-2**31": (
                {"input": {"workflowId": WF, "graph": {}, "baseVersion": 2**31}},
                bad_variable("input", NOT_32_BIT.format(2**31), "baseVersion"),
            ),
            "base--2**31-1": (
                {"input": {"workflowId": WF, "graph": {}, "baseVersion": -(2**31) - 1}},
                bad_variable("input", NOT_32_BIT.format(-(2**31) - 1), "baseVersion"),
            ),
            "message-object": (
                {"input": {"workflowId": WF, "graph": {}, "baseVersion": 1, "message": {"a": 1}}},
                bad_variable("input", NOT_STRING.format("{'a': 1}"), "message"),
            ),
        },
    ),
    "workflowRollback": (
        ROLLBACK,
        {
            "no-version": (
                {"input": {"workflowId": WF}},
                missing_field("WorkflowRollbackInput", "toVersion", f"{{'workflowId': '{WF}'}}"),
            ),
            "null-version": (
                {"input": {"workflowId": WF, "toVersion": None}},
                bad_variable("input", NOT_NONE.format("Int!"), "toVersion"),
            ),
            "version-string": (
                {"input": {"workflowId": WF, "toVersion": "x"}},
                bad_variable("input", "Int cannot represent non-integer value: 'x'", "toVersion"),
            ),
            "version-2**31": (
                {"input": {"workflowId": WF, "toVersion": 2**31}},
                bad_variable("input", NOT_32_BIT.format(2**31), "toVersion"),
            ),
        },
    ),
    "workflowDelete": (
        DELETE,
        {
            "no-id": ({}, bad_variable("id", NOT_GIVEN.format("ID!"))),
            "null-id": ({"id": None}, bad_variable("id", NOT_NONE.format("ID!"))),
            "id-boolean": ({"id": True}, bad_variable("id", "ID cannot represent value: True")),
            "id-list": ({"id": [WF]}, bad_variable("id", f"ID cannot represent value: ['{WF}']")),
        },
    ),
    "workflowSetTemplate": (
        SET_TEMPLATE,
        {
            "null-flag": (
                {"input": {"workflowId": WF, "isTemplate": None}},
                bad_variable("input", NOT_NONE.format("Boolean!"), "isTemplate"),
            ),
            "flag-string": (
                {"input": {"workflowId": WF, "isTemplate": "yes"}},
                bad_variable(
                    "input", "Boolean cannot represent a non boolean value: 'yes'", "isTemplate"
                ),
            ),
            "flag-number": (
                {"input": {"workflowId": WF, "isTemplate": 1}},
                bad_variable(
                    "input", "Boolean cannot represent a non boolean value: 1", "isTemplate"
                ),
            ),
        },
    ),
    "templateClone": (
        CLONE,
        {
            "no-template": (
                {"input": {"workspaceId": WS}},
                missing_field("TemplateCloneInput", "templateId", f"{{'workspaceId': '{WS}'}}"),
            ),
            "null-template": (
                {"input": {"templateId": None, "workspaceId": WS}},
                bad_variable("input", NOT_NONE.format("ID!"), "templateId"),
            ),
        },
    ),
    "workspaceCreate": (
        WORKSPACE_CREATE,
        {
            "no-name": ({"input": {}}, missing_field("WorkspaceCreateInput", "name", "{}")),
            "null-name": (
                {"input": {"name": None}},
                bad_variable("input", NOT_NONE.format("String!"), "name"),
            ),
            "name-list": (
                {"input": {"name": ["a"]}},
                bad_variable("input", NOT_STRING.format("['a']"), "name"),
            ),
        },
    ),
    "memberSet": (
        MEMBER_SET,
        {
            "unknown-role": (
                {"input": {"workspaceId": WS, "email": "a@example.com", "role": "ADMIN"}},
                bad_variable("input", "Value 'ADMIN' does not exist in 'Role' enum.", "role"),
            ),
            "lower-case-role": (
                {"input": {"workspaceId": WS, "email": "a@example.com", "role": "owner"}},
                bad_variable(
                    "input",
                    "Value 'owner' does not exist in 'Role' enum. Did you mean the enum value 'OWNER'?",
                    "role",
                ),
            ),
            "null-role": (
                {"input": {"workspaceId": WS, "email": "a@example.com", "role": None}},
                bad_variable("input", NOT_NONE.format("Role!"), "role"),
            ),
            "null-email": (
                {"input": {"workspaceId": WS, "email": None, "role": "OWNER"}},
                bad_variable("input", NOT_NONE.format("String!"), "email"),
            ),
        },
    ),
    "apiTokenCreate": (
        TOKEN_CREATE,
        {
            "null-name": (
                {"input": {"name": None}},
                bad_variable("input", NOT_NONE.format("String!"), "name"),
            ),
            "expiry-garbage": (
                {"input": {"name": "n", "expiresAt": "not a date"}},
                bad_variable(
                    "input",
                    "Value cannot represent a DateTime: \"not a date\". Expected 4 digits, got 'not '",
                    "expiresAt",
                ),
            ),
            "expiry-number": (
                {"input": {"name": "n", "expiresAt": 12345}},
                bad_variable(
                    "input",
                    'Value cannot represent a DateTime: "12345". Expected a string.',
                    "expiresAt",
                ),
            ),
            "expiry-month-13": (
                {"input": {"name": "n", "expiresAt": "2024-13-01T00:00:00Z"}},
                bad_variable(
                    "input",
                    'Value cannot represent a DateTime: "2024-13-01T00:00:00Z". month must be in 1..12',
                    "expiresAt",
                ),
            ),
        },
    ),
    "validateGraph": (
        VALIDATE,
        {
            "no-graph": ({}, bad_variable("graph", NOT_GIVEN.format("JSON!"))),
            "null-graph": ({"graph": None}, bad_variable("graph", NOT_NONE.format("JSON!"))),
        },
    ),
    "workspace.workflows": (
        WORKFLOW_LIST,
        {
            "first-2**31": (
                {"id": WS, "first": 2**31},
                bad_variable("first", NOT_32_BIT.format(2**31)),
            ),
            "first-string": (
                {"id": WS, "first": "10"},
                bad_variable("first", "Int cannot represent non-integer value: '10'"),
            ),
            "first-null": (
                {"id": WS, "first": None},
                bad_variable("first", NOT_NONE.format("Int!")),
            ),
            "search-number": (
                {"id": WS, "first": 10, "search": 5},
                bad_variable("search", NOT_STRING.format(5)),
            ),
        },
    ),
    "workflow.versions": (
        VERSION_LIST,
        {
            "after-number": (
                {"id": WF, "first": 10, "after": 5},
                bad_variable("after", NOT_STRING.format(5)),
            )
        },
    ),
    "workflow.version": (
        VERSION,
        {
            "number-float": (
                {"id": WF, "n": 1.5},
                bad_variable("n", "Int cannot represent non-integer value: 1.5"),
            )
        },
    ),
    "workflow.diff": (
        DIFF,
        {
            "from-2**31": (
                {"id": WF, "from": 2**31, "to": 1},
                bad_variable("from", NOT_32_BIT.format(2**31)),
            ),
            "no-to": ({"id": WF, "from": 1}, bad_variable("to", NOT_GIVEN.format("Int!"))),
        },
    ),
}


@pytest.mark.parametrize("operation", list(TYPE_ERRORS))
async def test_wrong_types_and_missing_or_null_fields_are_validation_errors(api, owner, operation):
    # Given variables of the wrong type, missing, or null where required
    query, cases = TYPE_ERRORS[operation]
    calls = {label: (query, variables) for label, (variables, _) in cases.items()}
    before = await api.state()
    # When the operation is sent with each
    results = await send_all(api, calls, owner.token)
    # Then each is a validation error with a clear message, and nothing was executed
    assert results == {label: validation_failure(message) for label, (_, message) in cases.items()}
    assert await api.state() == before
