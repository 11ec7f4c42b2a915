"""Automatic persisted queries (Apollo's protocol) through the real /graphql endpoint."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from strawberry.http import GraphQLRequestData

from app.persisted_queries import PersistedQueries
from tests.factories import Account, Factory

MODERN = "application/graphql-response+json"
LEGACY = "application/json"
VIEWER = "query Viewer { viewer { email } }"
WORKSPACE = "query Space($id: ID!) { workspace(id: $id) { name } }"
CREATE = (
    "mutation Make($name: String!) { workspaceCreate(input: {name: $name}) { workspace { name } } }"
)
NOT_FOUND = {
    "errors": [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ]
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unique(text: str) -> str:
    """The text with a comment of its own: the app (and its store) lives for the whole run."""
    return f"{text}\n# {uuid.uuid4().hex}"


def persisted(digest: str, version: Any = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": digest}}


@pytest.fixture
async def owner(factory: Factory) -> Account:
    return await factory.owner()


async def post(
    client: httpx.AsyncClient, body: dict[str, Any], token: str | None, accept: str = MODERN
) -> httpx.Response:
    headers = {"accept": accept, "content-type": LEGACY}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return await client.post("/graphql", content=json.dumps(body), headers=headers)


async def get(
    client: httpx.AsyncClient, params: dict[str, Any], token: str | None
) -> httpx.Response:
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
    headers = {"accept": MODERN, "authorization": f"Bearer {token}"}
    return await client.get("/graphql", params=encoded, headers=headers)


async def test_an_unknown_hash_asks_for_the_text_then_the_hash_alone_runs(
    client: httpx.AsyncClient, owner: Account
) -> None:
    text = unique(WORKSPACE)
    digest = sha(text)
    variables = {"id": owner.workspace_id}

    # Hash alone, first time: not found (200, as Apollo's clients expect, for both media types)
    for accept in (MODERN, LEGACY):
        first = await post(
            client, {"extensions": persisted(digest), "variables": variables}, owner.token, accept
        )
        assert (first.status_code, first.json()) == (200, NOT_FOUND)

    # The client retries with the text: it runs, and is kept
    full = await post(
        client,
        {"query": text, "extensions": persisted(digest), "variables": variables},
        owner.token,
    )
    assert (full.status_code, full.json()) == (200, {"data": {"workspace": {"name": "Acme"}}})

    # Then the hash alone runs it, over POST and over GET
    again = await post(
        client, {"extensions": persisted(digest), "variables": variables}, owner.token
    )
    assert (again.status_code, again.json()) == (200, {"data": {"workspace": {"name": "Acme"}}})
    fetched = await get(
        client, {"extensions": persisted(digest), "variables": variables}, owner.token
    )
    assert (fetched.status_code, fetched.json()) == (200, {"data": {"workspace": {"name": "Acme"}}})


async def test_get_can_send_the_text_and_the_hash(
    client: httpx.AsyncClient, owner: Account
) -> None:
    text = unique(VIEWER)
    digest = sha(text)
    first = await get(client, {"query": text, "extensions": persisted(digest)}, owner.token)
    assert first.json() == {"data": {"viewer": {"email": owner.user.email}}}
    second = await get(client, {"extensions": persisted(digest)}, owner.token)
    assert second.json() == {"data": {"viewer": {"email": owner.user.email}}}


async def test_a_kept_text_runs_as_its_caller_only(
    client: httpx.AsyncClient, factory: Factory, owner: Account
) -> None:
    # Given a text kept by one tenant's request
    other = await factory.owner("Elsewhere")
    text = unique(WORKSPACE)
    digest = sha(text)
    variables = {"id": owner.workspace_id}
    kept = await post(
        client,
        {"query": text, "extensions": persisted(digest), "variables": variables},
        owner.token,
    )
    assert kept.json()["data"] == {"workspace": {"name": "Acme"}}

    # Then another tenant running the hash gets nothing of the first tenant's
    theirs = await post(
        client, {"extensions": persisted(digest), "variables": variables}, other.token
    )
    assert theirs.status_code == 294
    assert [e["extensions"]["code"] for e in theirs.json()["errors"]] == ["NOT_FOUND"]
    assert theirs.json()["data"] == {"workspace": None}
    # And without a token it signs in first, as any request
    anonymous = await post(client, {"extensions": persisted(digest), "variables": variables}, None)
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("extensions", "status", "code", "message"),
    [
        pytest.param(
            lambda text: persisted(sha(text + " ")),
            400,
            "PERSISTED_QUERY_HASH_MISMATCH",
            "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query's UTF-8 text.",
            id="wrong-hash",
        ),
        pytest.param(
            lambda text: persisted("z" * 64),
            400,
            "BAD_REQUEST",
            "extensions.persistedQuery.sha256Hash must be 64 hexadecimal digits.",
            id="not-hex",
        ),
        pytest.param(
            lambda text: persisted(sha(text)[:63]),
            400,
            "BAD_REQUEST",
            "extensions.persistedQuery.sha256Hash must be 64 hexadecimal digits.",
            id="short-hash",
        ),
        pytest.param(
            lambda text: persisted(sha(text), version=2),
            400,
            "PERSISTED_QUERY_VERSION",
            "Only version 1 of extensions.persistedQuery is supported (Apollo's protocol).",
            id="version-2",
        ),
        pytest.param(
            lambda text: persisted(sha(text), version=True),
            400,
            "PERSISTED_QUERY_VERSION",
            "Only version 1 of extensions.persistedQuery is supported (Apollo's protocol).",
            id="version-true",
        ),
        pytest.param(
            lambda text: {"persistedQuery": "yes"},
            400,
            "BAD_REQUEST",
            "extensions.persistedQuery must be an object.",
            id="not-an-object",
        ),
    ],
)
async def test_hostile_persisted_queries_are_refused_and_nothing_is_kept(
    client: httpx.AsyncClient,
    owner: Account,
    extensions: Callable[[str], dict[str, Any]],
    status: int,
    code: str,
    message: str,
) -> None:
    text = unique(VIEWER)
    refused = await post(client, {"query": text, "extensions": extensions(text)}, owner.token)

    assert refused.status_code == status
    assert refused.json() == {"errors": [{"message": message, "extensions": {"code": code}}]}
    # Nothing was kept under that hash, nor under the text's own
    for digest in (sha(text), sha(text + " ")):
        probe = await post(client, {"extensions": persisted(digest)}, owner.token)
        assert probe.json() == NOT_FOUND


async def test_an_oversized_text_is_refused_unrun_and_unkept(
    client: httpx.AsyncClient, factory: Factory, owner: Account
) -> None:
    # A mutation padded by a comment past 16 KiB (few tokens, many bytes)
    text = unique(CREATE) + "\n#" + "x" * 20_000
    before = await factory.snapshot()

    refused = await post(
        client,
        {"query": text, "extensions": persisted(sha(text)), "variables": {"name": "Big"}},
        owner.token,
    )

    assert refused.status_code == 413
    assert refused.json() == {
        "errors": [
            {
                "message": "A persisted query is at most 16384 bytes; send this one without "
                "extensions.persistedQuery.",
                "extensions": {"code": "PERSISTED_QUERY_TOO_LARGE"},
            }
        ]
    }
    assert await factory.snapshot() == before
    probe = await post(client, {"extensions": persisted(sha(text))}, owner.token)
    assert probe.json() == NOT_FOUND


async def test_a_persisted_mutation_is_refused_over_get(
    client: httpx.AsyncClient, factory: Factory, owner: Account
) -> None:
    text = unique(CREATE)
    digest = sha(text)
    made = await post(
        client,
        {"query": text, "extensions": persisted(digest), "variables": {"name": "Once"}},
        owner.token,
    )
    assert made.json() == {"data": {"workspaceCreate": {"workspace": {"name": "Once"}}}}
    before = await factory.snapshot()

    refused = await get(
        client, {"extensions": persisted(digest), "variables": {"name": "Twice"}}, owner.token
    )

    assert (refused.status_code, refused.headers["allow"]) == (405, "POST")
    assert await factory.snapshot() == before


def test_the_store_is_a_bounded_lru() -> None:
    store = PersistedQueries(max_entries=2, max_bytes=1024)
    texts = ["{ a }", "{ b }", "{ c }"]

    def send(text: str | None, digest: str) -> GraphQLRequestData:
        request = GraphQLRequestData(
            query=text, variables=None, operation_name=None, extensions=persisted(digest)
        )
        return store.resolve(request)

    send(texts[0], sha(texts[0]))
    send(texts[1], sha(texts[1]))
    assert send(None, sha(texts[0])).query == texts[0]  # a is now the most recent
    send(texts[2], sha(texts[2]))  # evicts b, the least recently used

    assert len(store) == 2
    assert send(None, sha(texts[0])).query == texts[0]
    assert send(None, sha(texts[2])).query == texts[2]
    with pytest.raises(Exception, match="PersistedQueryNotFound"):
        send(None, sha(texts[1]))
