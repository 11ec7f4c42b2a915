"""ASGI middleware: request ids and access logs, body size cap, per-request cleanups."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import SERVICE_UNAVAILABLE, UNAVAILABLE_MESSAGE, database_unavailable
from app.logs import (
    bind_request_id,
    current_request_id,
    log_database_unavailable,
    reset_request_id,
)
from app.metrics import HTTP_DURATION, HTTP_REQUESTS

log = logging.getLogger("flowdeck.http")

REQUEST_ID_HEADER = "x-request-id"
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CLEANUPS_KEY = "flowdeck.cleanups"
STARTED_KEY = "flowdeck.response_started"
UNEXPECTED_MESSAGE = "Unexpected error. It has been logged; quote the request id when reporting it."
KNOWN_ROUTES = ("/graphql", "/healthz", "/readyz", "/metrics")


HOOKS_PREFIX = "/hooks/"


class RequestContext:
    """Give each request an id (echoed in X-Request-ID), log it, time it, run its cleanups."""

    def __init__(self, app: ASGIApp, retry_after: int = 5) -> None:
        self.app = app
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = bind_request_id(request_id)
        scope[CLEANUPS_KEY] = []
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                scope[STARTED_KEY] = True
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:  # nothing raw reaches a client, whatever raised it
            status = await self._answer_failure(scope, send_with_id, error, status, request_id)
        finally:
            for cleanup in reversed(scope[CLEANUPS_KEY]):
                try:
                    await cleanup()
                except Exception as error:  # the answer is out: log it, keep serving
                    _log_failure("request cleanup failed", error)
            elapsed = time.perf_counter() - started
            path = scope.get("path", "")
            route = path if path in KNOWN_ROUTES else "other"
            if path.startswith(HOOKS_PREFIX):
                # A webhook's URL id is its credential: keep it out of logs and metrics.
                route = f"{HOOKS_PREFIX}{{id}}"
                path = f"{HOOKS_PREFIX}{path[len(HOOKS_PREFIX) :][:4]}…"
            if scope["type"] == "http":
                HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
                HTTP_DURATION.labels(route).observe(elapsed)
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            reset_request_id(token)

    async def _answer_failure(
        self, scope: Scope, send: Send, error: Exception, status: int, request_id: str
    ) -> int:
        """Answer an exception no handler caught: 503 for the database, else a masked 500."""
        unavailable = database_unavailable(error)
        _log_failure("unhandled error", error)
        if scope["type"] == "websocket":
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1013 if unavailable else 1011})
            return status
        if scope.get(STARTED_KEY):
            return status  # the response had begun: it can only be cut short
        code, message, answer = (
            (SERVICE_UNAVAILABLE, UNAVAILABLE_MESSAGE, 503)
            if unavailable
            else ("INTERNAL_SERVER_ERROR", UNEXPECTED_MESSAGE, 500)
        )
        headers = {"retry-after": str(self.retry_after)} if unavailable else None
        path = scope.get("path", "")
        body: dict[str, Any] = (
            _graphql_error_body(code, message, request_id)
            if path == "/graphql"
            else {"error": {"code": code, "message": message, "requestId": request_id}}
        )
        await JSONResponse(body, status_code=answer, headers=headers)(scope, _no_body, send)
        return answer


def _graphql_error_body(code: str, message: str, request_id: str | None) -> dict[str, Any]:
    return {
        "data": None,
        "errors": [{"message": message, "extensions": {"code": code, "requestId": request_id}}],
    }


def unexpected_error_body() -> dict[str, Any]:
    """A GraphQL response body saying only that something unexpected failed (logged)."""
    return _graphql_error_body("INTERNAL_SERVER_ERROR", UNEXPECTED_MESSAGE, current_request_id())


def _log_failure(message: str, error: Exception) -> None:
    if database_unavailable(error):
        log_database_unavailable(log, f"{message}: database unavailable", error)
    else:
        log.error(message, exc_info=(type(error), error, error.__traceback__))


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {
                "errors": [
                    {
                        "message": f"Request body over {self.max_bytes} bytes.",
                        "extensions": {"code": "PAYLOAD_TOO_LARGE"},
                    }
                ]
            },
            status_code=413,
        )
        await response(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised inside the app when a streamed body passes the cap."""
