"""Hostile-input helpers, written once: the crafted values, the client that fails a test on
any HTTP 500, the exact shapes of refusals, and the check that a refused call wrote nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import text

from tests.factories import Account, Factory

# --- values -------------------------------------------------------------------------------

SQL_INJECTION = "'; DROP TABLE workflows; --"
NUL = "\x00"
LONE_SURROGATE = "\ud800"
MIB = 1024 * 1024
SIGN_IN = "Sign in with an API token: Authorization: Bearer <token>."

# --- operations both GraphQL batteries send -----------------------------------------------

VERSION_FIELDS = "number message restoredFrom graph diagnostics { severity code message path }"
CREATE = (
    "mutation Create($input: WorkflowCreateInput!) { workflowCreate(input: $input) {"
    f" workflow {{ id name description currentVersion {{ {VERSION_FIELDS} }} }}"
    " userErrors { field code message } } }"
)
SAVE = (
    "mutation Save($input: WorkflowSaveInput!) { workflowSave(input: $input) {"
    f" workflow {{ id name description currentVersion {{ {VERSION_FIELDS} }} }}"
    " userErrors { field code message } } }"
)
VIEWER = "query Viewer { viewer { email } }"


# --- graphs -------------------------------------------------------------------------------


def node(node_id: str, node_type: str = "logic.merge", **data: object) -> dict[str, Any]:
    """A React Flow node."""
    return {"id": node_id, "type": node_type, "position": {"x": 0, "y": 0}, "data": data}


def edge(edge_id: str, source: str, target: str) -> dict[str, Any]:
    """A React Flow edge."""
    return {"id": edge_id, "source": source, "target": target}


def chain(count: int) -> dict[str, Any]:
    """A trigger followed by ``count - 1`` actions in a line: no errors, no warnings."""
    nodes = [node("n0", "trigger")] + [node(f"n{i}") for i in range(1, count)]
    edges = [edge(f"e{i}", f"n{i}", f"n{i + 1}") for i in range(count - 1)]
    return {"nodes": nodes, "edges": edges, "viewport": {"x": 0, "y": 0, "zoom": 1}}


def compact_size(graph: object) -> int:
    """Bytes of the compact UTF-8 JSON of a graph (how the size limit is defined)."""
    return len(json.dumps(graph, ensure_ascii=False, separators=(",", ":")).encode())


def graph_of_size(size: int) -> dict[str, Any]:
    """A valid graph whose compact JSON is exactly ``size`` bytes (strings of <= 100,000)."""
    graph = chain(size // 100_000 + 1)
    missing = size - compact_size(graph) - len(graph["nodes"]) * len('"text":""')
    for item in graph["nodes"]:
        item["data"]["text"] = "x" * min(missing, 100_000)
        missing -= len(item["data"]["text"])
    assert compact_size(graph) == size
    return graph


# --- what a refusal looks like ---------------------------------------------------------------


def user_error(field: tuple[str, ...], code: str, message: str) -> dict[str, Any]:
    """A UserError as the API returns it."""
    return {"field": list(field), "code": code, "message": message}


def top_error(message: str, code: str, path: list[str], data: Any = None) -> dict[str, Any]:
    """The exact response body of a top-level error (minus locations)."""
    return {
        "data": data,
        "errors": [{"message": message, "path": path, "extensions": {"code": code}}],
    }


def signed_out(message: str) -> dict[str, Any]:
    """The response to any operation without a usable token: checked once per operation,
    before any resolver runs, so the error belongs to no field (no path) and data is null."""
    return {
        "data": None,
        "errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}],
    }


def without_locations(body: dict[str, Any]) -> dict[str, Any]:
    """The body with the (position-dependent) ``locations`` of its errors removed."""
    if "errors" not in body:
        return body
    errors = [{k: v for k, v in e.items() if k != "locations"} for e in body["errors"]]
    return {**body, "errors": errors}


def bad_input(path: list[str], reason: str, field: list[str], message: str) -> dict[str, Any]:
    """A query's top-level user-input error (BAD_USER_INPUT with the reason and field)."""
    return {
        "message": message,
        "path": path,
        "extensions": {"code": "BAD_USER_INPUT", "reason": reason, "field": field},
    }


def validation_failure(message: str) -> dict[str, Any]:
    """A GraphQL validation error: not executed, no data, one message."""
    return {"data": None, "errors": [{"message": message}]}


# Every String argument refuses text PostgreSQL cannot store (schema/strings.py), before any
# resolver runs: one top-level BAD_USER_INPUT error naming the argument path, no data.
NUL_PROBLEM = "cannot contain a NUL character (U+0000)"
SURROGATE_PROBLEM = "cannot contain a lone surrogate (U+D800 to U+DFFF); send valid Unicode"


def unstorable_error(owner: str, field: tuple[str | int, ...], problem: str) -> dict[str, Any]:
    """The error for ``field`` (argument path) of field ``owner`` (without locations)."""
    dotted = ".".join(str(part) for part in field)
    return {
        "message": f'Argument "{dotted}" of "{owner}" {problem}.',
        "extensions": {"code": "BAD_USER_INPUT", "reason": "INVALID", "field": list(field)},
    }


