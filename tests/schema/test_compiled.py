"""Compiled reads (schema/compiled/) answer exactly what field-by-field execution answers.

Every document here is sent twice, to the app (compiled path on, as served) and to an app
with FLOWDECK_COMPILED_READS off, and the two bodies and statuses must be equal; the
``flowdeck_graphql_compiled_total`` counter says which path answered. Documents the plan
covers are answered by it; errors (tenancy, bad input, sign-in) and everything it does not
cover are declined to the general path, which reports them as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app.main import create_app
from app.models import Role
from app.services.pagination import encode_cursor
from app.settings import Settings
from bench.reads import EDITOR, LIST
from tests.factories import Account, Factory, gid
from tests.schema.workflows.test_nested_pages import GENERATE_RUNS, with_versions
from tests.webhooks.helpers import enable

HISTORY = """query WorkflowHistory($id: ID!, $first: Int!, $after: String) {
  workflow(id: $id) {
    versions(first: $first, after: $after) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges { node { id number message createdAt restoredFrom createdBy { id name } } }
    }
  }
}"""
RUNS = """query($id: ID!, $after: String, $status: RunStatus) {
  workflow(id: $id) { runs(first: 2, after: $after, status: $status) { edges { node { id } } } }
}"""
# Fragments (named, inline, spread twice), aliases, merged fields, __typename at each level,
# argument defaults, a version that is not there (null), both root fields at once.
SHAPES = """query Shapes($id: ID!, $ws: ID!) {
  __typename
  a: workflow(id: $id) {
    ...Head
    label: name
    ... on Workflow { currentVersion { number } }
    currentVersion { createdBy { email __typename } ...Saved }
    none: version(number: 99) { number }
    first: version(number: 1) { number message }
    versions { totalCount edges { cursor node { number __typename } } __typename }
    schedule {
      enabled cron timezone overlap nextFireAt lastFiredAt skippedCount upcoming(count: 3)
      soon: upcoming __typename
    }
    lastRun { id status trigger queuedAt startedAt finishedAt durationMs error errorNodeId }
    __typename
  }
  workspace(id: $ws) {
    __typename id name
    workflows(first: 2, search: "wf 0") {
      __typename totalCount
      pageInfo { __typename hasNextPage endCursor }
      edges { __typename cursor node { ...Head } }
    }
  }
}
fragment Head on Workflow { id name updatedAt ...Head2 }
fragment Head2 on Workflow { name createdBy { id } }
fragment Saved on WorkflowVersion { id number diagnostics { severity code path __typename } }
"""


@pytest.fixture
async def executed_app(
    settings: Settings, engine: AsyncEngine, database_url: str
) -> AsyncIterator[Starlette]:
    """The API with the compiled path off: every query executed field by field."""
    application = create_app(
        settings.model_copy(update={"compiled_reads": False}),
        engine,
        database_url,
        own_engine=False,
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def executed(executed_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=executed_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as c:
        yield c


def _without_request_ids(body: bytes) -> bytes:
    return re.sub(rb'"requestId":"[^"]*"', b'"requestId":"-"', body)


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("flowdeck_graphql_compiled_total", {"outcome": outcome}) or 0


async def both(
    factory: Factory,
    executed: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any],
    token: str | None,
    operation_name: str | None = None,
) -> tuple[str, Any]:
    """Which path answered (answered, declined or none), and the body both gave."""
    request = {"query": query, "variables": variables, "operationName": operation_name}
    # json.dumps escapes what UTF-8 cannot carry (a lone surrogate) as the JSON text it is
    took, response = await both_raw(factory, executed, json.dumps(request).encode(), token)
    return took, response.json()


async def both_raw(
    factory: Factory, executed: httpx.AsyncClient, body: bytes, token: str | None
) -> tuple[str, httpx.Response]:
    """Which path answered, and the response both gave, to a body as it is."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    before = {o: _count(o) for o in ("answered", "declined", "none")}
    compiled = await factory.client.post("/graphql", content=body, headers=headers)
    took = [o for o in before if _count(o) > before[o]]
    by_fields = await executed.post("/graphql", content=body, headers=headers)
    # Byte for byte (key order included), but for each request's own id
    assert (compiled.status_code, _without_request_ids(compiled.content)) == (
        by_fields.status_code,
        _without_request_ids(by_fields.content),
    )
    assert compiled.headers["content-type"] == by_fields.headers["content-type"]
    assert len(took) == 1, took
    return took[0], compiled


