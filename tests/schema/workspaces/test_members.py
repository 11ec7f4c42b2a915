"""memberRemove (the last owner stays) and workspaceUpdate (name, run retention)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from app.models import Role
from tests.factories import Account, Factory, gid

REMOVE = """mutation($i: MemberRemoveInput!) { memberRemove(input: $i) {
  removedUserId userErrors { field code message } } }"""
UPDATE = """mutation($i: WorkspaceUpdateInput!) { workspaceUpdate(input: $i) {
  workspace { id name runRetentionDays } userErrors { field code message } } }"""
WORKSPACE = """query($id: ID!) { workspace(id: $id) { name runRetentionDays } }"""


async def remove(factory: Factory, caller: Account, member: Account) -> dict[str, Any]:
    return await factory.gql(
        REMOVE,
        {"i": {"workspaceId": caller.workspace_id, "userId": gid("User", member.user.id)}},
        token=caller.token,
    )


async def test_a_removed_member_loses_access_and_the_removal_is_recorded(factory: Factory) -> None:
    owner = await factory.owner()
    editor = await factory.member(owner, Role.EDITOR)
    assert "errors" not in await factory.gql(
        WORKSPACE, {"id": owner.workspace_id}, token=editor.token
    )

    body = await remove(factory, owner, editor)

    assert body["data"]["memberRemove"] == {
        "removedUserId": gid("User", editor.user.id),
        "userErrors": [],
    }
    after = await factory.gql(WORKSPACE, {"id": owner.workspace_id}, token=editor.token)
    assert [e["extensions"]["code"] for e in after["errors"]] == ["NOT_FOUND"]
    assert await factory.rows(
        "SELECT action, object_id, summary, actor_user_id FROM audit_events WHERE action = 'MEMBER_REMOVE'"
    ) == [
        {
            "action": "MEMBER_REMOVE",
            "object_id": str(editor.user.id),
            "summary": {"email": editor.user.email, "role": "EDITOR"},
            "actor_user_id": owner.user.id,
        }
    ]


async def test_the_last_owner_cannot_be_removed(factory: Factory) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()

    body = await remove(factory, owner, owner)

    assert body["data"]["memberRemove"] == {
        "removedUserId": None,
        "userErrors": [
            {
                "field": ["input", "userId"],
                "code": "LAST_OWNER",
                "message": "A workspace keeps at least one owner; make someone else owner first.",
            }
        ],
    }
    assert await factory.snapshot() == before


async def test_an_owner_may_leave_when_another_owner_stays(factory: Factory) -> None:
    owner = await factory.owner()
    second = await factory.member(owner, Role.OWNER)

    body = await remove(factory, second, second)

    assert body["data"]["memberRemove"]["userErrors"] == []
    assert await factory.scalar("SELECT count(*) FROM memberships WHERE role = 'OWNER'") == 1


async def test_two_owners_removing_each_other_at_once_leave_one_owner(
    factory: Factory, database_url: str
) -> None:
    # Given two owners, and the workspace row held so both removals are in flight at once
    owner = await factory.owner()
    second = await factory.member(owner, Role.OWNER)
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        await holder.execute(
            "SELECT id FROM workspaces WHERE id = %s FOR UPDATE", (owner.workspace.id,)
        )
        calls = [
            asyncio.create_task(remove(factory, owner, second)),
            asyncio.create_task(remove(factory, second, owner)),
        ]
        for _ in range(200):
            waiting = await factory.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'SELECT workspaces.id %FOR UPDATE'"
            )
            if waiting == 2:
                break
            await asyncio.sleep(0.02)
        assert waiting == 2
        await holder.rollback()
        answers = [(await call)["data"]["memberRemove"] for call in calls]

    # Then one is removed, and the other is refused: it would remove the last owner
    assert sorted(len(a["userErrors"]) for a in answers) == [0, 1]
    (refused,) = [a for a in answers if a["userErrors"]]
    assert [e["code"] for e in refused["userErrors"]] == ["LAST_OWNER"]
    assert await factory.scalar("SELECT count(*) FROM memberships WHERE role = 'OWNER'") == 1
    assert (
        await factory.scalar("SELECT count(*) FROM audit_events WHERE action = 'MEMBER_REMOVE'")
        == 1
    )


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.VIEWER, False), (Role.MEMBER, False), (Role.EDITOR, False), (Role.OWNER, True)],
)
async def test_only_owners_remove_members_and_change_the_workspace(
    factory: Factory, role: Role, allowed: bool
) -> None:
    owner = await factory.owner()
    caller = owner if role is Role.OWNER else await factory.member(owner, role)
    target = await factory.member(owner, Role.VIEWER)
    before = await factory.snapshot()

    removed = await remove(factory, caller, target)
    updated = await factory.gql(
        UPDATE,
        {"i": {"workspaceId": owner.workspace_id, "runRetentionDays": 7}},
        token=caller.token,
    )

    if allowed:
        assert removed["data"]["memberRemove"]["userErrors"] == []
        assert updated["data"]["workspaceUpdate"]["workspace"]["runRetentionDays"] == 7
        return
    for body in (removed, updated):
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    "user_id",
    [
        "garbage",
        "U" * 100_000,
        "\u0000",
        gid("Workflow", uuid.uuid4()),
        gid("User", uuid.uuid4()),
        gid("User", "not-a-uuid"),
    ],
)
async def test_unknown_and_hostile_member_ids_read_as_not_found(
    factory: Factory, user_id: str
) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()
    body = await factory.gql(
        REMOVE, {"i": {"workspaceId": owner.workspace_id, "userId": user_id}}, token=owner.token
    )
    assert [(e["extensions"]["code"], e["message"]) for e in body["errors"]] == [
        ("NOT_FOUND", "Member not found.")
    ]
    assert await factory.snapshot() == before


async def test_another_workspaces_member_and_workspace_read_as_not_found(factory: Factory) -> None:
    owner = await factory.owner()
    stranger = await factory.owner("Elsewhere")
    their_member = await factory.member(stranger, Role.EDITOR)
    before = await factory.snapshot()

    their_person = await remove(factory, owner, their_member)
    their_workspace = await factory.gql(
        REMOVE,
        {"i": {"workspaceId": stranger.workspace_id, "userId": gid("User", their_member.user.id)}},
        token=owner.token,
    )
    their_update = await factory.gql(
        UPDATE, {"i": {"workspaceId": stranger.workspace_id, "name": "Mine"}}, token=owner.token
    )

    assert [e["message"] for e in their_person["errors"]] == ["Member not found."]
    assert [e["message"] for e in their_workspace["errors"]] == ["Workspace not found."]
    assert [e["message"] for e in their_update["errors"]] == ["Workspace not found."]
    assert await factory.snapshot() == before


async def test_retention_and_name_change_and_are_recorded(factory: Factory) -> None:
    owner = await factory.owner()
    shown = await factory.gql(WORKSPACE, {"id": owner.workspace_id}, token=owner.token)
    assert shown["data"]["workspace"] == {"name": "Acme", "runRetentionDays": 90}

    body = await factory.gql(
        UPDATE,
        {"i": {"workspaceId": owner.workspace_id, "name": "  Acme Ops ", "runRetentionDays": 14}},
        token=owner.token,
    )

    assert body["data"]["workspaceUpdate"] == {
        "workspace": {"id": owner.workspace_id, "name": "Acme Ops", "runRetentionDays": 14},
        "userErrors": [],
    }
    assert await factory.rows(
        "SELECT summary FROM audit_events WHERE action = 'WORKSPACE_UPDATE'"
    ) == [
        {
            "summary": {
                "name": {"from": "Acme", "to": "Acme Ops"},
                "runRetentionDays": {"from": 90, "to": 14},
            }
        }
    ]


@pytest.mark.parametrize(
    ("given", "errors"),
    [
        ({}, [(["input"], "INVALID", "Nothing to change.")]),
        (
            {"runRetentionDays": 0},
            [(["input", "runRetentionDays"], "INVALID", "Keep runs 1 to 3650 days.")],
        ),
        (
            {"runRetentionDays": -1},
            [(["input", "runRetentionDays"], "INVALID", "Keep runs 1 to 3650 days.")],
        ),
        (
            {"runRetentionDays": 3651},
            [(["input", "runRetentionDays"], "INVALID", "Keep runs 1 to 3650 days.")],
        ),
        (
            {"runRetentionDays": 2**31 - 1},
            [(["input", "runRetentionDays"], "INVALID", "Keep runs 1 to 3650 days.")],
        ),
        ({"name": "   "}, [(["input", "name"], "INVALID", "Must not be blank.")]),
        ({"name": "x" * 100_000}, [(["input", "name"], "INVALID", "At most 200 characters.")]),
        (
            # (NUL itself is refused before any resolver, for every String: schema/strings.py)
            {"name": "a\u001bb"},
            [(["input", "name"], "INVALID", "Must not contain control characters.")],
        ),
    ],
)
async def test_wrong_and_oversized_settings_are_user_errors(
    factory: Factory, given: dict[str, Any], errors: list[tuple[list[str], str, str]]
) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()

    body = await factory.gql(
        UPDATE, {"i": {"workspaceId": owner.workspace_id, **given}}, token=owner.token
    )

    assert body["data"]["workspaceUpdate"] == {
        "workspace": None,
        "userErrors": [{"field": f, "code": c, "message": m} for f, c, m in errors],
    }
    assert await factory.snapshot() == before
