"""Secrets through the API: set, list (names only), delete, roles, tenancy, use and redaction."""

from __future__ import annotations

import json
import logging

import pytest

from app.models import Role
from tests.factories import Factory, gid
from tests.hostile import user_error
from tests.openai_stub import OpenAIStub
from tests.runs import execute, flow, node, run_graph, steps_by_node, wait_for
from tests.secrets import (
    DELETE,
    LIST,
    SET,
    delete_secret,
    owner_with_secrets,
    sending_key,
    set_secret,
)
from tests.servers import LocalHTTP

API_KEY = "sk-live-4f9a7c1e2b8d6f30"


async def test_set_list_replace_and_delete_never_return_the_value(factory: Factory) -> None:
    # Given an owner
    owner = await factory.owner()
    # When they set a secret
    payload = await set_secret(factory, owner, "API_KEY", API_KEY)
    # Then it is listed by name, and its value is stored only as ciphertext
    assert payload["userErrors"] == []
    assert payload["secret"]["name"] == "API_KEY"
    listed = await factory.gql(LIST, {"id": owner.workspace_id}, token=owner.token)
    assert [s["name"] for s in listed["data"]["workspace"]["secrets"]] == ["API_KEY"]
    stored = await factory.scalar("SELECT ciphertext FROM secrets WHERE name = 'API_KEY'")
    assert API_KEY.encode() not in bytes(stored)
    assert len(bytes(stored)) == len(API_KEY) + 16  # the GCM tag
    # When they replace it, updatedAt moves and createdAt stays
    again = await set_secret(factory, owner, "API_KEY", API_KEY + "-v2")
    assert again["secret"]["createdAt"] == payload["secret"]["createdAt"]
    assert again["secret"]["updatedAt"] > payload["secret"]["updatedAt"]
    assert await factory.scalar("SELECT count(*) FROM secrets") == 1
    # No field of the schema can return a value
    introspection = await factory.gql(
        '{ __type(name: "Secret") { fields { name } } }', token=owner.token
    )
    fields = {f["name"] for f in introspection["data"]["__type"]["fields"]}
    assert fields == {"name", "createdAt", "updatedAt"}
    # When they delete it, it is gone
    deleted = await delete_secret(factory, owner, "API_KEY")
    assert deleted == {"deletedName": "API_KEY", "userErrors": []}
    assert await factory.scalar("SELECT count(*) FROM secrets") == 0


async def test_each_write_uses_a_fresh_nonce(factory: Factory) -> None:
    owner = await owner_with_secrets(factory, A="same-value")
    first = bytes(await factory.scalar("SELECT nonce FROM secrets"))
    await set_secret(factory, owner, "A", "same-value")
    second = bytes(await factory.scalar("SELECT nonce FROM secrets"))
    assert len(first) == 12
    assert first != second


@pytest.mark.parametrize(
    ("name", "value", "field", "message"),
    [
        ("", API_KEY, "name", "A secret's name is 1 to 100 letters"),
        ("1ABC", API_KEY, "name", "A secret's name is 1 to 100 letters"),
        ("API-KEY", API_KEY, "name", "A secret's name is 1 to 100 letters"),
        ("A" * 101, API_KEY, "name", "A secret's name is 1 to 100 letters"),
        ("a'; DROP TABLE secrets; --", API_KEY, "name", "A secret's name is 1 to 100 letters"),
        ("KEY", "abc", "value", "A secret's value is 4 to 65536 characters"),
        ("KEY", "x" * 65537, "value", "A secret's value is 4 to 65536 characters"),
    ],
)
async def test_invalid_names_and_values_are_user_errors_and_write_nothing(
    factory: Factory, name: str, value: str, field: str, message: str
) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()
    payload = await set_secret(factory, owner, name, value)
    assert payload["secret"] is None
    [error] = payload["userErrors"]
    assert error["field"] == ["input", field]
    assert error["code"] == "INVALID"
    assert error["message"].startswith(message)
    assert await factory.snapshot() == before