async def dataset(factory: Factory) -> tuple[Account, str]:
    """A workspace of 3 workflows of 4 versions (one saved by its owner through the API,
    with a warning), and that workflow's ID."""
    owner = await factory.owner()
    await with_versions(factory, owner, 3, 4)
    await factory.execute(
        """UPDATE workflow_versions SET created_by_id = :user, restored_from = 2,
             diagnostics = '[{"severity": "WARNING", "code": "NO_TRIGGER", "message": "m",
                              "nodeId": "n1", "path": ["nodes", "0"]}]'
           WHERE number = 4 AND workflow_id = (SELECT id FROM workflows WHERE name = 'wf 00')""",
        user=owner.user.id,
    )
    # wf 00 has a yearly schedule (its upcoming times stay put while a test runs) and runs
    await factory.execute(
        """UPDATE workflows SET schedule_cron = '0 0 1 1 *', schedule_timezone = 'Europe/Paris',
             schedule_enabled = true, schedule_next_fire_at = '2027-01-01T00:00:00+01:00',
             schedule_skipped_count = 2
           WHERE name = 'wf 00'"""
    )
    await factory.execute(GENERATE_RUNS, runs=3, ws=owner.workspace.id)
    await factory.execute(
        """UPDATE runs SET started_at = queued_at + interval '1 second',
             finished_at = queued_at + interval '1.5 seconds', error = 'boom', error_node_id = 'n1'
           WHERE status = 'FAILED'"""
    )
    workflow_id = await factory.scalar("SELECT id FROM workflows WHERE name = 'wf 00'")
    # ... and a webhook that asks for signatures
    await enable(factory, owner, gid("Workflow", workflow_id), requireSignature=True)
    return owner, gid("Workflow", workflow_id)


