"""Operator endpoints: /healthz (process up), /readyz (database and migrations), /metrics."""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.migrate import current_revision, head_revision
from app.runtime import Runtime

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    """The process is up and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers and its migrations are at this code's head."""
    runtime: Runtime = request.app.state.runtime
    head = head_revision()
    try:
        current = await current_revision(runtime.engine)
    except Exception as error:  # any failure to reach the database means not ready
        log.warning("readiness check failed", extra={"error": str(error)})
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    body = {"status": "ready", "database": "ok", "migration": current, "head": head}
    if current != head:
        body["status"] = "migrating"
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
