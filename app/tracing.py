"""OpenTelemetry traces: off unless the standard ``OTEL_*`` variables switch them on.

A trace starts at a GraphQL operation or a webhook delivery (continuing the caller's
``traceparent`` header when it sends one) or at a schedule's fire. A run queued there keeps
that span's W3C ``traceparent`` in its row (``runs.traceparent``), and whichever process
drives the run, now or after a crash, reads it back from the row: the run's span and a span
per step join the trace that queued it, across processes.

Off (the default), nothing is built: no exporter, no connection, and every helper here
returns at its first line. On, spans go through a batch processor whose thread does the
exporting: a slow or absent collector delays nothing and fails nothing (spans past the
queue are dropped).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
# How long a stopping process waits for its last spans to leave.
SHUTDOWN_SECONDS = 3.0

_propagator = TraceContextTextMapPropagator()


class _State:
    tracer: Tracer | None = None
    provider: Any = None


_state = _State()


def enabled() -> bool:
    """Whether this process records spans."""
    return _state.tracer is not None


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment switches traces on: an OTLP endpoint, or an exporter named in
    OTEL_TRACES_EXPORTER (``none`` is off), unless OTEL_SDK_DISABLED is true."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Switch traces on when the environment asks (see ``wanted``); True when on.

    ``service`` is the service name unless OTEL_SERVICE_NAME gives one. The SDK reads the
    other variables itself: OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout, compression),
    OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*.
    """
    if not wanted(environ):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(attributes))
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    for name in (n.strip() for n in names.split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name:
            log.warning("unknown OTEL_TRACES_EXPORTER ignored", extra={"exporter": name})
    use(provider)
    return True


def use(provider: Any) -> None:
    """Record spans through ``provider`` (an SDK TracerProvider), or none when None."""
    _state.provider = provider
    _state.tracer = None if provider is None else provider.get_tracer("flowdeck")


def shutdown() -> None:
    """Send the spans still queued (for at most a few seconds), then stop recording."""
    provider = _state.provider
    use(None)
    if provider is None:
        return
    # The SDK's shutdown waits for its exporter, which may be retrying an absent collector:
    # a daemon thread, waited for briefly, so that a stopping process never hangs on it.
    stopping = threading.Thread(target=provider.shutdown, daemon=True)
    stopping.start()
    stopping.join(SHUTDOWN_SECONDS)


def _parent(traceparent: str | None) -> otel_context.Context | None:
    if not traceparent:
        return None
    return _propagator.extract({TRACEPARENT: traceparent})


def current_traceparent() -> str | None:
    """The W3C traceparent of the span now current, to keep in a run's row (None when off
    or outside any span)."""
    if _state.tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextlib.contextmanager
def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any] | None = None
) -> Iterator[Span | None]:
    """A span for a request, current while the block runs, continuing the caller's trace
    when its ``traceparent`` header names one (None when off)."""
    tracer = _state.tracer
    if tracer is None:
        yield None
        return
    parent = _propagator.extract(headers)
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


def record_server_span(
    name: str,
    headers: Mapping[str, str],
    start_ns: int,
    attributes: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """A server span that began at ``start_ns`` and ends now, for work that only knew at
    its end that it was the request's answer (no-op when off); ``error`` (the error codes)
    marks it failed."""
    tracer = _state.tracer
    if tracer is None:
        return
    started = tracer.start_span(
        name,
        context=_propagator.extract(headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
        start_time=start_ns,
    )
    if error is not None:
        started.set_status(Status(StatusCode.ERROR, error))
    started.end()


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """A span inside the current one, current while the block runs (None when off)."""
    tracer = _state.tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=attributes) as started:
        yield started


def annotate(attributes: Mapping[str, Any]) -> None:
    """Set attributes on the span now current (nothing when off)."""
    if _state.tracer is None:
        return
    current = trace.get_current_span()
    for key, value in attributes.items():
        current.set_attribute(key, value)


def start_run_span(traceparent: str | None, attributes: Mapping[str, Any]) -> Span | None:
    """The span of one claim of a run, in the trace its row names (None when off)."""
    tracer = _state.tracer
    if tracer is None:
        return None
    return tracer.start_span(
        "run", context=_parent(traceparent), kind=SpanKind.CONSUMER, attributes=attributes
    )


def start_child_span(parent: Span | None, name: str, attributes: Mapping[str, Any]) -> Span | None:
    """A span under ``parent`` (None when there is no parent: off)."""
    tracer = _state.tracer
    if tracer is None or parent is None:
        return None
    return tracer.start_span(name, context=trace.set_span_in_context(parent), attributes=attributes)


def end_span(
    span: Span | None, attributes: Mapping[str, Any] | None = None, error: str | None = None
) -> None:
    """Set the last attributes of a span (an error marks it failed) and end it."""
    if span is None:
        return
    for key, value in (attributes or {}).items():
        if value is not None:
            span.set_attribute(key, value)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()