async def test_the_builder_reads_are_answered_by_plans_with_the_same_bodies(
    factory: Factory, executed: httpx.AsyncClient
) -> None:
    owner, workflow = await dataset(factory)
    ws = owner.workspace_id
    cursor = encode_cursor([3])
    cases = [
        (EDITOR, {"id": workflow}),
        (LIST, {"workspaceId": ws, "first": 50}),
        (LIST, {"workspaceId": ws, "first": 0}),
        (HISTORY, {"id": workflow, "first": 2}),
        (HISTORY, {"id": workflow, "first": 2, "after": cursor}),
        (HISTORY, {"id": workflow, "first": 100, "after": None}),
        (SHAPES, {"id": workflow, "ws": ws}),
    ]
    # The builder contract's own list and history, picked out of the whole document by name
    contract = (Path(__file__).parent.parent / "contract" / "builder.graphql").read_text()
    for name, variables in (
        ("WorkflowEditor", {"id": workflow}),
        ("WorkflowList", {"workspaceId": ws, "first": 2}),
        ("WorkflowList", {"workspaceId": ws, "first": 2, "after": None, "search": "wf"}),
        ("WorkflowHistory", {"id": workflow, "first": 3}),
        ("WorkflowVersion", {"id": workflow, "number": 2}),
        ("WorkflowVersion", {"id": workflow, "number": 99}),
        ("RunList", {"workflowId": workflow, "first": 2}),
        ("RunList", {"workflowId": workflow, "first": 5, "status": "FAILED"}),
        ("RunList", {"workflowId": workflow, "first": 0}),
    ):
        took, body = await both(factory, executed, contract, variables, owner.token, name)
        assert took == "answered", (name, body)
        assert "errors" not in body
    for query, variables in cases:
        took, body = await both(factory, executed, query, variables, owner.token)
        assert took == "answered", (query[:40], variables, body)
        assert "errors" not in body
    # The values themselves, not only their sameness
    _, body = await both(factory, executed, EDITOR, {"id": workflow}, owner.token)
    version = body["data"]["workflow"]["currentVersion"]
    assert version["number"] == 4
    assert version["createdBy"] == {"id": gid("User", owner.user.id), "name": owner.user.name}
    assert version["restoredFrom"] == 2
    assert version["graph"] == {"nodes": [], "edges": []}
    assert version["diagnostics"] == [
        {
            "severity": "WARNING",
            "code": "NO_TRIGGER",
            "message": "m",
            "nodeId": "n1",
            "edgeId": None,
        }
    ]
    # A newest version nobody is named for (its user removed), and one another member saved:
    # read with the workflow, as the general path now reads it too
    other = await factory.member(owner, Role.EDITOR)
    unnamed = gid("Workflow", await factory.scalar("SELECT id FROM workflows WHERE name = 'wf 01'"))
    await factory.execute(
        """UPDATE workflow_versions SET created_by_id = :user WHERE number = 3
             AND workflow_id = (SELECT id FROM workflows WHERE name = 'wf 00')""",
        user=other.user.id,
    )
    await factory.execute("UPDATE workflows SET current_version = 3 WHERE name = 'wf 00'")
    for shown, creator in ((unnamed, None), (workflow, {"id": gid("User", other.user.id)})):
        took, body = await both(
            factory,
            executed,
            "query($id: ID!) { workflow(id: $id) { currentVersion { createdBy { id } } } }",
            {"id": shown},
            owner.token,
        )
        assert took == "answered"
        assert body["data"]["workflow"]["currentVersion"]["createdBy"] == creator
    await factory.execute("UPDATE workflows SET current_version = 4 WHERE name = 'wf 00'")
    _, body = await both(
        factory, executed, HISTORY, {"id": workflow, "first": 2, "after": cursor}, owner.token
    )
    page = body["data"]["workflow"]["versions"]
    assert [e["node"]["number"] for e in page["edges"]] == [2, 1]
    assert (page["totalCount"], page["pageInfo"]["hasNextPage"]) == (4, False)
    # The run history, a page at a time
    _, body = await both(
        factory, executed, contract, {"workflowId": workflow, "first": 2}, owner.token, "RunList"
    )
    runs = body["data"]["workflow"]["runs"]
    assert (runs["totalCount"], len(runs["edges"]), runs["pageInfo"]["hasNextPage"]) == (3, 2, True)
    after = {"workflowId": workflow, "first": 2, "after": runs["pageInfo"]["endCursor"]}
    took, body = await both(factory, executed, contract, after, owner.token, "RunList")
    assert took == "answered"
    assert [e["node"]["version"] for e in body["data"]["workflow"]["runs"]["edges"]] == [
        {"number": 1}
    ]
    _, body = await both(factory, executed, SHAPES, {"id": workflow, "ws": ws}, owner.token)
    schedule = body["data"]["a"]["schedule"]
    assert schedule["upcoming"][0].startswith(str(int(schedule["nextFireAt"][:4])))
    assert (schedule["overlap"], schedule["skippedCount"], len(schedule["soon"])) == ("SKIP", 2, 5)
    assert body["data"]["a"]["lastRun"]["status"] == "SUCCEEDED"
    # The builder's editor as the contract has it: the webhook's URL for those who may run
    # the workflow, null for a viewer; every node type
    viewer = await factory.member(owner, Role.VIEWER)
    for account, shown in ((owner, True), (viewer, False)):
        took, body = await both(
            factory, executed, contract, {"id": workflow}, account.token, "WorkflowEditor"
        )
        assert took == "answered"
        hook = body["data"]["workflow"]["webhook"]
        assert (hook["url"] is not None, hook["requireSignature"]) == (shown, True)
        assert len(body["data"]["nodeTypes"]) > 10


async def test_another_workspace_reads_as_not_found_after_its_owner_compiled_the_document(
    factory: Factory, executed: httpx.AsyncClient
) -> None:
    owner, workflow = await dataset(factory)
    stranger = await factory.owner("Elsewhere")
    # The owner's request compiles and keeps the plan; the stranger's reuses it
    assert (await both(factory, executed, EDITOR, {"id": workflow}, owner.token))[0] == "answered"
    for query, variables in (
        (EDITOR, {"id": workflow}),
        (HISTORY, {"id": workflow, "first": 5}),
        (LIST, {"workspaceId": owner.workspace_id, "first": 5}),
    ):
        took, body = await both(factory, executed, query, variables, stranger.token)
        assert took == "declined"
        assert list(body["data"].values()) == [None]  # the root field, nulled by its error
        assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]


