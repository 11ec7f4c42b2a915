"""The floor of the read scenarios: the same answers by plain psycopg, JSON built in PostgreSQL.

A bare ASGI app (no framework) under uvicorn with uvloop and httptools. ``POST /editor`` and
``POST /list`` take the GraphQL request body the API gets (only its variables are read) and
answer the same ``{"data": ...}`` document the API does, built by ONE statement each that
also signs the caller in (the token's hash, its user, the membership that makes the object
visible). What Flowdeck adds on top (the HTTP stack, GraphQL parsing, validation and
execution, its own rules) is what the read scenarios compare with it.

Environment: DATABASE_URL.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

pool: AsyncConnectionPool | None = None


def _sql_id(kind: str, column: str) -> str:
    # encode_id in SQL: base64url("Kind:uuid") without padding (under 76 characters: no
    # line break from encode()).
    return (
        f"rtrim(translate(encode(convert_to('{kind}:' || {column}::text, 'UTF8'), 'base64'),"
        " '+/', '-_'), '=')"
    )


SIGNED_IN = """
  JOIN api_tokens t ON t.token_hash = %(hash)s
   AND (t.expires_at IS NULL OR t.expires_at > now())
  JOIN memberships m ON m.user_id = t.user_id AND m.workspace_id = {workspace}"""

EDITOR = f"""
SELECT json_build_object('data', json_build_object('workflow', json_build_object(
  'id', {_sql_id("Workflow", "w.id")}, 'name', w.name, 'description', w.description,
  'isTemplate', w.is_template, 'createdAt', w.created_at, 'updatedAt', w.updated_at,
  'currentVersion', json_build_object(
    'id', {_sql_id("WorkflowVersion", "v.id")}, 'number', v.number, 'message', v.message,
    'createdAt', v.created_at,
    'createdBy', (SELECT json_build_object('id', {_sql_id("User", "u.id")}, 'name', u.name)
                  FROM users u WHERE u.id = v.created_by_id),
    'restoredFrom', v.restored_from, 'graph', v.graph,
    'diagnostics', (SELECT coalesce(json_agg(json_build_object(
        'severity', d->>'severity', 'code', d->>'code', 'message', d->>'message',
        'nodeId', d->>'nodeId', 'edgeId', d->>'edgeId')), '[]')
      FROM jsonb_array_elements(v.diagnostics) d)))))::text
FROM workflows w
{SIGNED_IN.format(workspace="w.workspace_id")}
JOIN workflow_versions v ON v.workflow_id = w.id AND v.number = w.current_version
WHERE w.id = %(id)s"""

LIST = f"""
SELECT json_build_object('data', json_build_object('workspace', json_build_object(
  'workflows', json_build_object('edges', coalesce((
    SELECT json_agg(json_build_object('node', json_build_object(
      'id', {_sql_id("Workflow", "w.id")}, 'name', w.name,
      'versions', json_build_object('edges', (
        SELECT coalesce(json_agg(json_build_object('node', json_build_object('number', v.number))
                                 ORDER BY v.number DESC), '[]')
        FROM (SELECT number FROM workflow_versions
              WHERE workflow_id = w.id ORDER BY number DESC LIMIT %(versions)s) v))))
      ORDER BY w.updated_at DESC, w.id DESC)
    FROM (SELECT id, name, updated_at FROM workflows WHERE workspace_id = %(ws)s
          ORDER BY updated_at DESC, id DESC LIMIT %(first)s) w), '[]')))))::text
FROM workspaces s
{SIGNED_IN.format(workspace="s.id")}
WHERE s.id = %(ws)s"""

NOT_FOUND = b'{"data": null, "errors": [{"message": "Not found"}]}'


def _uuid(opaque: str) -> str:
    padded = opaque + "=" * (-len(opaque) % 4)
    return base64.urlsafe_b64decode(padded).decode().partition(":")[2]


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Any, send: Any) -> None:
    global pool
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            pool = AsyncConnectionPool(
                os.environ["DATABASE_URL"],
                min_size=10,
                max_size=10,
                kwargs={"autocommit": True},
                open=False,
            )
            await pool.open(wait=True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            assert pool is not None
            await pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST /editor or /list with a GraphQL body: the answer; GET /healthz: ready."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["raw_path"] == b"/healthz":
        await _send(send, 200, b"{}")
        return
    variables = orjson.loads(await _body(receive))["variables"]
    authorization = dict(scope["headers"]).get(b"authorization", b"").decode()
    token = authorization.removeprefix("Bearer ")
    params: dict[str, Any] = {"hash": hashlib.sha256(token.encode()).hexdigest()}
    if scope["raw_path"] == b"/editor":
        statement, params["id"] = EDITOR, _uuid(variables["id"])
    else:
        statement = LIST
        params |= {"ws": _uuid(variables["workspaceId"]), "first": variables["first"]}
        params["versions"] = 5  # the scenario's versions(first: 5)
    assert pool is not None
    async with pool.connection() as conn:
        row = await (await conn.execute(statement, params)).fetchone()
    await _send(send, 200, row[0].encode() if row else NOT_FOUND)
