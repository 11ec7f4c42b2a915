"""The ``POST /hooks/{id}`` endpoint: a delivery becomes a durable run.

Order of checks, cheapest first, and nothing is written until all pass: the URL id's
shape (404), the per-webhook rate (429), the body size (413), the webhook (404 when
unknown or disabled), the signature and its timestamp (401), the media type (415), the
JSON (400), the delivery id (400). A 202 is sent only after the run, its steps and its job
are committed: a 2xx means the run is durable. A repeated delivery id answers with the
first delivery's run; so does a signed delivery without one replayed as it was (its id is
then the digest of what its signature covers). With ``waitForResult`` the answer waits (at most
``FLOWDECK_WEBHOOK_WAIT_SECONDS``) for the run to end and carries its output.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from app import tracing
from app.encoding import dumps
from app.engine.executor import RunEnd
from app.engine.journal import DuplicateRun, StaleBirth
from app.errors import (
    SERVICE_UNAVAILABLE,
    UNAVAILABLE_MESSAGE,
    ErrorCode,
    InputErrors,
    database_unavailable,
)
from app.events import follow
from app.keyring import DecryptError
from app.logs import current_request_id, log_database_unavailable
from app.metrics import WEBHOOK_DELIVERIES
from app.models import RunStatus
from app.runtime import Runtime
from app.services import webhooks as webhook_service
from app.worker.inline import Driving

log = logging.getLogger(__name__)

TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
JSON_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)
MAX_BUCKETS = 10_000

WEBHOOK_REQUESTS = Counter(
    "flowdeck_webhook_requests_total", "Webhook deliveries, by response status.", ["status"]
)
# Outcomes of a delivery that was taken (beside the refusals' error codes).
ACCEPTED, COMPLETED, DUPLICATE = "ACCEPTED", "COMPLETED", "DUPLICATE"

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


def _answer(
    status: int, body: dict[str, Any], outcome: str, headers: dict[str, str] | None = None
) -> Response:
    WEBHOOK_REQUESTS.labels(str(status)).inc()
    WEBHOOK_DELIVERIES.labels(outcome).inc()
    tracing.annotate({"flowdeck.webhook.outcome": outcome})
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    error = {"code": code, "message": message}
    if status >= 500:
        error["requestId"] = current_request_id() or ""
    return _answer(status, {"error": error}, code, headers or None)


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


@dataclass(frozen=True, slots=True)
class _Received:
    """A delivery that passed the checks: its webhook, input and delivery id."""

    target: webhook_service.Delivery
    input: Any
    delivery: str | None


class HooksEndpoint:
    """``POST /hooks/{token}`` over a runtime: checks, then the run, then the answer."""

    def __init__(self, runtime: Runtime, encode_run_id: EncodeRunId) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.encode_run_id = encode_run_id
        self.limiter = RateLimiter(
            self.settings.webhook_rate_per_second, self.settings.webhook_rate_burst
        )
        self.targets = webhook_service.DeliveryTargets()

    async def handle(self, request: Request) -> Response:
        """The endpoint (a bound method: Starlette passes it the request), in a span of its
        own when traces are on (the URL id, a credential, is never in it)."""
        attributes = {"http.request.method": "POST", "http.route": "/hooks/{id}"}
        with tracing.server_span("webhook delivery", request.headers, attributes) as span:
            response = await self._guarded(request)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _guarded(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except Exception as error:
            if not database_unavailable(error):
                raise
            # Senders retry on 503: the delivery was not accepted, nothing of it was kept.
            log_database_unavailable(log, "webhook delivery: database unavailable", error)
            return _error(
                503,
                SERVICE_UNAVAILABLE,
                UNAVAILABLE_MESSAGE,
                **{"Retry-After": str(self.settings.retry_after_seconds)},
            )

    async def _handle(self, request: Request) -> Response:
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        # A target kept in memory that changed since is found out when the run is written
        # (nothing is): then the delivery is checked again against the stored webhook.
        for fresh in (False, True):
            received = await self._check(request, body, fresh=fresh)
            if isinstance(received, Response):
                return received
            async with self.runtime.sessions() as session:
                answer = await self._accept(session, received)
            if answer is not None:
                return answer
        return _error(
            503,
            "SERVICE_UNAVAILABLE",
            "The webhook is changing; send it again.",
            **{"Retry-After": "1"},
        )

    async def _read(self, request: Request) -> bytes | Response:
        """The body, or the answer refusing the request before any lookup (nothing written)."""
        settings = self.settings
        token = request.path_params["token"]
        if not TOKEN.fullmatch(token):
            return _error(404, "NOT_FOUND", "No such webhook.")
        wait = self.limiter.allow(token)
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
        return body

    async def _check(self, request: Request, body: bytes, *, fresh: bool) -> _Received | Response:
        """The delivery, or the answer refusing it (nothing written)."""
        token = request.path_params["token"]
        target = await self.targets.find(self.runtime.pool, token=token, fresh=fresh)
        if target is None:
            return _error(404, "NOT_FOUND", "No such webhook.")
        if target.require_signature:
            refused = self._check_signature(target, request, body)
            if refused is not None:
                return refused
        parsed = _parse(request, body)
        if isinstance(parsed, Response):
            return parsed
        try:
            delivery = webhook_service.delivery_id(request.headers)
        except InputErrors as error:
            return _error(400, "BAD_REQUEST", str(error))
        if delivery is None and target.require_signature:
            # Without an id, a signed delivery is known by its signed message: replayed within
            # the window as it was, it answers with the first delivery's run.
            timestamp = request.headers["x-flowdeck-timestamp"]
            delivery = webhook_service.signed_delivery_id(timestamp, body)
        return _Received(target=target, input=parsed, delivery=delivery)

    def _check_signature(
        self, target: webhook_service.Delivery, request: Request, body: bytes
    ) -> Response | None:
        """The 401 (or 500) of a delivery whose signature does not hold; None when it does."""
        try:
            problem = webhook_service.verify_signature(
                keyring=self.runtime.keyring,
                target=target,
                timestamp=request.headers.get("x-flowdeck-timestamp"),
                given=request.headers.get("x-flowdeck-signature"),
                body=body,
                now=time.time(),
                tolerance=self.settings.webhook_signature_tolerance_seconds,
            )
        except DecryptError:
            log.error(
                "webhook signing secret unreadable", extra={"webhook": str(target.webhook_id)}
            )
            return _error(500, "INTERNAL", "The webhook's signing secret is unreadable.")
        return None if problem is None else _error(401, "UNAUTHENTICATED", problem)

    async def _accept(self, session: AsyncSession, received: _Received) -> Response | None:
        """Start the run here when this process has room, else queue it for a worker.

        None when the run was not written because its webhook changed meanwhile.
        """
        runtime = self.runtime
        inline = runtime.inline
        if inline is not None and inline.has_room():
            try:
                new, plan = await webhook_service.new_delivery_run(
                    session,
                    target=received.target,
                    input=received.input,
                    delivery=received.delivery,
                    policy=runtime.graph_policy,
                    max_input_bytes=self.settings.max_run_input_bytes,
                )
            except InputErrors as error:
                return _refused(error)
            # Waiting for the result: run it through first and write it once; else write it
            # QUEUED, answer, and run it.
            waits = received.target.wait_for_result
            driving = inline.start_born(new, plan, queue_first=not waits)
            if driving is not None:
                return await self._answer_driven(session, received, driving, new.id)
        current = await self.targets.find(runtime.pool, token=received.target.token, fresh=True)
        if current != received.target:
            return None  # changed since it was kept: check the delivery again
        try:
            accepted = await webhook_service.deliver(
                session,
                queue=runtime.queue,
                target=received.target,
                input=received.input,
                delivery=received.delivery,
                policy=runtime.graph_policy,
                max_input_bytes=self.settings.max_run_input_bytes,
            )
        except InputErrors as error:
            await session.rollback()
            return _refused(error)
        await session.commit()
        return await self._answer_accepted(received, accepted)

    async def _answer_driven(
        self, session: AsyncSession, received: _Received, driving: Driving, run_id: uuid.UUID
    ) -> Response | None:
        """Answer for a run driven in this process, once it is written (2xx means durable)."""
        task, waits = driving.task, received.target.wait_for_result
        if waits:  # (the task's own failure, e.g. a repeated delivery, is read below)
            await asyncio.wait({task}, timeout=self.settings.webhook_wait_seconds)
        if not driving.written.is_set():
            written = asyncio.ensure_future(driving.written.wait())
            await asyncio.wait({written, task}, return_when=asyncio.FIRST_COMPLETED)
            written.cancel()
        if not driving.written.is_set():
            return await self._not_written(session, received, task)
        answer: dict[str, Any] = {"runId": self.encode_run_id(run_id), "duplicate": False}
        end = task.result() if task.done() and not task.cancelled() else None
        if waits and end is not None:
            answer |= {"status": end.status.value, "output": end.output, "error": end.error}
            return _answer(200, answer, COMPLETED)
        answer["status"] = (RunStatus.RUNNING if waits else RunStatus.QUEUED).value
        return _answer(202, answer, ACCEPTED)

    async def _not_written(
        self, session: AsyncSession, received: _Received, task: asyncio.Task[RunEnd | None]
    ) -> Response | None:
        """The run ended without being written: a repeated delivery id, its webhook changed
        (None: check the delivery again), or a fault."""
        try:
            task.result()
        except StaleBirth:
            return None
        except DuplicateRun:
            assert received.delivery is not None  # only an idempotency key can be taken
            try:
                accepted = await webhook_service.earlier_delivery(
                    session,
                    target=received.target,
                    delivery=received.delivery,
                    input=received.input,
                )
            except InputErrors as error:
                return _refused(error)
            return await self._answer_accepted(received, accepted)
        return _error(
            503,
            "SERVICE_UNAVAILABLE",
            "The run could not be stored; send the delivery again.",
            **{"Retry-After": "1"},
        )

    async def _answer_accepted(
        self, received: _Received, accepted: webhook_service.Accepted
    ) -> Response:
        """Answer for a run queued for a worker, or an earlier delivery's run."""
        answer: dict[str, Any] = {
            "runId": self.encode_run_id(accepted.run_id),
            "status": accepted.status.value,
            "duplicate": accepted.duplicate,
        }
        outcome = DUPLICATE if accepted.duplicate else ACCEPTED
        if received.target.wait_for_result:
            runtime = self.runtime
            end = await follow.wait_for_end(
                runtime.sessions,
                runtime.hub,
                run_id=accepted.run_id,
                at_most=self.settings.webhook_wait_seconds,
            )
            if end is not None:
                answer |= {"status": end.status.value, "output": end.output, "error": end.error}
                return _answer(200, answer, DUPLICATE if accepted.duplicate else COMPLETED)
        return _answer(202, answer, outcome)


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
    if ErrorCode.INPUT_INVALID in codes:
        # The body does not match the trigger's input schema: each place, as a path into the
        # body, and why.
        mismatches = [e for e in error.errors if e.code is ErrorCode.INPUT_INVALID]
        problems = [{"path": list(e.field or ())[2:], "message": e.message} for e in mismatches]
        message = "; ".join(e.message for e in mismatches)
        body = {"error": {"code": "INPUT_INVALID", "message": message, "problems": problems}}
        return _answer(422, body, "INPUT_INVALID")
    if ErrorCode.IDEMPOTENCY_CONFLICT in codes:
        return _error(
            409,
            "IDEMPOTENCY_CONFLICT",
            "This delivery id was used for a delivery with a different body.",
        )
    if ErrorCode.WORKFLOW_NOT_PUBLISHED in codes:
        return _error(409, "WORKFLOW_NOT_PUBLISHED", str(error))
    if ErrorCode.GRAPH_INVALID in codes or ErrorCode.NOT_FOUND in codes:
        return _error(422, "WORKFLOW_CANNOT_RUN", str(error))
    return _error(400, "BAD_REQUEST", str(error))