async def test_bad_input_and_sign_in_are_reported_by_the_general_path(
    factory: Factory, executed: httpx.AsyncClient
) -> None:
    owner, workflow = await dataset(factory)
    ws = owner.workspace_id
    declined = [
        (EDITOR, {"id": "not an id"}, owner.token),
        (EDITOR, {"id": gid("Workflow", "00000000-0000-0000-0000-000000000000")}, owner.token),
        (EDITOR, {"id": gid("Workspace", owner.workspace.id)}, owner.token),
        (HISTORY, {"id": workflow, "first": 101}, owner.token),
        (HISTORY, {"id": workflow, "first": -1}, owner.token),
        (HISTORY, {"id": workflow, "first": 2, "after": "garbage"}, owner.token),
        (HISTORY, {"id": workflow, "first": 2, "after": "x" * 10_000}, owner.token),
        (HISTORY, {"id": workflow, "first": "two"}, owner.token),
        (HISTORY, {"id": workflow}, owner.token),
        (HISTORY, {"id": workflow, "first": 2**40}, owner.token),
        (LIST, {"workspaceId": ws, "first": 500}, owner.token),
        (RUNS, {"id": workflow, "after": "garbage"}, owner.token),
        (RUNS, {"id": workflow, "status": "NOPE"}, owner.token),
        (EDITOR, {"id": workflow}, None),
        (EDITOR, {"id": workflow}, "fd_not_a_token"),
        (EDITOR, {"id": "\u0000"}, owner.token),
    ]
    for query, variables, token in declined:
        took, body = await both(factory, executed, query, variables, token)
        assert took == "declined", (variables, body)
        assert body.get("errors"), body
    # A cursor time without an offset (no cursor the API writes), beside a page without a
    # cursor: refused alike by both paths (once, the general path sent both times in one
    # array, and the binary array could not hold an aware and a naive time: an internal error)
    naive = encode_cursor(["2030-01-01T00:00:00", "ffffffff-ffff-ffff-ffff-ffffffffffff"])
    mixed = """query($id: ID!, $a: String) { workflow(id: $id) {
      x: runs(first: 1, after: $a) { edges { node { id } } }
      y: runs(first: 1) { edges { node { id } } } } }"""
    took, body = await both(factory, executed, mixed, {"id": workflow, "a": naive}, owner.token)
    assert took == "declined"
    assert [(e["extensions"]["code"], e["message"]) for e in body["errors"]] == [
        ("BAD_USER_INPUT", "Invalid cursor.")
    ]
    # A refused argument of a computed field
    upcoming = """query($id: ID!) { workflow(id: $id) { schedule { upcoming(count: 51) } } }"""
    took, body = await both(factory, executed, upcoming, {"id": workflow}, owner.token)
    assert took == "declined"
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    # A lone surrogate (the JSON escape is valid; the ID is not)
    took, body = await both(factory, executed, EDITOR, {"id": "\ud800"}, owner.token)
    assert took == "declined"
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # Text PostgreSQL cannot store, in a search: refused before anything is read
    search = """query($ws: ID!, $s: String) { workspace(id: $ws) {
      workflows(first: 5, search: $s) { edges { node { name } } } } }"""
    took, body = await both(factory, executed, search, {"ws": ws, "s": "a\u0000b"}, owner.token)
    assert took == "declined"
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    took, body = await both(factory, executed, search, {"ws": ws, "s": "wf 01"}, owner.token)
    assert took == "answered"
    assert [e["node"]["name"] for e in body["data"]["workspace"]["workflows"]["edges"]] == ["wf 01"]


async def test_what_a_plan_does_not_cover_is_executed_field_by_field(
    factory: Factory, executed: httpx.AsyncClient
) -> None:
    owner, workflow = await dataset(factory)
    uncovered = [
        # a directive, a field outside the plan, introspection, a fragment on an interface
        """query($id: ID!) { workflow(id: $id) { name @include(if: true) } }""",
        """query($id: ID!) { workflow(id: $id) { name schedule { recentFires { outcome } } } }""",
        """query($id: ID!) { workflow(id: $id) { name currentVersion { isPublished } } }""",
        """query($id: ID!) { workflow(id: $id) { name } __schema { queryType { name } } }""",
        """query($id: ID!) { workflow(id: $id) { versions(first: 1) {
             a: edges { node { number } } b: edges { node { id } } } } }""",
        # documents that do not validate or parse
        """query($id: ID!) { workflow(id: $id) { nope } }""",
        """query($id: ID!) { workflow(id: $id) { name }""",
    ]
    for query in uncovered:
        took, body = await both(factory, executed, query, {"id": workflow}, owner.token)
        assert took == "none", (query, body)
    # A mutation is never compiled (one that finds nothing, so both paths answer alike)
    nothing = gid("Workflow", "00000000-0000-0000-0000-000000000000")
    mutation = """mutation($id: ID!) { workflowDelete(id: $id) { deletedId } }"""
    took, body = await both(factory, executed, mutation, {"id": nothing}, owner.token)
    assert took == "none"
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await factory.scalar("SELECT count(*) FROM workflows") == 3