async def test_deleting_a_missing_secret_is_not_found(factory: Factory) -> None:
    owner = await factory.owner()
    payload = await delete_secret(factory, owner, "NOPE")
    assert payload == {
        "deletedName": None,
        "userErrors": [
            user_error(("input", "name"), "NOT_FOUND", 'No secret "NOPE" in this workspace.')
        ],
    }


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.EDITOR])
async def test_only_owners_set_and_delete(factory: Factory, role: Role) -> None:
    owner = await owner_with_secrets(factory, API_KEY=API_KEY)
    other = await factory.member(owner, role)
    before = await factory.snapshot()
    for mutation, variables in (
        (SET, {"workspaceId": owner.workspace_id, "name": "API_KEY", "value": "stolen!"}),
        (SET, {"workspaceId": owner.workspace_id, "name": "NEW", "value": "planted"}),
        (DELETE, {"workspaceId": owner.workspace_id, "name": "API_KEY"}),
    ):
        body = await factory.gql(mutation, {"i": variables}, token=other.token)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
    assert await factory.snapshot() == before
    listed = await factory.gql(LIST, {"id": owner.workspace_id}, token=other.token)
    if role is Role.EDITOR:
        assert [s["name"] for s in listed["data"]["workspace"]["secrets"]] == ["API_KEY"]
    else:
        assert listed["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_another_workspace_reads_as_not_found(factory: Factory) -> None:
    owner = await owner_with_secrets(factory, "Acme", API_KEY=API_KEY)
    stranger = await factory.owner("Globex")
    before = await factory.snapshot()
    for mutation, variables in (
        (SET, {"workspaceId": owner.workspace_id, "name": "API_KEY", "value": "stolen!"}),
        (DELETE, {"workspaceId": owner.workspace_id, "name": "API_KEY"}),
        (
            SET,
            {
                "workspaceId": gid("Workflow", owner.workspace_id.split(":")[-1]),
                "name": "X",
                "value": "abcd",
            },
        ),
    ):
        body = await factory.gql(mutation, {"i": variables}, token=stranger.token)
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body
    listed = await factory.gql(LIST, {"id": owner.workspace_id}, token=stranger.token)
    assert listed["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await factory.snapshot() == before


async def test_a_node_gets_the_value_and_nothing_stored_shows_it(
    factory: Factory, worker: None, upstream: LocalHTTP, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a secret and a workflow that sends it upstream in a header, the query and the body;
    # the upstream echoes all of it back, and later nodes quote it in their output and error
    owner = await owner_with_secrets(factory, API_KEY=API_KEY)
    graph = flow(
        node("start", "trigger"),
        node(
            "call",
            "http.request",
            method="POST",
            url=upstream.url("/echo") + "?key={{ secrets.API_KEY }}",
            headers={"Authorization": "Bearer {{ secrets.API_KEY }}"},
            body={"key": "{{ secrets.API_KEY }}", "who": "{{ input.name }}"},
        ),
        node("quote", "text.format", template="key is {{ secrets.API_KEY }}!"),
        node("fail", "flow.fail", message="Refused {{ secrets.API_KEY }} for {{ input }}"),
    )
    caplog.set_level(logging.DEBUG)
    # When it runs
    run = await run_graph(factory, owner, graph, {"name": "Ada"})
    # Then the upstream got the real value, everywhere it was sent
    [hit] = [h for h in upstream.hits if h.path == "/echo"]
    assert hit.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(hit.body) == {"key": API_KEY, "who": "Ada"}
    # And the run, its steps and errors show it redacted
    assert run["status"] == "FAILED"
    steps = steps_by_node(run)
    echoed = steps["call"]["output"]["body"]
    assert echoed["headers"]["authorization"] == "Bearer [secret:API_KEY]"
    assert echoed["query"] == {"key": "[secret:API_KEY]"}
    assert json.loads(echoed["body"]) == {"key": "[secret:API_KEY]", "who": "Ada"}
    assert echoed["url"].endswith("/echo?key=[secret:API_KEY]")
    assert steps["quote"]["output"] == "key is [secret:API_KEY]!"
    assert steps["quote"]["input"] == steps["call"]["output"]
    assert steps["fail"]["error"].startswith("Refused [secret:API_KEY] for ")
    assert run["error"].startswith('Node "fail" (flow.fail) failed: Refused [secret:API_KEY]')
    # Nowhere in the database, events included, nor in any log line, is the value
    for table in ("runs", "run_steps", "run_events"):
        dump = await factory.scalar(f"SELECT string_agg(t::text, ' ') FROM {table} t")
        assert API_KEY not in dump, table
        assert "[secret:API_KEY]" in dump, table
    for record in caplog.records:
        if record.name == "uvicorn.access":
            continue  # the upstream's own access log (the outside world), not Flowdeck's
        assert API_KEY not in record.getMessage()
        assert API_KEY not in json.dumps(record.__dict__, default=str)


async def test_an_upstream_error_quoting_the_key_is_redacted(
    factory: Factory, worker: None, upstream: LocalHTTP
) -> None:
    owner = await owner_with_secrets(factory, API_KEY=API_KEY)
    call = sending_key(upstream.url("/refuse"), "API_KEY")

    run = await run_graph(factory, owner, flow(node("start", "trigger"), call))

    step = steps_by_node(run)["call"]
    assert step["error"] == 'HTTP 403 from 127.0.0.1: {"error":"key [secret:API_KEY] is revoked"}'
    assert step["output"]["body"] == {"error": "key [secret:API_KEY] is revoked"}
    assert API_KEY not in json.dumps(run)


async def test_a_node_reaches_only_its_own_workspaces_secrets(
    factory: Factory, worker: None
) -> None:
    acme = await factory.owner("Acme")
    await owner_with_secrets(factory, "Globex", API_KEY=API_KEY)
    graph = flow(node("start", "trigger"), node("out", "output", value="{{ secrets.API_KEY }}"))
    # Globex's API_KEY does not count for Acme: saving says so (MISSING_SECRET) ...
    created = await factory.gql(
        """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) {
             workflow { id currentVersion { diagnostics { code nodeId } } } } }""",
        {"i": {"workspaceId": acme.workspace_id, "name": "Flow", "graph": graph}},
        token=acme.token,
    )
    workflow = created["data"]["workflowCreate"]["workflow"]
    assert workflow["currentVersion"]["diagnostics"] == [
        {"code": "MISSING_SECRET", "nodeId": "out"}
    ]

    # ... and a run does not reach it
    run = await wait_for(factory, acme, (await execute(factory, acme, workflow["id"]))["run"]["id"])

    assert run["status"] == "FAILED"
    assert API_KEY not in json.dumps(run)
    assert "API_KEY" in steps_by_node(run)["out"]["error"]


async def test_ai_generate_takes_its_key_from_a_secret_and_never_shows_it(
    factory: Factory, worker: None
) -> None:
    stub = OpenAIStub(api_key=API_KEY).start()
    try:
        owner = await owner_with_secrets(factory, OPENAI_KEY=API_KEY)
        graph = flow(
            node("start", "trigger"),
            node(
                "ai",
                "ai.generate",
                baseUrl=stub.base_url,
                model="gpt-4o-mini",
                system="Answer in capitals.",
                prompt="Say hello to {{ input.name }} (key {{ secrets.OPENAI_KEY }})",
                apiKeySecret="OPENAI_KEY",
            ),
            node("out", "output", value="{{ input.text }}"),
        )
        run = await run_graph(factory, owner, graph, {"name": "Ada"})
        # The endpoint got the key as a Bearer token and in the prompt
        [hit] = stub.hits
        assert hit.headers["authorization"] == f"Bearer {API_KEY}"
        assert stub.requests[0]["messages"][-1]["content"] == (f"Say hello to Ada (key {API_KEY})")
        # The stub answers in capitals, echoing the key: the run shows it redacted
        assert run["status"] == "SUCCEEDED"
        assert run["output"] == f"SAY HELLO TO ADA (KEY {API_KEY.upper()})"
        assert API_KEY not in json.dumps(run)
    finally:
        stub.stop()
