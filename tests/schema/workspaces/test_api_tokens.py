"""viewer.apiTokens and apiTokenRevoke: your tokens, never their values; revoked at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.models import Role
from schema.ids import decode_id
from tests.factories import Factory, gid

TOKENS = "{ viewer { apiTokens { id name createdAt expiresAt lastUsedAt } } }"
REVOKE = """mutation($id: ID!) { apiTokenRevoke(id: $id) {
  revokedId userErrors { field code message } } }"""
CREATE = """mutation($i: ApiTokenCreateInput!) { apiTokenCreate(input: $i) {
  apiToken { id } token userErrors { code } } }"""


async def token_ids(factory: Factory, user_id: uuid.UUID) -> list[str]:
    rows = await factory.rows(
        "SELECT id FROM api_tokens WHERE user_id = :user ORDER BY created_at DESC, id", user=user_id
    )
    return [gid("ApiToken", row["id"]) for row in rows]


async def test_the_list_shows_your_tokens_newest_first_and_never_a_secret(factory: Factory) -> None:
    owner = await factory.owner()
    other = await factory.owner("Elsewhere")
    made = await factory.gql(
        CREATE, {"i": {"name": "CI", "expiresAt": "2099-01-01T00:00:00+00:00"}}, token=owner.token
    )
    ci = made["data"]["apiTokenCreate"]
    before = datetime.now(UTC)

    body = await factory.gql(TOKENS, token=owner.token)

    listed = body["data"]["viewer"]["apiTokens"]
    first_id = (await token_ids(factory, owner.user.id))[1]
    assert [(t["id"], t["name"], t["expiresAt"]) for t in listed] == [
        (ci["apiToken"]["id"], "CI", "2099-01-01T00:00:00+00:00"),
        (first_id, "test", None),
    ]
    assert listed[0]["lastUsedAt"] is None  # never used yet
    assert datetime.fromisoformat(listed[1]["lastUsedAt"]) <= before  # this request's token
    assert ci["token"] not in str(body)
    assert owner.token not in str(body)
    assert other.token not in str(body)
    # The schema has no field that could show a value or a hash
    fields = await factory.gql('{ __type(name: "ApiToken") { fields { name } } }')
    assert {f["name"] for f in fields["data"]["__type"]["fields"]} == {
        "id",
        "name",
        "createdAt",
        "expiresAt",
        "lastUsedAt",
    }


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.EDITOR, Role.OWNER])
async def test_a_revoked_token_fails_on_the_next_request_whatever_the_role(
    factory: Factory, role: Role
) -> None:
    owner = await factory.owner()
    caller = owner if role is Role.OWNER else await factory.member(owner, role)
    spare = (await factory.gql(CREATE, {"i": {"name": "spare"}}, token=caller.token))["data"][
        "apiTokenCreate"
    ]
    assert (await factory.gql(TOKENS, token=spare["token"]))["data"] is not None

    body = await factory.gql(REVOKE, {"id": spare["apiToken"]["id"]}, token=caller.token)

    assert body["data"]["apiTokenRevoke"] == {
        "revokedId": spare["apiToken"]["id"],
        "userErrors": [],
    }
    after = await factory.gql(TOKENS, token=spare["token"])
    assert after["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in after["errors"]] == [
        ("Invalid API token.", "UNAUTHENTICATED")
    ]
    assert await factory.rows(
        "SELECT action, object_id, actor_user_id, summary FROM audit_events "
        "WHERE action = 'TOKEN_REVOKE'"
    ) == [
        {
            "action": "TOKEN_REVOKE",
            "object_id": str(decode_id("ApiToken", spare["apiToken"]["id"])),
            "actor_user_id": caller.user.id,
            "summary": {"name": "spare", "expiresAt": None},
        }
    ]


async def test_revoking_the_token_in_use_ends_its_own_access(factory: Factory) -> None:
    owner = await factory.owner()
    (current,) = await token_ids(factory, owner.user.id)

    body = await factory.gql(REVOKE, {"id": current}, token=owner.token)

    assert body["data"]["apiTokenRevoke"]["revokedId"] == current
    assert (await factory.gql(TOKENS, token=owner.token))["errors"][0]["extensions"]["code"] == (
        "UNAUTHENTICATED"
    )


async def test_another_users_token_reads_as_not_found_and_is_kept(factory: Factory) -> None:
    owner = await factory.owner()
    colleague = await factory.member(owner, Role.VIEWER)
    (theirs,) = await token_ids(factory, colleague.user.id)
    before = await factory.snapshot()

    body = await factory.gql(REVOKE, {"id": theirs}, token=owner.token)

    assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [
        ("API token not found.", "NOT_FOUND")
    ]
    assert await factory.snapshot() == before
    assert (await factory.gql(TOKENS, token=colleague.token))["data"] is not None


@pytest.mark.parametrize(
    "token_id",
    [
        "",
        "garbage",
        "T" * 100_000,
        "\u0000",
        gid("ApiToken", "not-a-uuid"),
        gid("ApiToken", uuid.uuid4()),
        gid("Workflow", uuid.uuid4()),
    ],
)
async def test_wrong_and_hostile_ids_read_as_not_found(factory: Factory, token_id: str) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()
    body = await factory.gql(REVOKE, {"id": token_id}, token=owner.token)
    assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [
        ("API token not found.", "NOT_FOUND")
    ]
    assert await factory.snapshot() == before


async def test_revoking_twice_is_not_found_the_second_time(factory: Factory) -> None:
    owner = await factory.owner()
    spare = (await factory.gql(CREATE, {"i": {"name": "spare"}}, token=owner.token))["data"][
        "apiTokenCreate"
    ]
    first = await factory.gql(REVOKE, {"id": spare["apiToken"]["id"]}, token=owner.token)
    assert first["data"]["apiTokenRevoke"]["userErrors"] == []
    before = await factory.snapshot()

    second = await factory.gql(REVOKE, {"id": spare["apiToken"]["id"]}, token=owner.token)

    assert [e["extensions"]["code"] for e in second["errors"]] == ["NOT_FOUND"]
    assert await factory.snapshot() == before


async def test_signed_out_nothing_is_listed_or_revoked(factory: Factory) -> None:
    owner = await factory.owner()
    (current,) = await token_ids(factory, owner.user.id)
    before = await factory.snapshot()
    for query, variables in ((TOKENS, None), (REVOKE, {"id": current})):
        body = await factory.gql(query, variables)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    assert await factory.snapshot() == before