async def test_a_revoked_token_is_refused_on_a_compiled_document(
    factory: Factory, executed: httpx.AsyncClient
) -> None:
    owner, workflow = await dataset(factory)
    made = await factory.gql(
        """mutation { apiTokenCreate(input: {name: "spare"}) { token apiToken { id } } }""",
        token=owner.token,
    )
    spare = made["data"]["apiTokenCreate"]
    took, _ = await both(factory, executed, EDITOR, {"id": workflow}, spare["token"])
    assert took == "answered"  # the token is now kept by the process
    revoked = await factory.gql(
        """mutation($id: ID!) { apiTokenRevoke(id: $id) { revokedId } }""",
        {"id": spare["apiToken"]["id"]},
        token=owner.token,
    )
    assert revoked["data"]["apiTokenRevoke"]["revokedId"] == spare["apiToken"]["id"]
    took, body = await both(factory, executed, EDITOR, {"id": workflow}, spare["token"])
    assert took == "declined"
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]


async def test_a_persisted_query_is_answered_by_its_plan(
    factory: Factory, executed: httpx.AsyncClient
) -> None:
    import hashlib

    owner, workflow = await dataset(factory)
    digest = hashlib.sha256(EDITOR.encode()).hexdigest()
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    headers = {"authorization": f"Bearer {owner.token}"}
    by_hash = {"variables": {"id": workflow}, "extensions": persisted}
    before = _count("answered")
    # Unknown hash: the general path answers PersistedQueryNotFound; then text + hash; then hash
    first = await factory.client.post("/graphql", json=by_hash, headers=headers)
    assert first.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    await factory.client.post("/graphql", json={**by_hash, "query": EDITOR}, headers=headers)
    answer = await factory.client.post("/graphql", json=by_hash, headers=headers)
    assert _count("answered") == before + 2
    expected = await executed.post(
        "/graphql", json={"query": EDITOR, "variables": {"id": workflow}}, headers=headers
    )
    assert answer.json() == expected.json()


async def test_bodies_that_are_not_one_request_are_left_to_the_general_path(
    factory: Factory, executed: httpx.AsyncClient
) -> None:
    owner, workflow = await dataset(factory)
    request = {"query": EDITOR, "variables": {"id": workflow}}
    hostile = [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[]",
        json.dumps([request]).encode(),  # a batch
        json.dumps({**request, "query": 5}).encode(),
        json.dumps({**request, "variables": [workflow]}).encode(),
        json.dumps({**request, "operationName": 7}).encode(),
        json.dumps({**request, "operationName": "Nope"}).encode(),
        json.dumps({**request, "extensions": "x"}).encode(),
        json.dumps({"variables": {"id": workflow}}).encode(),  # no query
        b"[" * 5000 + b"]" * 5000,
        b'{"query": "' + b"{ " * 20_000 + b'"}',
        # Over 64 KiB (as a save with its graph is): not parsed twice, still answered
        json.dumps({**request, "variables": {"id": workflow, "pad": "x" * 70_000}}).encode(),
    ]
    for body in hostile:
        took, response = await both_raw(factory, executed, body, owner.token)
        assert took == "none", (body[:60], response.text[:200])
    # The oversized one was a good request: the general path answered it in full
    assert response.json()["data"]["workflow"]["currentVersion"]["number"] == 4
    # An integer past 64 bits in an unused variable (orjson reads it as a float, the general
    # path as an int): answered, and the same
    padded = json.dumps({**request, "variables": {"id": workflow, "pad": 10**30}}).encode()
    assert (await both_raw(factory, executed, padded, owner.token))[0] == "answered"


