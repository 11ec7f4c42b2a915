"""A workflow's webhook through GraphQL: reading it back, racing updates, roles, tenancy."""

from __future__ import annotations

import asyncio

import pytest

from app.models import Role
from tests.factories import Factory, gid
from tests.runs import create_workflow
from tests.webhooks.helpers import ECHO, GREETING, READ, UPDATE, enable, hooked_workflow, update


async def test_the_webhook_reads_back_without_its_secret(factory: Factory) -> None:
    owner, workflow_id, hook = await hooked_workflow(
        factory, GREETING, requireSignature=True, waitForResult=True
    )
    assert hook["signingSecret"].startswith("whsec_")
    body = await factory.gql(READ, {"id": workflow_id}, token=owner.token)
    assert body["data"]["workflow"]["webhook"] == {**hook, "signingSecret": None}
    # An update that leaves signing on keeps the secret and does not show it again
    again = await enable(factory, owner, workflow_id)
    assert again == {**hook, "signingSecret": None}
    stored = await factory.scalar("SELECT signing_ciphertext FROM webhooks")
    assert hook["signingSecret"].encode() not in bytes(stored)


async def test_two_first_updates_racing_make_one_webhook_and_no_error(
    factory: Factory,
) -> None:
    # Given a workflow without a webhook
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, ECHO)
    # When several first updates race
    bodies = await asyncio.gather(*(update(factory, owner, workflow_id) for _ in range(6)))
    # Then every one succeeds, and they all describe the one webhook that exists
    assert [b.get("errors") for b in bodies] == [None] * 6, bodies
    urls = {b["data"]["workflowWebhookUpdate"]["webhook"]["url"] for b in bodies}
    assert await factory.scalar("SELECT count(*) FROM webhooks") == 1
    token = await factory.scalar("SELECT token FROM webhooks")
    assert urls == {f"http://flowdeck.test/hooks/{token}"}


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER])
async def test_roles(factory: Factory, role: Role) -> None:
    owner, workflow_id, hook = await hooked_workflow(factory, GREETING)
    other = await factory.member(owner, role)
    before = await factory.snapshot()
    body = await factory.gql(
        UPDATE, {"i": {"workflowId": workflow_id, "enabled": False}}, token=other.token
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await factory.snapshot() == before
    seen = (await factory.gql(READ, {"id": workflow_id}, token=other.token))["data"]
    # A viewer cannot run the workflow, so it does not get the URL that would
    expected_url = None if role is Role.VIEWER else hook["url"]
    assert seen["workflow"]["webhook"]["url"] == expected_url


@pytest.mark.parametrize("role", [Role.EDITOR, Role.OWNER])
async def test_editors_and_owners_configure_but_never_read_the_secret(
    factory: Factory, role: Role
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, ECHO)
    account = owner if role is Role.OWNER else await factory.member(owner, role)
    made = await enable(factory, account, workflow_id, requireSignature=True, waitForResult=True)
    assert made["signingSecret"].startswith("whsec_")
    assert made["waitForResult"] is True
    for reader_role in (Role.VIEWER, Role.MEMBER, Role.EDITOR, Role.OWNER):
        reader = owner if reader_role is Role.OWNER else await factory.member(owner, reader_role)
        read = await factory.gql(READ, {"id": workflow_id}, token=reader.token)
        assert read["data"]["workflow"]["webhook"]["signingSecret"] is None, reader_role


async def test_another_workspace_cannot_see_or_change_it(factory: Factory) -> None:
    _owner, workflow_id, _hook = await hooked_workflow(factory, GREETING)
    stranger = await factory.owner("Globex")
    before = await factory.snapshot()
    body = await factory.gql(
        UPDATE,
        {"i": {"workflowId": workflow_id, "enabled": False, "rotateUrl": True}},
        token=stranger.token,
    )
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    read = await factory.gql(READ, {"id": workflow_id}, token=stranger.token)
    assert read["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    "kind", ["workspace id", "run id", "version id", "garbage", "empty", "unknown workflow"]
)
async def test_ids_of_the_wrong_kind_read_as_not_found_and_write_nothing(
    factory: Factory, kind: str
) -> None:
    owner, _workflow_id, _hook = await hooked_workflow(factory, ECHO)
    raw_uuid = await factory.scalar("SELECT id::text FROM workflows")
    ids = {
        "workspace id": owner.workspace_id,
        "run id": gid("Run", raw_uuid),
        "version id": gid("WorkflowVersion", raw_uuid),
        "garbage": "not an id",
        "empty": "",
        "unknown workflow": gid("Workflow", "00000000-0000-0000-0000-000000000000"),
    }
    before = await factory.snapshot()
    body = await update(factory, owner, ids[kind], rotateUrl=True)
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "NOT_FOUND", body
    assert await factory.snapshot() == before


async def test_without_a_token_is_unauthenticated_and_writes_nothing(factory: Factory) -> None:
    _owner, workflow_id, _hook = await hooked_workflow(factory, ECHO)
    before = await factory.snapshot()
    body = await factory.gql(UPDATE, {"i": {"workflowId": workflow_id, "enabled": False}})
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await factory.snapshot() == before
