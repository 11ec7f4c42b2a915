"""The floor of the run scenarios: a webhook delivery's run written by plain psycopg.

A bare ASGI app (no framework) under uvicorn with uvloop and httptools. For each POST it
parses the JSON body, computes the output the benchmark workflow would (the same fields,
in Python, no expression language), and writes what Flowdeck writes for that run in ONE
statement: the run, one step per node and every event (RUN_QUEUED, RUN_STARTED, a
STEP_STARTED and STEP_SUCCEEDED per node, RUN_SUCCEEDED), with one NOTIFY; then it answers
with the output. What Flowdeck adds on top (its HTTP stack, the webhook lookup, signature and
delivery rules, the graph's execution, redaction) is what the run scenarios compare with it.

Environment: DATABASE_URL, FLOOR_WORKSPACE, FLOOR_WORKFLOW, FLOOR_VERSION (ids of a real
version, so the foreign keys hold), FLOOR_NODES (how many nodes the chain has).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from app.engine.journal import INSERT_SQL

pool: AsyncConnectionPool | None = None


def _params(body: Any, output: Any, nodes: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    ids = ["t", *(f"n{i}" for i in range(1, nodes - 1)), "out"]
    types = ["trigger", *(["transform.set"] * (nodes - 2)), "output"]
    text = orjson.dumps(output).decode()
    events: list[tuple[str, str | None, str | None, str | None]] = [
        ("RUN_QUEUED", "QUEUED", None, None),
        ("RUN_STARTED", "RUNNING", None, None),
    ]
    for node_id in ids:
        events += [("STEP_STARTED", None, node_id, None), ("STEP_SUCCEEDED", None, node_id, text)]
    events.append(("RUN_SUCCEEDED", "SUCCEEDED", None, text))
    return {
        "run": uuid.uuid4(),
        "workspace": os.environ["FLOOR_WORKSPACE"],
        "workflow": os.environ["FLOOR_WORKFLOW"],
        "version": os.environ["FLOOR_VERSION"],
        "version_number": 1,
        "trigger": "WEBHOOK",
        "input": orjson.dumps(body).decode(),
        "input_hash": hashlib.sha256(orjson.dumps(body)).hexdigest(),
        "key": None,
        "created_by": None,
        "traceparent": None,
        "channel": "flowdeck_run_events",
        "notify_type": "RUN_SUCCEEDED",
        "attempt": 1,
        "r_status": "SUCCEEDED",
        "r_output": text,
        "r_error": None,
        "r_error_node_id": None,
        "r_lease_until": None,
        "r_deadline_at": now,
        "r_started_at": now,
        "r_finished_at": now,
        "types": types,
        "doc": orjson.dumps(
            {
                "steps": [
                    {
                        "node_id": node_id,
                        "status": "SUCCEEDED",
                        "attempt": 1,
                        "input": orjson.Fragment(text),
                        "output": orjson.Fragment(text),
                        "started_at": now,
                        "finished_at": now,
                    }
                    for node_id in ids
                ],
                "events": [
                    {
                        "type": e[0],
                        "at": now,
                        "run_status": e[1],
                        "node_id": e[2],
                        "step_status": None if e[2] is None else "SUCCEEDED",
                        "attempt": None if e[2] is None else 1,
                        "output": None if e[3] is None else orjson.Fragment(e[3]),
                    }
                    for e in events
                ],
            }
        ).decode(),
    }


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


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST anything: the run is written and its output answered; GET /healthz: ready."""
    global pool
    if scope["type"] == "lifespan":
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
    if scope["raw_path"] == b"/healthz":
        await _send(send, 200, b"{}")
        return
    body = orjson.loads(await _body(receive))
    output = {"n": body["n"], "twice": body["n"] * 2}
    assert pool is not None
    async with pool.connection() as conn:
        await conn.execute(INSERT_SQL, _params(body, output, int(os.environ["FLOOR_NODES"])))
    await _send(send, 200, orjson.dumps({"status": "SUCCEEDED", "output": output}))
