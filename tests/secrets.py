"""Helpers for secret tests: set a secret through the API."""

from __future__ import annotations

from typing import Any

from tests.factories import Account, Factory

SET = """mutation($i: SecretSetInput!) { secretSet(input: $i) {
  secret { name createdAt updatedAt } userErrors { field code message } } }"""
DELETE = """mutation($i: SecretDeleteInput!) { secretDelete(input: $i) {
  deletedName userErrors { field code message } } }"""


async def set_secret(factory: Factory, account: Account, name: str, value: Any) -> dict:
    """The secretSet payload (no top-level errors allowed)."""
    body = await factory.gql(
        SET,
        {"i": {"workspaceId": account.workspace_id, "name": name, "value": value}},
        token=account.token,
    )
    assert "errors" not in body, body
    return body["data"]["secretSet"]
