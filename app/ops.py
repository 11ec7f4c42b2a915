"""Operator endpoints: /healthz (process up), /readyz (database and migrations), /metrics."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.db import libpq_url
from app.errors import database_error_summary
from app.migrate import head_revision
from app.runtime import Runtime

log = logging.getLogger(__name__)

READY_KEY = "ready"


async def healthz(request: Request) -> Response:
    """The process is up and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers and its migrations are at this code's head.

    Each call asks the database afresh over a connection of its own, within
    FLOWDECK_READINESS_TIMEOUT_SECONDS: the answer follows the database within about a
    second either way, and a pool busy with slow requests does not make it lie.
    """
    runtime: Runtime = request.app.state.runtime
    head = head_revision()
    try:
        async with asyncio.timeout(runtime.settings.readiness_timeout_seconds):
            current = await _database_revision(runtime.url)
    except (psycopg.Error, OSError, TimeoutError) as error:
        _note_readiness(request, False, error)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    _note_readiness(request, True, None)
    body = {"status": "ready", "database": "ok", "migration": current, "head": head}
    if current != head:
        body["status"] = "migrating"
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


async def _database_revision(url: str) -> str | None:
    async with await psycopg.AsyncConnection.connect(
        libpq_url(url), autocommit=True, application_name="flowdeck-readyz"
    ) as conn:
        cursor = await conn.execute(
            "SELECT CASE WHEN to_regclass('alembic_version') IS NOT NULL"
            " THEN (SELECT version_num FROM alembic_version) END"
        )
        row = await cursor.fetchone()
        return None if row is None else row[0]


def _note_readiness(request: Request, ready: bool, error: BaseException | None) -> None:
    """Log when the database goes away or comes back, once per change, without its text."""
    previous = getattr(request.app.state, READY_KEY, None)
    setattr(request.app.state, READY_KEY, ready)
    if ready and previous is False:
        log.info("database reachable again")
    elif not ready and previous is not False and error is not None:
        summary = database_error_summary(error) if not isinstance(error, TimeoutError) else {}
        log.warning("database unreachable", extra={"error_class": type(error).__name__, **summary})


async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