def unstorable(owner: str, field: tuple[str | int, ...], problem: str) -> dict[str, Any]:
    """The body of an operation refused for one such argument: no data, one error."""
    return {"data": None, "errors": [unstorable_error(owner, field, problem)]}


def problem_of(text: str) -> str:
    """NUL_PROBLEM or SURROGATE_PROBLEM, whichever the check reports for ``text``."""
    return NUL_PROBLEM if "\x00" in text else SURROGATE_PROBLEM


# --- the client ---------------------------------------------------------------------------

FINGERPRINTS = {
    "users": "SELECT id, email, name FROM users",
    "api_tokens": "SELECT id, user_id, name, token_hash, expires_at FROM api_tokens",
    "workspaces": "SELECT id, name FROM workspaces",
    "memberships": "SELECT workspace_id, user_id, role FROM memberships",
    "workflows": (
        "SELECT id, workspace_id, name, description, is_template, template_category,"
        " current_version, updated_at FROM workflows"
    ),
    "workflow_versions": (
        "SELECT id, workflow_id, number, graph, diagnostics, message, restored_from"
        " FROM workflow_versions"
    ),
}


class Api:
    """GraphQL over real HTTP; any HTTP 500 or masked INTERNAL_SERVER_ERROR fails the test.

    Strict calls (the default) fail at once. Non-strict calls (``send_all``) return the
    crash as the call's result instead, so that the exact comparison of all results fails
    and lists every crashing case, not just the first.
    """

    def __init__(self, client: httpx.AsyncClient, factory: Factory) -> None:
        self.client = client
        self.factory = factory

    async def post(
        self, body: str | bytes, token: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """POST a raw body (JSON unless ``headers`` say otherwise)."""
        sent = {"content-type": "application/json", **(headers or {})}
        if token:
            sent["authorization"] = f"Bearer {token}"
        content = body.encode() if isinstance(body, str) else body
        return await self.client.post("/graphql", content=content, headers=sent)

    async def raw(self, body: str, token: str | None = None, strict: bool = True) -> dict[str, Any]:
        """POST a raw JSON body; returns the decoded response, error locations removed."""
        response = await self.post(body, token)
        if response.status_code != 200:
            assert not strict, f"HTTP {response.status_code}: {response.text} for {body[:300]}"
            return {"httpStatus": response.status_code, "text": response.text}
        decoded = without_locations(response.json())
        codes = [e.get("extensions", {}).get("code") for e in decoded.get("errors", [])]
        assert not strict or "INTERNAL_SERVER_ERROR" not in codes, f"{decoded} for {body[:300]}"
        return decoded

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        strict: bool = True,
    ) -> dict[str, Any]:
        """Send an operation; json.dumps escapes NUL and lone surrogates as \\u escapes."""
        body = json.dumps({"query": query, "variables": variables or {}})
        return await self.raw(body, token, strict)

    async def raw_variables(
        self, query: str, variables_json: str, token: str | None = None, strict: bool = True
    ) -> dict[str, Any]:
        """Send an operation whose variables are raw JSON text (NaN, 1e400, deep nesting)."""
        body = '{"query": ' + json.dumps(query) + ', "variables": ' + variables_json + "}"
        return await self.raw(body, token, strict)

    async def state(self) -> dict[str, Any]:
        """Row counts of every table and a digest of every column a mutation can change."""
        digests = ", ".join(
            f"(SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), ''))"
            f" FROM ({query}) r) AS {table}"
            for table, query in FINGERPRINTS.items()
        )
        async with self.factory.engine.connect() as conn:
            row = (await conn.execute(text(f"SELECT {digests}"))).mappings().one()
        return {"rows": await self.factory.snapshot(), "digests": dict(row)}

    async def create(self, account: Account, name: str, graph: object = None) -> str:
        """A new workflow (version 1) in the account's workspace; returns its ID."""
        variables = {"input": {"workspaceId": account.workspace_id, "name": name, "graph": graph}}
        body = await self.gql(CREATE, variables, account.token)
        assert body["data"]["workflowCreate"]["userErrors"] == [], body
        return body["data"]["workflowCreate"]["workflow"]["id"]

    async def save(self, account: Account, workflow_id: str, base: int, graph: object) -> None:
        """Save ``graph`` as version ``base + 1``."""
        variables = {"input": {"workflowId": workflow_id, "graph": graph, "baseVersion": base}}
        body = await self.gql(SAVE, variables, account.token)
        assert body["data"]["workflowSave"]["userErrors"] == [], body


@asynccontextmanager
async def nothing_written(factory: Factory) -> AsyncIterator[None]:
    """Assert that the block changed no row of any table (counts, and the mutable ones'
    contents)."""
    before = await factory.snapshot()
    yield
    assert await factory.snapshot() == before
