"""The ``POST /hooks/{id}`` endpoint: a delivery becomes a durable run.

Order of checks, cheapest first, and nothing is written until all pass: the URL id's
shape (404), the per-webhook rate (429), the body size (413), the webhook (404 when
unknown or disabled), the signature and its timestamp (401), the media type (415), the
JSON (400), the delivery id (400). A 202 is sent only after the run, its steps and its job
are committed: a 2xx means the run is durable. A repeated delivery id answers with the
first delivery's run. With ``waitForResult`` the answer waits (at most
``FLOWDECK_WEBHOOK_WAIT_SECONDS``) for the run to end and carries its output.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from app.errors import ErrorCode, InputErrors
from app.events import follow
from app.keyring import DecryptError
from app.runtime import Runtime
from app.services import webhooks as webhook_service

log = logging.getLogger(__name__)

TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
JSON_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)
MAX_BUCKETS = 10_000

WEBHOOK_REQUESTS = Counter(
    "flowdeck_webhook_requests_total", "Webhook deliveries, by response status.", ["status"]
)

EncodeRunId = Callable[[uuid.UUID], str]


class RateLimiter:
    """A token bucket per webhook URL id, in this process (least recently used evicted)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> float:
        """0 when the request may go on, else the seconds until it could."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    WEBHOOK_REQUESTS.labels(str(status)).inc()
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    return _answer(status, {"error": {"code": code, "message": message}}, headers or None)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            return None
    return bytes(chunks)


def hooks_endpoint(runtime: Runtime, encode_run_id: EncodeRunId) -> Callable[[Request], Any]:
    """The Starlette endpoint of ``POST /hooks/{token}`` over a runtime."""
    settings = runtime.settings
    limiter = RateLimiter(settings.webhook_rate_per_second, settings.webhook_rate_burst)

    async def endpoint(request: Request) -> Response:
        token = request.path_params["token"]
        if not TOKEN.fullmatch(token):
            return _error(404, "NOT_FOUND", "No such webhook.")
        wait = limiter.allow(token)
        if wait > 0:
            return _error(
                429,
                "RATE_LIMITED",
                f"Over {settings.webhook_rate_per_second:g} requests a second for this webhook.",
                **{"Retry-After": str(max(1, round(wait + 0.5)))},
            )
        try:
            body = await _read_body(request, settings.webhook_max_body_bytes)
        except ClientDisconnect:
            return _error(400, "BAD_REQUEST", "The client went away before sending its body.")
        if body is None:
            return _error(
                413,
                "PAYLOAD_TOO_LARGE",
                f"The body is over {settings.webhook_max_body_bytes} bytes.",
            )
        async with runtime.sessions() as session:
            target = await webhook_service.find_delivery_target(session, token=token)
            if target is None:
                return _error(404, "NOT_FOUND", "No such webhook.")
            hook = target.webhook
            if hook.require_signature:
                try:
                    problem = webhook_service.verify_signature(
                        keyring=runtime.keyring,
                        webhook=hook,
                        timestamp=request.headers.get("x-flowdeck-timestamp"),
                        given=request.headers.get("x-flowdeck-signature"),
                        body=body,
                        now=time.time(),
                        tolerance=settings.webhook_signature_tolerance_seconds,
                    )
                except DecryptError:
                    log.error("webhook signing secret unreadable", extra={"webhook": str(hook.id)})
                    return _error(500, "INTERNAL", "The webhook's signing secret is unreadable.")
                if problem is not None:
                    return _error(401, "UNAUTHENTICATED", problem)
            parsed = _parse(request, body)
            if isinstance(parsed, Response):
                return parsed
            try:
                delivery_id = webhook_service.delivery_id(request.headers)
            except InputErrors as error:
                return _error(400, "BAD_REQUEST", str(error))
            try:
                accepted = await webhook_service.deliver(
                    session,
                    queue=runtime.queue,
                    target=target,
                    input=parsed,
                    delivery_id=delivery_id,
                    policy=runtime.graph_policy,
                    max_input_bytes=settings.max_run_input_bytes,
                )
            except InputErrors as error:
                await session.rollback()
                return _refused(error)
            run_id = accepted.run.id
            answer: dict[str, Any] = {
                "runId": encode_run_id(run_id),
                "status": accepted.run.status.value,
                "duplicate": accepted.duplicate,
            }
            wait_for_result = hook.wait_for_result
            await session.commit()
        if wait_for_result:
            end = await follow.wait_for_end(
                runtime.sessions, runtime.hub, run_id=run_id, at_most=settings.webhook_wait_seconds
            )
            if end is not None:
                answer |= {"status": end.status.value, "output": end.output, "error": end.error}
                return _answer(200, answer)
        return _answer(202, answer)

    return endpoint


def _parse(request: Request, body: bytes) -> Any:
    """The JSON value of the body (None when empty), or the error response."""
    if not body.strip():
        return None
    media_type = request.headers.get("content-type", "").split(";")[0].strip()
    if not JSON_TYPE.fullmatch(media_type):
        return _error(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the body as JSON, with Content-Type: application/json.",
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return _error(400, "BAD_REQUEST", f"The body is not valid JSON: {error}")


def _refused(error: InputErrors) -> Response:
    codes = {e.code for e in error.errors}
    if ErrorCode.IDEMPOTENCY_CONFLICT in codes:
        return _error(
            409,
            "IDEMPOTENCY_CONFLICT",
            "This delivery id was used for a delivery with a different body.",
        )
    if ErrorCode.GRAPH_INVALID in codes or ErrorCode.NOT_FOUND in codes:
        return _error(422, "WORKFLOW_CANNOT_RUN", str(error))
    return _error(400, "BAD_REQUEST", str(error))
