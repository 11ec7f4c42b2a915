"""Helpers for secret tests: set, list and delete secrets through the API."""

from __future__ import annotations

from typing import Any

from tests.factories import Account, Factory
from tests.runs import node

SET = """mutation($i: SecretSetInput!) { secretSet(input: $i) {
  secret { name createdAt updatedAt } userErrors { field code message } } }"""
DELETE = """mutation($i: SecretDeleteInput!) { secretDelete(input: $i) {
  deletedName userErrors { field code message } } }"""
LIST = """query($id: ID!) { workspace(id: $id) { secrets { name createdAt updatedAt } } }"""


async def set_secret(factory: Factory, account: Account, name: str, value: Any) -> dict:
    """The secretSet payload (no top-level errors allowed)."""
    body = await factory.gql(
        SET,
        {"i": {"workspaceId": account.workspace_id, "name": name, "value": value}},
        token=account.token,
    )
    assert "errors" not in body, body
    return body["data"]["secretSet"]


async def delete_secret(factory: Factory, account: Account, name: str) -> dict:
    """The secretDelete payload (no top-level errors allowed)."""
    body = await factory.gql(
        DELETE, {"i": {"workspaceId": account.workspace_id, "name": name}}, token=account.token
    )
    assert "errors" not in body, body
    return body["data"]["secretDelete"]


async def owner_with_secrets(factory: Factory, workspace: str = "Acme", **secrets: str) -> Account:
    """A new owner of a new workspace who has set ``secrets`` (each NAME=value)."""
    owner = await factory.owner(workspace)
    for name, value in secrets.items():
        assert (await set_secret(factory, owner, name, value))["userErrors"] == [], name
    return owner


def sending_key(url: str, secret: str, **config: Any) -> dict[str, Any]:
    """An http.request node "call" that sends the secret ``secret`` in its X-Key header."""
    return node(
        "call", "http.request", url=url, headers={"X-Key": f"{{{{ secrets.{secret} }}}}"}, **config
    )