async def test_values_a_plan_cannot_show_as_the_general_path_does_are_left_to_it(
    factory: Factory, executed: httpx.AsyncClient
) -> None:
    owner, workflow = await dataset(factory)
    ws = owner.workspace_id
    # A run that waited 30 days (flow.delay allows it): its durationMs is past GraphQL's Int
    await factory.execute(
        "UPDATE runs SET started_at = queued_at, finished_at = queued_at + interval '30 days'"
        " WHERE status = 'FAILED'"
    )
    runs = """query($id: ID!) { workflow(id: $id) {
      runs(first: 5) { edges { node { status durationMs } } } lastRun { durationMs } } }"""
    took, body = await both(factory, executed, runs, {"id": workflow}, owner.token)
    assert took == "declined"
    assert "Int cannot represent" in body["errors"][0]["message"]
    # Diagnostics stored in shapes no save writes: a number in a path (String shows "0"), no
    # code and an unknown severity (the general path's unexpected error, logged and masked)
    for stored in (
        '[{"severity": "WARNING", "code": "X", "message": "m", "path": ["nodes", 0]}]',
        '[{"severity": "WARNING", "message": "m"}]',
        '[{"severity": "NOPE", "code": "X", "message": "m"}]',
    ):
        await factory.execute(
            "UPDATE workflow_versions SET diagnostics = CAST(:d AS jsonb) WHERE number = 4",
            d=stored,
        )
        took, _ = await both(factory, executed, SHAPES, {"id": workflow, "ws": ws}, owner.token)
        assert took == "declined", stored
    # A null for an argument that is non-null with a default: the general path's error
    null_first = """query($id: ID!, $n: Int) { workflow(id: $id) {
      versions(first: $n) { edges { node { number } } } } }"""
    took, body = await both(factory, executed, null_first, {"id": workflow, "n": None}, owner.token)
    assert took == "declined"
    assert body["errors"]
    # Variables nested deeper than the compiled path parses: left to the general path, which
    # refuses or answers them as it always did
    for depth in (100, 950, 1010):
        pad = b"[" * depth + b"]" * depth
        head = json.dumps({"query": EDITOR, "variables": {"id": workflow}}).encode()[:-2]
        took, _ = await both_raw(factory, executed, head + b', "pad": ' + pad + b"}}", owner.token)
        assert took == "none", depth


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0


async def test_a_database_fault_is_answered_once_without_a_second_try(
    factory: Factory,
    settings: Settings,
    engine: AsyncEngine,
    database_url: str,
    spans: InMemorySpanExporter,
) -> None:
    owner, workflow = await dataset(factory)
    # An app whose statements give up after half a second, and a lock that holds every read
    # of versions past it
    impatient = create_app(
        settings.model_copy(update={"db_statement_timeout_seconds": 0.5}),
        engine,
        database_url,
        own_engine=False,
    )
    async with impatient.router.lifespan_context(impatient):
        transport = httpx.ASGITransport(app=impatient)
        async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as c:
            headers = {"authorization": f"Bearer {owner.token}"}
            request = {"query": EDITOR, "variables": {"id": workflow}}
            assert "errors" not in (await c.post("/graphql", json=request, headers=headers)).json()
            before = {o: _count(o) for o in ("answered", "declined")}
            timed = _sample("flowdeck_graphql_operation_duration_seconds_count", type="query")
            failed = _sample("flowdeck_graphql_operations_total", type="query", outcome="error")
            async with engine.connect() as locker:
                await locker.execute(text("LOCK TABLE workflow_versions IN ACCESS EXCLUSIVE MODE"))
                refused = await c.post("/graphql", json=request, headers=headers)
                await locker.rollback()
    # Then a 503 with the masked error and Retry-After, from the compiled path alone: the
    # statement was not run a second time by the general path
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
    assert refused.json() == {
        "data": None,
        "errors": [
            {
                "message": refused.json()["errors"][0]["message"],
                "extensions": {
                    "code": "SERVICE_UNAVAILABLE",
                    "requestId": refused.headers["x-request-id"],
                },
            }
        ],
    }
    assert "canceling statement" not in refused.text
    assert (_count("answered") - before["answered"], _count("declined") - before["declined"]) == (
        1,
        0,
    )
    # Counted, timed and traced as an answer with an error, like any other query's
    assert _sample("flowdeck_graphql_operation_duration_seconds_count", type="query") == timed + 1
    assert _sample("flowdeck_graphql_operations_total", type="query", outcome="error") == failed + 1
    answered, unavailable = [s for s in spans.get_finished_spans() if s.name.startswith("query")]
    assert answered.name == unavailable.name == "query WorkflowEditor"
    assert answered.kind == unavailable.kind == SpanKind.SERVER
    assert answered.status.status_code == StatusCode.UNSET
    assert unavailable.status.status_code == StatusCode.ERROR
    assert unavailable.status.description == "SERVICE_UNAVAILABLE"
    assert unavailable.attributes == {
        "graphql.operation.type": "query",
        "graphql.operation.name": "WorkflowEditor",
    }
