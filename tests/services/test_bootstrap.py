"""Tokens issued from the command line: a new workspace gets its owner; nobody joins an
existing workspace unless asked; refusals write nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from app.errors import InputErrors
from app.models import Role
from app.services.bootstrap import IssuedToken, first_owner, issue_token
from tests.factories import Factory


async def issue(factory: Factory, **arguments: Any) -> IssuedToken:
    async with factory.sessions() as session:
        issued = await issue_token(session, token_name="cli", **arguments)
        await session.commit()
        return issued


async def roles(factory: Factory, email: str) -> list[tuple[str, str]]:
    async with factory.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT w.name, m.role FROM memberships m JOIN users u ON u.id = m.user_id "
                "JOIN workspaces w ON w.id = m.workspace_id WHERE u.email = :email ORDER BY 1"
            ),
            {"email": email},
        )
        return [(name, str(role)) for name, role in rows.all()]


async def test_a_missing_workspace_is_created_with_the_user_as_owner(factory: Factory) -> None:
    issued = await issue(factory, email=" Ops@Example.com ", workspace_name="Ops")
    assert (issued.role, issued.new_workspace, issued.new_member) == (Role.OWNER, True, True)
    assert issued.user.email == "ops@example.com"
    assert await roles(factory, "ops@example.com") == [("Ops", "OWNER")]
    body = await factory.gql("{ viewer { email } }", token=issued.created.token)
    assert body["data"]["viewer"]["email"] == "ops@example.com"
    async with factory.sessions() as session:
        assert await first_owner(session) == ("ops@example.com", "Ops")


async def test_a_member_gets_a_token_with_the_role_they_have(factory: Factory) -> None:
    owner = await factory.owner("Acme")
    editor = await factory.member(owner, Role.EDITOR)
    before = await factory.scalar("SELECT count(*) FROM memberships")
    issued = await issue(factory, email=editor.user.email.upper(), workspace_name="acme")
    assert (issued.role, issued.new_workspace, issued.new_member) == (Role.EDITOR, False, False)
    assert issued.workspace.id == owner.workspace.id
    assert await factory.scalar("SELECT count(*) FROM memberships") == before
    same = await issue(factory, email=editor.user.email, workspace_name="Acme", role=Role.EDITOR)
    assert same.role is Role.EDITOR


@pytest.mark.parametrize("known_user", [True, False])
async def test_joining_an_existing_workspace_is_refused_unless_asked_and_writes_nothing(
    factory: Factory, known_user: bool
) -> None:
    owner = await factory.owner("My workspace")
    email = (await factory.user()).email if known_user else "bob@example.com"
    before = await factory.snapshot()
    async with factory.sessions() as session:
        with pytest.raises(InputErrors) as refused:
            await issue_token(session, email=email, workspace_name="My workspace", token_name="cli")
    [error] = refused.value.errors
    assert error.field == ("add_member",)
    assert error.message == f'{email} is not a member of the existing workspace "My workspace".'
    assert await factory.snapshot() == before

    issued = await issue(factory, email=email, workspace_name="My workspace", add_member=True)
    assert (issued.role, issued.new_workspace, issued.new_member) == (Role.MEMBER, False, True)
    assert issued.workspace.id == owner.workspace.id
    assert await roles(factory, email) == [("My workspace", "MEMBER")]


async def test_add_member_takes_the_role(factory: Factory) -> None:
    await factory.owner("Acme")
    issued = await issue(
        factory, email="eve@example.com", workspace_name="Acme", role=Role.VIEWER, add_member=True
    )
    assert issued.role is Role.VIEWER
    assert await roles(factory, "eve@example.com") == [("Acme", "VIEWER")]


@pytest.mark.parametrize(
    ("arguments", "field", "message"),
    [
        (
            {"email": "new@example.com", "workspace_name": "Nowhere", "role": Role.MEMBER},
            ("role",),
            'No workspace is named "Nowhere"; a new one starts with its owner, not a MEMBER.',
        ),
        (
            {"email": "{editor}", "workspace_name": "Acme", "role": Role.OWNER},
            ("role",),
            '{editor} is EDITOR in "Acme"; change roles through the workspace\'s members, '
            "not with a token.",
        ),
        (
            {"email": "{editor}", "workspace_name": "Twice", "add_member": True},
            ("workspace",),
            '2 workspaces are named "Twice"; rename all but one first.',
        ),
        (
            {"email": "not an email", "workspace_name": "Acme"},
            ("email",),
            "Not a valid email address.",
        ),
        ({"email": "a@example.com", "workspace_name": "  "}, ("workspace",), "Must not be blank."),
    ],
)
async def test_refusals_write_nothing(
    factory: Factory, arguments: dict[str, Any], field: tuple[str, ...], message: str
) -> None:
    owner = await factory.owner("Acme")
    editor = await factory.member(owner, Role.EDITOR)
    await factory.owner("Twice")
    await factory.owner("twice")
    arguments = {
        key: value.replace("{editor}", editor.user.email) if key == "email" else value
        for key, value in arguments.items()
    }
    before = await factory.snapshot()
    async with factory.sessions() as session:
        with pytest.raises(InputErrors) as refused:
            await issue_token(session, token_name="cli", **arguments)
    [error] = refused.value.errors
    assert (error.field, error.message) == (field, message.replace("{editor}", editor.user.email))
    assert await factory.snapshot() == before


async def test_first_owner_is_none_on_an_empty_database(factory: Factory) -> None:
    async with factory.sessions() as session:
        assert await first_owner(session) is None
