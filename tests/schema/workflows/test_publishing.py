"""Drafts and published versions: saving never changes what schedules and webhooks run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from app.auth.principal import Principal
from app.models import Role
from app.services.schedules import update_schedule
from app.worker.schedules import tick
from schema.ids import decode_id
from tests.factories import Account, Factory, gid
from tests.runs import PUBLISH, create_workflow, edge, execute, node, publish

GRAPH = {
    "nodes": [node("start", "trigger"), node("out", "output", value="{{ input }}")],
    "edges": [edge("start", "out")],
}
# A work-in-progress save: the dangling node is a warning, so it is saved but cannot run.
HALF_DRAWN = {
    "nodes": [*GRAPH["nodes"], node("loose", "text.format", template="x")],
    "edges": GRAPH["edges"],
}
READ = """query($id: ID!) { workflow(id: $id) {
  publishedVersion { number isPublished publishedAt publishedBy { id name } }
  currentVersion { number isPublished publishedAt publishedBy { id } }
  versions(first: 10) { edges { node { number isPublished } } } } }"""
SAVE = """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) {
  workflow { currentVersion { number diagnostics { code } } } userErrors { field code message } } }"""
UNPUBLISH = """mutation($id: ID!) { workflowUnpublish(id: $id) {
  workflow { id publishedVersion { number } } userErrors { field code message } } }"""
HOOK = """mutation($i: WorkflowWebhookUpdateInput!) { workflowWebhookUpdate(input: $i) {
  webhook { url } userErrors { code } } }"""


async def save(
    factory: Factory, account: Account, workflow_id: str, graph: dict, base: int
) -> dict:
    body = await factory.gql(
        SAVE,
        {"i": {"workflowId": workflow_id, "graph": graph, "baseVersion": base}},
        token=account.token,
    )
    assert "errors" not in body, body
    return body["data"]["workflowSave"]


async def read(factory: Factory, account: Account, workflow_id: str) -> dict:
    body = await factory.gql(READ, {"id": workflow_id}, token=account.token)
    assert "errors" not in body, body
    return body["data"]["workflow"]


async def webhook_path(factory: Factory, account: Account, workflow_id: str) -> str:
    body = await factory.gql(
        HOOK, {"i": {"workflowId": workflow_id, "enabled": True}}, token=account.token
    )
    return body["data"]["workflowWebhookUpdate"]["webhook"]["url"].removeprefix(
        "http://flowdeck.test"
    )


async def audit_actions(factory: Factory, workflow_id: str) -> list[str]:
    rows = await factory.rows(
        "SELECT action FROM audit_events WHERE object_id = :id ORDER BY at, action",
        id=str(decode_id("Workflow", workflow_id)),
    )
    return [row["action"] for row in rows]


# --- the draft/published cycle -------------------------------------------------------------


async def test_a_new_workflow_is_a_draft_until_a_version_is_published(factory: Factory) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH, published=False)
    assert await read(factory, owner, workflow_id) == {
        "publishedVersion": None,
        "currentVersion": {
            "number": 1,
            "isPublished": False,
            "publishedAt": None,
            "publishedBy": None,
        },
        "versions": {"edges": [{"node": {"number": 1, "isPublished": False}}]},
    }

    before = datetime.now(UTC)
    payload = await publish(factory, owner, workflow_id, 1, baseVersion=0)

    assert payload == {
        "workflow": {"id": workflow_id, "publishedVersion": {"number": 1}},
        "userErrors": [],
    }
    shown = await read(factory, owner, workflow_id)
    published = shown["publishedVersion"]
    assert (published["number"], published["isPublished"]) == (1, True)
    assert before <= datetime.fromisoformat(published["publishedAt"]) <= datetime.now(UTC)
    assert published["publishedBy"] == {"id": gid("User", owner.user.id), "name": owner.user.name}
    assert shown["currentVersion"]["isPublished"] is True
    assert await audit_actions(factory, workflow_id) == ["WORKFLOW_CREATE", "WORKFLOW_PUBLISH"]


async def test_saving_changes_what_the_editor_runs_but_not_what_the_webhook_runs(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # Given version 1 published with its webhook on, then a half-drawn save (version 2)
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH)
    path = await webhook_path(factory, owner, workflow_id)
    saved = await save(factory, owner, workflow_id, HALF_DRAWN, 1)
    assert saved["workflow"]["currentVersion"] == {
        "number": 2,
        "diagnostics": [{"code": "UNREACHABLE_NODE"}],
    }

    # When a delivery comes: it runs version 1, not the draft
    response = await client.post(path, json={"n": 1})
    assert response.status_code == 202
    run_id = decode_id("Run", response.json()["runId"])
    assert await factory.scalar("SELECT version_number FROM runs WHERE id = :id", id=run_id) == 1

    # The editor runs the newest version (refused while it cannot run), or the one it names
    refused = await execute(factory, owner, workflow_id, {"n": 2})
    assert [e["code"] for e in refused["userErrors"]] == ["GRAPH_INVALID"]
    tried = await execute(factory, owner, workflow_id, {"n": 3}, version=1)
    assert tried["run"]["version"] == {"number": 1}
    await save(factory, owner, workflow_id, GRAPH, 2)
    newest = await execute(factory, owner, workflow_id, {"n": 4})
    assert newest["run"]["version"] == {"number": 3}
    again = await client.post(path, json={"n": 5})
    assert (
        await factory.scalar(
            "SELECT version_number FROM runs WHERE id = :id",
            id=decode_id("Run", again.json()["runId"]),
        )
        == 1
    )

    # And once version 3 is published, deliveries run it
    assert (await publish(factory, owner, workflow_id, 3, baseVersion=1))["userErrors"] == []
    third = await client.post(path, json={"n": 6})
    assert (
        await factory.scalar(
            "SELECT version_number FROM runs WHERE id = :id",
            id=decode_id("Run", third.json()["runId"]),
        )
        == 3
    )


async def test_an_unpublished_workflows_webhook_answers_409_and_writes_nothing(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH, published=False)
    path = await webhook_path(factory, owner, workflow_id)
    before = await factory.snapshot()

    response = await client.post(path, json={"n": 1}, headers={"x-flowdeck-delivery": "evt_1"})

    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "WORKFLOW_NOT_PUBLISHED",
            "message": "No version of this workflow is published; publish one to let its webhook run it.",
        }
    }
    assert await factory.snapshot() == before


async def test_an_unpublished_schedule_skips_its_fire_saying_why(
    factory: Factory, app: Starlette
) -> None:
    # Given a schedule on a workflow that was published, then unpublished
    runtime = app.state.runtime
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH)
    unpublished = await factory.gql(UNPUBLISH, {"id": workflow_id}, token=owner.token)
    assert unpublished["data"]["workflowUnpublish"] == {
        "workflow": {"id": workflow_id, "publishedVersion": None},
        "userErrors": [],
    }
    async with runtime.sessions() as session:
        await update_schedule(
            session,
            principal=Principal(user=owner.user, roles={owner.workspace.id: Role.OWNER}),
            workflow_id=decode_id("Workflow", workflow_id),
            cron="0 9 * * *",
            timezone="UTC",
            enabled=True,
            now=datetime(2026, 6, 1, tzinfo=UTC),
        )
        await session.commit()

    # When it is due: the fire is SKIPPED with the reason, no run, not an overlap skip
    skipped = await tick(runtime, now=datetime(2026, 6, 1, 9, tzinfo=UTC))
    # Published again: the next fire starts a run of the published version
    assert (await publish(factory, owner, workflow_id, 1, baseVersion=0))["userErrors"] == []
    started = await tick(runtime, now=datetime(2026, 6, 2, 9, tzinfo=UTC))

    reason = "WORKFLOW_NOT_PUBLISHED: no version of this workflow is published."
    assert [(f.outcome.value, f.run_id, f.error) for f in skipped.fires] == [
        ("SKIPPED", None, reason)
    ]
    assert [(f.outcome.value, f.error) for f in started.fires] == [("STARTED", None)]
    assert await factory.rows(
        "SELECT f.outcome, f.error, r.version_number FROM schedule_fires f "
        "LEFT JOIN runs r ON r.id = f.run_id ORDER BY f.fire_at"
    ) == [
        {"outcome": "SKIPPED", "error": reason, "version_number": None},
        {"outcome": "STARTED", "error": None, "version_number": 1},
    ]
    assert await factory.scalar("SELECT schedule_skipped_count FROM workflows") == 0
    shown = await factory.gql(
        """query($id: ID!) { workflow(id: $id) { schedule { recentFires { outcome error } } } }""",
        {"id": workflow_id},
        token=owner.token,
    )
    assert shown["data"]["workflow"]["schedule"]["recentFires"] == [
        {"outcome": "STARTED", "error": None},
        {"outcome": "SKIPPED", "error": reason},
    ]


# --- what cannot be published ---------------------------------------------------------------


async def test_a_version_with_warnings_is_refused_naming_them(factory: Factory) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH)
    await save(factory, owner, workflow_id, HALF_DRAWN, 1)
    before = await factory.snapshot()

    payload = await publish(factory, owner, workflow_id, 2, baseVersion=1)

    assert payload == {
        "workflow": None,
        "userErrors": [
            {
                "field": ["input", "version"],
                "code": "GRAPH_INVALID",
                "message": 'Version 2 cannot be published: Node "loose" cannot be reached from '
                "any trigger.",
            }
        ],
    }
    assert await factory.snapshot() == before
    assert (await read(factory, owner, workflow_id))["publishedVersion"]["number"] == 1


@pytest.mark.parametrize(
    ("version", "base", "error"),
    [
        (2, 1, (["input", "version"], "NOT_FOUND", "Version 2 does not exist.")),
        (0, 1, (["input", "version"], "NOT_FOUND", "Version 0 does not exist.")),
        (-5, 1, (["input", "version"], "NOT_FOUND", "Version -5 does not exist.")),
        (2**31 - 1, 1, (["input", "version"], "NOT_FOUND", "Version 2147483647 does not exist.")),
        (
            1,
            -1,
            (
                ["input", "baseVersion"],
                "INVALID",
                "baseVersion is the published version you saw (0 when none was).",
            ),
        ),
        (
            1,
            0,
            (
                ["input", "baseVersion"],
                "VERSION_CONFLICT",
                "Since you loaded the workflow, version 1 is published (you expected no version "
                "is published); reload and try again.",
            ),
        ),
        (
            1,
            7,
            (
                ["input", "baseVersion"],
                "VERSION_CONFLICT",
                "Since you loaded the workflow, version 1 is published (you expected version 7 "
                "is published); reload and try again.",
            ),
        ),
    ],
)
async def test_wrong_versions_are_user_errors_and_write_nothing(
    factory: Factory, version: int, base: int, error: tuple[list[str], str, str]
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH)
    before = await factory.snapshot()

    payload = await publish(factory, owner, workflow_id, version, baseVersion=base)

    field, code, message = error
    assert payload == {
        "workflow": None,
        "userErrors": [{"field": field, "code": code, "message": message}],
    }
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"workflowId": "x", "version": 2**31},
            "Variable '$i' has invalid value at .version: Int cannot represent non 32-bit signed "
            "integer value: 2147483648",
        ),
        (
            {"workflowId": "x", "version": "1"},
            "Variable '$i' has invalid value at .version: Int cannot represent non-integer value: "
            "'1'",
        ),
        (
            {"workflowId": "x"},
            "Variable '$i' has invalid value: Expected value of type 'WorkflowPublishInput' to "
            "include required field 'version', found: {'workflowId': 'x'}.",
        ),
        (
            {"workflowId": None, "version": 1},
            "Variable '$i' has invalid value at .workflowId: Expected value of non-null type 'ID!' "
            "not to be None.",
        ),
        (
            {"workflowId": "x", "version": 1, "extra": 1},
            "Variable '$i' has invalid value: Expected value of type 'WorkflowPublishInput' not to "
            "include unknown field 'extra', found: {'workflowId': 'x', 'version': 1, 'extra': 1}.",
        ),
    ],
)
async def test_malformed_input_is_refused_before_anything_runs(
    factory: Factory, variables: dict, message: str
) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()
    body = await factory.gql(PUBLISH, {"i": variables}, token=owner.token)
    assert body["data"] is None
    assert [e["message"] for e in body["errors"]] == [message]
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    "workflow_id",
    ["", "garbage", "W" * 100_000, gid("Run", "00000000-0000-0000-0000-000000000000"), "\x00"],
)
async def test_hostile_and_oversized_ids_read_as_not_found(
    factory: Factory, workflow_id: str
) -> None:
    owner = await factory.owner()
    await create_workflow(factory, owner, GRAPH)
    before = await factory.snapshot()
    for query, variables in (
        (PUBLISH, {"i": {"workflowId": workflow_id, "version": 1}}),
        (UNPUBLISH, {"id": workflow_id}),
    ):
        body = await factory.gql(query, variables, token=owner.token)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    assert await factory.snapshot() == before


async def test_unpublishing_twice_is_a_user_error(factory: Factory) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH)
    first = await factory.gql(UNPUBLISH, {"id": workflow_id}, token=owner.token)
    assert first["data"]["workflowUnpublish"]["userErrors"] == []
    before = await factory.snapshot()

    second = await factory.gql(UNPUBLISH, {"id": workflow_id}, token=owner.token)

    assert second["data"]["workflowUnpublish"] == {
        "workflow": None,
        "userErrors": [
            {
                "field": ["id"],
                "code": "WORKFLOW_NOT_PUBLISHED",
                "message": "No version of this workflow is published.",
            }
        ],
    }
    assert await factory.snapshot() == before
    assert await audit_actions(factory, workflow_id) == [
        "WORKFLOW_CREATE",
        "WORKFLOW_PUBLISH",
        "WORKFLOW_UNPUBLISH",
    ]


# --- roles and tenancy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.VIEWER, False), (Role.MEMBER, False), (Role.EDITOR, True), (Role.OWNER, True)],
)
async def test_editors_and_owners_publish_and_unpublish(
    factory: Factory, role: Role, allowed: bool
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH, published=False)
    caller = await factory.member(owner, role) if role is not Role.OWNER else owner
    before = await factory.snapshot()

    published = await factory.gql(
        PUBLISH, {"i": {"workflowId": workflow_id, "version": 1}}, token=caller.token
    )

    if not allowed:
        assert [e["extensions"]["code"] for e in published["errors"]] == ["FORBIDDEN"]
        assert await factory.snapshot() == before
        assert (await publish(factory, owner, workflow_id, 1))["userErrors"] == []
        before = await factory.snapshot()
        unpublished = await factory.gql(UNPUBLISH, {"id": workflow_id}, token=caller.token)
        assert [e["extensions"]["code"] for e in unpublished["errors"]] == ["FORBIDDEN"]
        assert await factory.snapshot() == before
        return
    assert published["data"]["workflowPublish"]["userErrors"] == []
    unpublished = await factory.gql(UNPUBLISH, {"id": workflow_id}, token=caller.token)
    assert unpublished["data"]["workflowUnpublish"]["userErrors"] == []
    assert await factory.rows(
        "SELECT action, actor_user_id FROM audit_events WHERE action LIKE 'WORKFLOW_%PUBLISH' ORDER BY at, action"
    ) == [
        {"action": "WORKFLOW_PUBLISH", "actor_user_id": caller.user.id},
        {"action": "WORKFLOW_UNPUBLISH", "actor_user_id": caller.user.id},
    ]


async def test_another_workspaces_workflow_reads_as_not_found(factory: Factory) -> None:
    owner = await factory.owner()
    stranger = await factory.owner("Elsewhere")
    workflow_id = await create_workflow(factory, owner, GRAPH, published=False)
    before = await factory.snapshot()
    for query, variables in (
        (PUBLISH, {"i": {"workflowId": workflow_id, "version": 1}}),
        (UNPUBLISH, {"id": workflow_id}),
        (READ, {"id": workflow_id}),
    ):
        body = await factory.gql(query, variables, token=stranger.token)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
        assert body["errors"][0]["message"] == "Workflow not found."
    assert await factory.snapshot() == before


# --- races ------------------------------------------------------------------------------------


async def test_two_publishes_from_the_same_base_make_exactly_one_winner(
    factory: Factory, database_url: str
) -> None:
    # Given versions 2 and 3, version 1 published, and the workflow row held by another
    # transaction so that both publishes are in flight at once
    owner = await factory.owner()
    editor = await factory.member(owner, Role.EDITOR)
    workflow_id = await create_workflow(factory, owner, GRAPH)
    await save(factory, owner, workflow_id, GRAPH, 1)
    await save(factory, owner, workflow_id, GRAPH, 2)
    key = decode_id("Workflow", workflow_id)
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        await holder.execute("SELECT id FROM workflows WHERE id = %s FOR UPDATE", (key,))
        calls = [
            asyncio.create_task(
                factory.gql(
                    PUBLISH,
                    {"i": {"workflowId": workflow_id, "version": version, "baseVersion": 1}},
                    token=account.token,
                )
            )
            for account, version in ((owner, 2), (editor, 3))
        ]
        # Both wait on the row lock (seen by PostgreSQL), then the holder lets go
        for _ in range(200):
            waiting = await factory.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'UPDATE workflows SET published_version%'"
            )
            if waiting == 2:
                break
            await asyncio.sleep(0.02)
        assert waiting == 2
        await holder.rollback()
        answers = [(await call)["data"]["workflowPublish"] for call in calls]

    winners = [a for a in answers if a["userErrors"] == []]
    losers = [a for a in answers if a["userErrors"] != []]
    assert (len(winners), len(losers)) == (1, 1)
    won = winners[0]["workflow"]["publishedVersion"]["number"]
    assert [e["code"] for e in losers[0]["userErrors"]] == ["VERSION_CONFLICT"]
    assert losers[0]["userErrors"][0]["message"] == (
        f"Since you loaded the workflow, version {won} is published (you expected version 1 "
        "is published); reload and try again."
    )
    assert (await read(factory, owner, workflow_id))["publishedVersion"]["number"] == won
    assert await audit_actions(factory, workflow_id) == [
        "WORKFLOW_CREATE",
        "WORKFLOW_PUBLISH",
        "WORKFLOW_SAVE",
        "WORKFLOW_SAVE",
        "WORKFLOW_PUBLISH",
    ]
