"""The principal cache in real API processes: two `flowdeck serve` on one database, each
keeping principals for a minute, and every change of access refused at once by the other."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.models import Role
from tests.factories import Account, Factory, gid
from tests.processes import Processes

VIEWER = "{ viewer { email } }"
WORKSPACE = "query($id: ID!) { workspace(id: $id) { name } }"
CREATE_TOKEN = """mutation($i: ApiTokenCreateInput!) { apiTokenCreate(input: $i) {
  apiToken { id } token userErrors { code message } } }"""
REVOKE = """mutation($id: ID!) { apiTokenRevoke(id: $id) { revokedId userErrors { code } } }"""
REMOVE = """mutation($i: MemberRemoveInput!) { memberRemove(input: $i) {
  removedUserId userErrors { code } } }"""
SET = """mutation($i: MemberSetInput!) { memberSet(input: $i) { userErrors { code } } }"""
CREATE_WORKFLOW = """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) {
  workflow { id } userErrors { code } } }"""
WORKFLOW = "query($id: ID!) { workflow(id: $id) { id name } }"
GRAPH = {"nodes": [{"id": "t", "type": "trigger", "position": {"x": 0, "y": 0}}], "edges": []}


@pytest.fixture(scope="module")
def apis(database_url: str) -> Iterator[tuple[str, str]]:
    """Two API processes keeping principals for 60 s (longer than any test here)."""
    pool = Processes(database_url, FLOWDECK_TOKEN_CACHE_SECONDS="60")
    try:
        yield pool.api()[1], pool.api()[1]
    finally:
        pool.stop_all()


async def gql(base: str, token: str, query: str, variables: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    return response.json()


def codes(body: Any) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors") or []]


async def kept_everywhere(apis: tuple[str, str], token: str) -> None:
    """Use ``token`` on both processes: each now keeps its principal."""
    for base in apis:
        assert codes(await gql(base, token, VIEWER)) == []


async def test_the_other_process_serves_a_kept_token_without_asking_the_database(
    factory: Factory, apis: tuple[str, str]
) -> None:
    # Given a token kept by both processes
    owner = await factory.owner()
    await kept_everywhere(apis, owner.token)

    # When its row goes without the announcement (the trigger off: what the cache would do)
    await factory.execute("ALTER TABLE api_tokens DISABLE TRIGGER api_tokens_announce_access")
    try:
        await factory.execute("DELETE FROM api_tokens WHERE user_id = :u", u=owner.user.id)
        served = [await gql(base, owner.token, VIEWER) for base in apis]
    finally:
        await factory.execute("ALTER TABLE api_tokens ENABLE TRIGGER api_tokens_announce_access")

    # Then both still sign it in, from memory: no query reads the token on a kept sign-in
    assert [body["data"] for body in served] == [{"viewer": {"email": owner.user.email}}] * 2


async def test_a_revoked_token_is_refused_by_the_other_process_on_its_next_request(
    factory: Factory, apis: tuple[str, str]
) -> None:
    first, second = apis
    owner = await factory.owner()
    made = await gql(first, owner.token, CREATE_TOKEN, {"i": {"name": "spare"}})
    spare = made["data"]["apiTokenCreate"]
    await kept_everywhere(apis, spare["token"])

    # When the first process revokes it
    revoked = await gql(first, owner.token, REVOKE, {"id": spare["apiToken"]["id"]})
    assert revoked["data"]["apiTokenRevoke"]["userErrors"] == []

    # Then the very next request with it, on either process, is refused (the TTL is 60 s)
    for base in (second, first):
        body = await gql(base, spare["token"], VIEWER)
        assert (body["data"], codes(body)) == (None, ["UNAUTHENTICATED"])
    # And the owner's own token, kept too, still works
    assert codes(await gql(second, owner.token, VIEWER)) == []


async def test_a_removed_member_loses_access_at_once_in_the_other_process(
    factory: Factory, apis: tuple[str, str]
) -> None:
    first, second = apis
    owner = await factory.owner()
    editor = await factory.member(owner, Role.EDITOR)
    for base in apis:
        body = await gql(base, editor.token, WORKSPACE, {"id": owner.workspace_id})
        assert body["data"] == {"workspace": {"name": "Acme"}}

    removed = await gql(
        first,
        owner.token,
        REMOVE,
        {"i": {"workspaceId": owner.workspace_id, "userId": gid("User", editor.user.id)}},
    )
    assert removed["data"]["memberRemove"]["userErrors"] == []

    for base in (second, first):
        body = await gql(base, editor.token, WORKSPACE, {"id": owner.workspace_id})
        assert (body["data"], codes(body)) == ({"workspace": None}, ["NOT_FOUND"])


async def test_a_changed_role_counts_at_once_in_the_other_process(
    factory: Factory, apis: tuple[str, str]
) -> None:
    first, second = apis
    owner = await factory.owner()
    editor = await factory.member(owner, Role.EDITOR)
    create = {"i": {"workspaceId": owner.workspace_id, "name": "wf", "graph": GRAPH}}
    made = await gql(second, editor.token, CREATE_WORKFLOW, create)
    assert made["data"]["workflowCreate"]["userErrors"] == []
    before = await factory.scalar("SELECT count(*) FROM workflows")

    demoted = await gql(
        first,
        owner.token,
        SET,
        {"i": {"workspaceId": owner.workspace_id, "email": editor.user.email, "role": "VIEWER"}},
    )
    assert demoted["data"]["memberSet"]["userErrors"] == []

    refused = await gql(second, editor.token, CREATE_WORKFLOW, create)
    assert codes(refused) == ["FORBIDDEN"]
    assert await factory.scalar("SELECT count(*) FROM workflows") == before


async def test_a_new_workspace_is_reachable_at_once_through_the_other_process(
    factory: Factory, apis: tuple[str, str]
) -> None:
    first, second = apis
    owner = await factory.owner()
    await kept_everywhere(apis, owner.token)

    made = await gql(
        first,
        owner.token,
        'mutation { workspaceCreate(input: {name: "New"}) { workspace { id } } }',
    )
    new_id = made["data"]["workspaceCreate"]["workspace"]["id"]

    body = await gql(second, owner.token, WORKSPACE, {"id": new_id})
    assert body["data"] == {"workspace": {"name": "New"}}


async def test_an_expired_token_is_refused_even_while_kept(
    factory: Factory, apis: tuple[str, str]
) -> None:
    first = apis[0]
    owner = await factory.owner()
    expires = datetime.now(UTC) + timedelta(seconds=2)
    made = await gql(
        first, owner.token, CREATE_TOKEN, {"i": {"name": "brief", "expiresAt": expires.isoformat()}}
    )
    brief = made["data"]["apiTokenCreate"]["token"]
    await kept_everywhere(apis, brief)

    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)

    for base in apis:
        body = await gql(base, brief, VIEWER)
        assert body["errors"][0]["message"] == "This API token has expired."
        assert codes(body) == ["UNAUTHENTICATED"]


async def test_kept_principals_never_cross_tokens_or_workspaces(
    factory: Factory, apis: tuple[str, str]
) -> None:
    # Given two owners of two workspaces, each with a workflow, both kept by both processes
    alice, bob = await factory.owner("Alice's"), await factory.owner("Bob's")
    workflows: dict[str, str] = {}
    for account in (alice, bob):
        create = {"i": {"workspaceId": account.workspace_id, "name": "mine", "graph": GRAPH}}
        made = await gql(apis[0], account.token, CREATE_WORKFLOW, create)
        workflows[account.user.email] = made["data"]["workflowCreate"]["workflow"]["id"]

    # When they take turns on both processes
    for _ in range(5):
        for base in apis:
            for me, other in ((alice, bob), (bob, alice)):
                # Then each token is its own user, and the other's objects do not exist
                viewer = await gql(base, me.token, VIEWER)
                assert viewer["data"] == {"viewer": {"email": me.user.email}}
                theirs = await gql(base, me.token, WORKFLOW, {"id": workflows[other.user.email]})
                assert (theirs["data"], codes(theirs)) == ({"workflow": None}, ["NOT_FOUND"])
                space = await gql(base, me.token, WORKSPACE, {"id": other.workspace_id})
                assert (space["data"], codes(space)) == ({"workspace": None}, ["NOT_FOUND"])
                mine = await gql(base, me.token, WORKFLOW, {"id": workflows[me.user.email]})
                assert mine["data"]["workflow"]["name"] == "mine"


async def test_a_lost_listener_connection_forgets_every_kept_principal(
    factory: Factory, apis: tuple[str, str]
) -> None:
    # Given a token both processes keep, whose row then goes unannounced
    owner: Account = await factory.owner()
    await kept_everywhere(apis, owner.token)
    await factory.execute("ALTER TABLE api_tokens DISABLE TRIGGER api_tokens_announce_access")
    try:
        await factory.execute("DELETE FROM api_tokens WHERE user_id = :u", u=owner.user.id)
    finally:
        await factory.execute("ALTER TABLE api_tokens ENABLE TRIGGER api_tokens_announce_access")

    # When the listeners' connections drop (they reconnect by themselves)
    await factory.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'flowdeck-listener' AND datname = current_database()"
    )

    # Then neither process serves what it kept: they ask the database, which refuses it
    deadline = time.monotonic() + 10
    for base in apis:
        while True:
            body = await gql(base, owner.token, VIEWER)
            if codes(body) == ["UNAUTHENTICATED"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert (body["data"], codes(body)) == (None, ["UNAUTHENTICATED"])
