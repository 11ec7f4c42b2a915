"""The audit trail: every change, in its own transaction, who/what/which/when; owners read it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.models import Role
from tests.factories import Account, Factory, gid
from tests.runs import create_workflow, edge, execute, node, publish
from tests.secrets import DELETE, set_secret

AUDIT = """query($ws: ID!, $first: Int!, $after: String, $filter: AuditEventFilter) {
  workspace(id: $ws) { auditEvents(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id at action objectType objectId summary actorTokenId actor { id email } } } } } }"""
V1 = {
    "nodes": [node("start", "trigger"), node("out", "output", value="{{ input }}")],
    "edges": [edge("start", "out")],
}
V2 = {
    "nodes": [
        node("start", "trigger"),
        node("out", "output", value="{{ input.a }}"),
        node("extra", "text.format", template="x"),
    ],
    "edges": [edge("start", "out"), edge("start", "extra")],
}
SECRET_VALUE = "sv-9f8e7d6c5b4a3210"


async def gql(factory: Factory, account: Account, query: str, **variables: Any) -> dict[str, Any]:
    body = await factory.gql(query, variables, token=account.token)
    assert "errors" not in body, body
    (payload,) = body["data"].values()
    assert payload.get("userErrors", []) == [], payload
    return payload


async def trail(factory: Factory, account: Account, **variables: Any) -> list[dict[str, Any]]:
    body = await factory.gql(
        AUDIT, {"ws": account.workspace_id, "first": 100, **variables}, token=account.token
    )
    assert "errors" not in body, body
    return [e["node"] for e in body["data"]["workspace"]["auditEvents"]["edges"]]


def brief(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            e["action"],
            e["objectType"],
            e["objectId"],
            e["summary"],
            e["actor"]["email"] if e["actor"] else None,
            e["actorTokenId"],
        )
        for e in events
    ]


async def token_id(factory: Factory, account: Account) -> str:
    key = await factory.scalar(
        "SELECT id FROM api_tokens WHERE user_id = :user ORDER BY created_at LIMIT 1",
        user=account.user.id,
    )
    return gid("ApiToken", key)


async def test_every_change_is_recorded_with_who_what_which_and_a_summary(
    factory: Factory,
) -> None:
    owner = await factory.owner()
    ws = owner.workspace_id
    tok = await token_id(factory, owner)
    email = owner.user.email

    bob = (
        await gql(
            factory,
            owner,
            """mutation($i: MemberSetInput!) { memberSet(input: $i) {
                 membership { user { id } } userErrors { code } } }""",
            i={"workspaceId": ws, "email": "bob@example.com", "role": "EDITOR"},
        )
    )["membership"]["user"]["id"]
    wf = await create_workflow(factory, owner, V1, published=False)
    await gql(
        factory,
        owner,
        """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }""",
        i={"workflowId": wf, "graph": V2, "baseVersion": 1, "message": "m" * 2000},
    )
    await gql(
        factory,
        owner,
        """mutation($i: WorkflowRollbackInput!) { workflowRollback(input: $i) {
             userErrors { code } } }""",
        i={"workflowId": wf, "toVersion": 1},
    )
    await gql(
        factory,
        owner,
        """mutation($i: WorkflowSetTemplateInput!) { workflowSetTemplate(input: $i) {
             userErrors { code } } }""",
        i={"workflowId": wf, "isTemplate": True, "category": "Ops"},
    )
    assert (await publish(factory, owner, wf, 3, baseVersion=0))["userErrors"] == []
    await gql(
        factory,
        owner,
        """mutation($id: ID!) { workflowUnpublish(id: $id) { userErrors { code } } }""",
        id=wf,
    )
    await gql(
        factory,
        owner,
        """mutation($i: WorkflowScheduleUpdateInput!) { workflowScheduleUpdate(input: $i) {
             userErrors { code } } }""",
        i={"workflowId": wf, "cron": "0 9 * * *", "timezone": "UTC", "enabled": True},
    )
    await gql(
        factory,
        owner,
        """mutation($i: WorkflowWebhookUpdateInput!) { workflowWebhookUpdate(input: $i) {
             webhook { signingSecret } userErrors { code } } }""",
        i={"workflowId": wf, "enabled": True, "requireSignature": True},
    )
    assert (await set_secret(factory, owner, "API_KEY", SECRET_VALUE))["userErrors"] == []
    await gql(factory, owner, DELETE, i={"workspaceId": ws, "name": "API_KEY"})
    run = (await execute(factory, owner, wf, {"n": 1}, version=3))["run"]["id"]
    await gql(
        factory,
        owner,
        """mutation($id: ID!) { runCancel(id: $id) { userErrors { code } } }""",
        id=run,
    )
    await gql(
        factory,
        owner,
        """mutation($i: RunRetryInput!) { runRetry(input: $i) { userErrors { code } } }""",
        i={"runId": run},
    )
    new_token = (
        await gql(
            factory,
            owner,
            """mutation($i: ApiTokenCreateInput!) { apiTokenCreate(input: $i) {
                 apiToken { id } userErrors { code } } }""",
            i={"name": "CI", "expiresAt": "2099-01-01T00:00:00+00:00"},
        )
    )["apiToken"]["id"]
    await gql(
        factory,
        owner,
        """mutation($i: WorkspaceUpdateInput!) { workspaceUpdate(input: $i) {
             userErrors { code } } }""",
        i={"workspaceId": ws, "runRetentionDays": 30},
    )
    await gql(
        factory,
        owner,
        """mutation($i: MemberRemoveInput!) { memberRemove(input: $i) { userErrors { code } } }""",
        i={"workspaceId": ws, "userId": bob},
    )
    await gql(
        factory,
        owner,
        """mutation($id: ID!) { workflowDelete(id: $id) { userErrors { code } } }""",
        id=wf,
    )

    events = await trail(factory, owner)
    assert brief(events) == [
        ("WORKFLOW_DELETE", "WORKFLOW", wf, {"name": "Flow", "versions": 3}, email, tok),
        (
            "MEMBER_REMOVE",
            "MEMBER",
            bob,
            {"email": "bob@example.com", "role": "EDITOR"},
            email,
            tok,
        ),
        (
            "WORKSPACE_UPDATE",
            "WORKSPACE",
            ws,
            {"runRetentionDays": {"from": 90, "to": 30}},
            email,
            tok,
        ),
        (
            "TOKEN_CREATE",
            "API_TOKEN",
            new_token,
            {"name": "CI", "expiresAt": "2099-01-01T00:00:00+00:00"},
            email,
            tok,
        ),
        ("RUN_RETRY", "RUN", run, {"fromFailedStep": False, "reusedSteps": 0}, email, tok),
        ("RUN_CANCEL", "RUN", run, {"previousStatus": "QUEUED"}, email, tok),
        ("SECRET_DELETE", "SECRET", gid("Secret", "API_KEY"), {"name": "API_KEY"}, email, tok),
        ("SECRET_SET", "SECRET", gid("Secret", "API_KEY"), {"name": "API_KEY"}, email, tok),
        (
            "WEBHOOK_UPDATE",
            "WORKFLOW",
            wf,
            {
                "enabled": True,
                "requireSignature": True,
                "waitForResult": False,
                "rotatedUrl": False,
                "newSigningSecret": True,
            },
            email,
            tok,
        ),
        (
            "SCHEDULE_UPDATE",
            "WORKFLOW",
            wf,
            {"cron": "0 9 * * *", "timezone": "UTC", "enabled": True, "overlap": "SKIP"},
            email,
            tok,
        ),
        ("WORKFLOW_UNPUBLISH", "WORKFLOW", wf, {"version": 3}, email, tok),
        ("WORKFLOW_PUBLISH", "WORKFLOW", wf, {"version": 3, "previousVersion": None}, email, tok),
        ("WORKFLOW_TEMPLATE", "WORKFLOW", wf, {"isTemplate": True, "category": "Ops"}, email, tok),
        ("WORKFLOW_ROLLBACK", "WORKFLOW", wf, {"version": 3, "restoredFrom": 1}, email, tok),
        (
            "WORKFLOW_SAVE",
            "WORKFLOW",
            wf,
            {
                "version": 2,
                "nodesAdded": 1,
                "nodesRemoved": 0,
                "nodesChanged": 1,
                "edgesAdded": 1,
                "edgesRemoved": 0,
                "edgesChanged": 0,
            },
            email,
            tok,
        ),
        ("WORKFLOW_CREATE", "WORKFLOW", wf, {"name": "Flow"}, email, tok),
        (
            "MEMBER_SET",
            "MEMBER",
            bob,
            {"email": "bob@example.com", "role": "EDITOR", "previousRole": None},
            email,
            tok,
        ),
        # The factory's own setup, through the services without a token (as the CLI does)
        (
            "TOKEN_CREATE",
            "API_TOKEN",
            tok,
            {"name": "test", "expiresAt": None},
            email,
            None,
        ),
        ("WORKSPACE_CREATE", "WORKSPACE", ws, {"name": "Acme"}, email, None),
    ]
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert times == sorted(times, reverse=True)
    # Names only: the secret's value is nowhere in the trail
    assert SECRET_VALUE not in str(await factory.rows("SELECT * FROM audit_events"))


async def test_a_deleted_workflow_stays_findable_by_its_id(factory: Factory) -> None:
    owner = await factory.owner()
    wf = await create_workflow(factory, owner, V1)
    await gql(
        factory,
        owner,
        """mutation($id: ID!) { workflowDelete(id: $id) { userErrors { code } } }""",
        id=wf,
    )
    assert await factory.scalar("SELECT count(*) FROM workflows") == 0

    events = await trail(factory, owner, filter={"objectId": wf})

    assert [e["action"] for e in events] == [
        "WORKFLOW_DELETE",
        "WORKFLOW_PUBLISH",
        "WORKFLOW_CREATE",
    ]
    assert {e["objectId"] for e in events} == {wf}


async def test_a_refused_change_records_nothing(factory: Factory) -> None:
    owner = await factory.owner()
    wf = await create_workflow(factory, owner, V1)
    before = await factory.snapshot()

    stale = await factory.gql(
        """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }""",
        {"i": {"workflowId": wf, "graph": V2, "baseVersion": 7}},
        token=owner.token,
    )
    taken = await factory.gql(
        """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) { userErrors { code } } }""",
        {"i": {"workspaceId": owner.workspace_id, "name": "FLOW"}},
        token=owner.token,
    )

    assert stale["data"]["workflowSave"]["userErrors"] == [{"code": "VERSION_CONFLICT"}]
    assert taken["data"]["workflowCreate"]["userErrors"] == [{"code": "NOT_UNIQUE"}]
    assert await factory.snapshot() == before


async def test_a_new_workspace_and_a_token_are_recorded_in_each_workspace(factory: Factory) -> None:
    owner = await factory.owner()
    created = await gql(
        factory,
        owner,
        """mutation($i: WorkspaceCreateInput!) { workspaceCreate(input: $i) {
             workspace { id } userErrors { code } } }""",
        i={"name": "Second"},
    )
    second = Account(owner.user, owner.token, owner.workspace, Role.OWNER)
    second_id = created["workspace"]["id"]
    new_token = (
        await gql(
            factory,
            owner,
            """mutation($i: ApiTokenCreateInput!) { apiTokenCreate(input: $i) {
                 apiToken { id } userErrors { code } } }""",
            i={"name": "Both"},
        )
    )["apiToken"]["id"]

    body = await factory.gql(AUDIT, {"ws": second_id, "first": 10}, token=owner.token)
    in_second = [e["node"] for e in body["data"]["workspace"]["auditEvents"]["edges"]]
    in_first = await trail(factory, second)

    assert [(e["action"], e["objectId"]) for e in in_second] == [
        ("TOKEN_CREATE", new_token),
        ("WORKSPACE_CREATE", second_id),
    ]
    assert [(e["action"], e["objectId"]) for e in in_first][:1] == [("TOKEN_CREATE", new_token)]


# --- reading it -------------------------------------------------------------------------------


async def test_filters_and_pages(factory: Factory) -> None:
    owner = await factory.owner()
    editor = await factory.member(owner, Role.EDITOR)
    first_wf = await create_workflow(factory, owner, V1, "One", published=False)
    second_wf = await create_workflow(factory, editor, V1, "Two", published=False)
    assert (await publish(factory, editor, first_wf, 1))["userErrors"] == []
    everything = await trail(factory, owner)
    middle = datetime.fromisoformat(everything[2]["at"])

    by_action = await trail(factory, owner, filter={"action": "WORKFLOW_CREATE"})
    by_actor = await trail(factory, owner, filter={"actorId": gid("User", editor.user.id)})
    by_object = await trail(factory, owner, filter={"objectId": first_wf})
    by_time = await trail(
        factory,
        owner,
        filter={"from": middle.isoformat(), "to": (middle + timedelta(seconds=1)).isoformat()},
    )
    combined = await trail(
        factory,
        owner,
        filter={"action": "WORKFLOW_PUBLISH", "actorId": gid("User", owner.user.id)},
    )

    assert [(e["action"], e["objectId"]) for e in by_action] == [
        ("WORKFLOW_CREATE", second_wf),
        ("WORKFLOW_CREATE", first_wf),
    ]
    assert [(e["action"], e["objectId"]) for e in by_actor] == [
        ("WORKFLOW_PUBLISH", first_wf),
        ("WORKFLOW_CREATE", second_wf),
        ("TOKEN_CREATE", await token_id(factory, editor)),
    ]
    assert [e["action"] for e in by_object] == ["WORKFLOW_PUBLISH", "WORKFLOW_CREATE"]
    assert everything[2] in by_time
    assert combined == []

    # Pages of two walk the whole trail, newest first, without gap or repeat
    seen: list[str] = []
    after = None
    while True:
        body = await factory.gql(
            AUDIT, {"ws": owner.workspace_id, "first": 2, "after": after}, token=owner.token
        )
        page = body["data"]["workspace"]["auditEvents"]
        assert page["totalCount"] == len(everything)
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [e["id"] for e in everything]


@pytest.mark.parametrize(
    ("variables", "reason", "field"),
    [
        ({"first": 101}, "INVALID", ["first"]),
        ({"first": -1}, "INVALID", ["first"]),
        ({"after": "garbage"}, "INVALID", ["after"]),
        ({"after": "x" * 10_000}, "INVALID", ["after"]),
        ({"filter": {"from": "2026-01-01T00:00:00"}}, "INVALID", ["filter", "from"]),
        (
            {"filter": {"from": "2026-01-02T00:00:00+00:00", "to": "2026-01-01T00:00:00+00:00"}},
            "INVALID",
            ["filter", "to"],
        ),
        ({"filter": {"objectId": "not-an-id"}}, "INVALID", ["filter", "objectId"]),
        ({"filter": {"objectId": "O" * 100_000}}, "INVALID", ["filter", "objectId"]),
        ({"filter": {"actorId": gid("Workflow", uuid.uuid4())}}, "INVALID", ["filter", "actorId"]),
        ({"filter": {"actorId": gid("User", "not-a-uuid")}}, "INVALID", ["filter", "actorId"]),
    ],
)
async def test_wrong_and_hostile_arguments_are_refused(
    factory: Factory, variables: dict[str, Any], reason: str, field: list[str]
) -> None:
    owner = await factory.owner()
    body = await factory.gql(
        AUDIT, {"ws": owner.workspace_id, "first": 10, **variables}, token=owner.token
    )
    assert body["data"] == {"workspace": None}
    (error,) = body["errors"]
    assert (error["extensions"]["code"], error["extensions"]["reason"]) == (
        "BAD_USER_INPUT",
        reason,
    )
    assert error["extensions"]["field"] == field


async def test_an_unknown_or_foreign_object_id_matches_nothing(factory: Factory) -> None:
    owner = await factory.owner()
    stranger = await factory.owner("Elsewhere")
    theirs = await create_workflow(factory, stranger, V1)
    for object_id in (theirs, gid("Workflow", uuid.uuid4()), gid("Secret", "NOPE")):
        assert await trail(factory, owner, filter={"objectId": object_id}) == []


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.EDITOR])
async def test_only_owners_read_the_trail(factory: Factory, role: Role) -> None:
    owner = await factory.owner()
    caller = await factory.member(owner, role)
    body = await factory.gql(AUDIT, {"ws": owner.workspace_id, "first": 10}, token=caller.token)
    assert body["data"] == {"workspace": None}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]


async def test_another_workspaces_trail_reads_as_not_found(factory: Factory) -> None:
    owner = await factory.owner()
    stranger = await factory.owner("Elsewhere")
    body = await factory.gql(AUDIT, {"ws": owner.workspace_id, "first": 10}, token=stranger.token)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]


async def test_an_event_at_a_given_moment_is_found_between_from_and_to(factory: Factory) -> None:
    owner = await factory.owner()
    now = datetime.now(UTC)
    assert await trail(factory, owner, filter={"to": (now - timedelta(days=1)).isoformat()}) == []
    assert (
        len(await trail(factory, owner, filter={"from": (now - timedelta(days=1)).isoformat()}))
        == 2
    )
