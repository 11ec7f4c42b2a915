"""Who am I, workspaces, members and API tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.models import Role
from tests.factories import Factory
from tests.hostile import user_error

WORKSPACE_CREATE = """mutation($i: WorkspaceCreateInput!) {
  workspaceCreate(input: $i) { workspace { id name viewerRole } userErrors { field code message } } }"""
MEMBER_SET = """mutation($i: MemberSetInput!) {
  memberSet(input: $i) { membership { role user { id email } workspace { name } }
                         userErrors { field code message } } }"""
TOKEN_CREATE = """mutation($i: ApiTokenCreateInput!) {
  apiTokenCreate(input: $i) { apiToken { id name createdAt expiresAt } token
                              userErrors { field code message } } }"""


async def test_viewer_lists_memberships_with_roles(factory: Factory) -> None:
    owner = await factory.owner("Alpha")
    viewer = await factory.member(owner, Role.VIEWER)

    body = await factory.gql(
        "{ viewer { id email name memberships { role workspace { id name } } } }",
        token=viewer.token,
    )

    assert body["data"]["viewer"]["email"] == viewer.user.email
    assert body["data"]["viewer"]["memberships"] == [
        {"role": "VIEWER", "workspace": {"id": owner.workspace_id, "name": "Alpha"}}
    ]


async def test_workspace_create_makes_the_caller_owner(factory: Factory) -> None:
    owner = await factory.owner()

    body = await factory.gql(WORKSPACE_CREATE, {"i": {"name": " Second "}}, token=owner.token)

    payload = body["data"]["workspaceCreate"]
    assert payload["userErrors"] == []
    assert payload["workspace"]["name"] == "Second"
    assert payload["workspace"]["viewerRole"] == "OWNER"
    memberships = await factory.gql(
        "{ viewer { memberships { role workspace { name } } } }", token=owner.token
    )
    assert memberships["data"]["viewer"]["memberships"] == [
        {"role": "OWNER", "workspace": {"name": "Acme"}},
        {"role": "OWNER", "workspace": {"name": "Second"}},
    ]


async def test_member_set_creates_unknown_users_and_changes_roles(factory: Factory) -> None:
    owner = await factory.owner()

    added = await factory.gql(
        MEMBER_SET,
        {
            "i": {
                "workspaceId": owner.workspace_id,
                "email": " New.Person@Example.com ",
                "role": "EDITOR",
            }
        },
        token=owner.token,
    )
    changed = await factory.gql(
        MEMBER_SET,
        {
            "i": {
                "workspaceId": owner.workspace_id,
                "email": "new.person@example.com",
                "role": "VIEWER",
            }
        },
        token=owner.token,
    )

    membership = added["data"]["memberSet"]["membership"]
    assert membership["role"] == "EDITOR"
    assert membership["user"]["email"] == "new.person@example.com"
    assert membership["workspace"] == {"name": "Acme"}
    assert changed["data"]["memberSet"]["membership"]["role"] == "VIEWER"
    assert changed["data"]["memberSet"]["membership"]["user"]["id"] == membership["user"]["id"]
    assert (
        await factory.scalar("SELECT count(*) FROM users WHERE email = 'new.person@example.com'")
        == 1
    )


async def test_the_last_owner_cannot_be_demoted(factory: Factory) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()

    body = await factory.gql(
        MEMBER_SET,
        {"i": {"workspaceId": owner.workspace_id, "email": owner.user.email, "role": "EDITOR"}},
        token=owner.token,
    )

    assert body["data"]["memberSet"] == {
        "membership": None,
        "userErrors": [
            user_error(
                ("input", "role"),
                "LAST_OWNER",
                "A workspace keeps at least one owner; make someone else owner first.",
            )
        ],
    }
    assert await factory.snapshot() == before
    assert await factory.scalar("SELECT role FROM memberships") == "OWNER"


async def test_api_token_is_shown_once_and_works(factory: Factory) -> None:
    owner = await factory.owner()
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)

    body = await factory.gql(
        TOKEN_CREATE, {"i": {"name": "CI", "expiresAt": expires.isoformat()}}, token=owner.token
    )

    payload = body["data"]["apiTokenCreate"]
    assert payload["userErrors"] == []
    assert payload["apiToken"]["name"] == "CI"
    assert datetime.fromisoformat(payload["apiToken"]["expiresAt"]) == expires
    token = payload["token"]
    assert token.startswith("fdk_")
    me = await factory.gql("{ viewer { email } }", token=token)
    assert me["data"]["viewer"]["email"] == owner.user.email
    # Only the hash is stored.
    stored = await factory.scalar("SELECT count(*) FROM api_tokens WHERE token_hash = :t", t=token)
    assert stored == 0


async def test_an_expired_token_is_refused(factory: Factory) -> None:
    owner = await factory.owner()
    body = await factory.gql(
        TOKEN_CREATE,
        {
            "i": {
                "name": "short",
                "expiresAt": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
            }
        },
        token=owner.token,
    )
    token = body["data"]["apiTokenCreate"]["token"]
    await factory.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'short'"
    )

    refused = await factory.gql("{ viewer { email } }", token=token)

    assert refused["errors"][0]["message"] == "This API token has expired."
    assert refused["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
