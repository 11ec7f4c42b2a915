"""Each GraphQL operation counted, timed (``flowdeck_graphql_operations_total``,
``flowdeck_graphql_operation_duration_seconds``) and, when traces are on, a span."""

from __future__ import annotations

import time
from collections.abc import Iterator

from opentelemetry.trace import Status, StatusCode
from strawberry.extensions import SchemaExtension

from app import tracing
from app.metrics import GRAPHQL_DURATION, GRAPHQL_OPERATIONS


class OperationMetrics(SchemaExtension):
    """Count every operation by type and outcome; time queries and mutations; trace each
    one (its span is current while it runs, so a run it queues joins its trace)."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        connection = getattr(self.execution_context.context, "connection", None)
        headers = connection.headers if connection is not None else {}
        with tracing.server_span("graphql", headers) as span:
            yield
            execution = self.execution_context
            try:
                kind = execution.operation_type.value
            except Exception:  # no document (it did not parse) or no such operation
                kind = "unknown"
            result = execution.result
            errors = (getattr(result, "errors", None) or []) if result is not None else []
            GRAPHQL_OPERATIONS.labels(kind, "error" if errors else "ok").inc()
            if kind != "subscription":  # a subscription lasts as long as its client wants
                GRAPHQL_DURATION.labels(kind).observe(time.perf_counter() - started)
            if span is not None:
                name = execution.operation_name
                span.update_name(f"{kind} {name}" if name else kind)
                span.set_attribute("graphql.operation.type", kind)
                if name:
                    span.set_attribute("graphql.operation.name", name)
                if errors:
                    codes = sorted(
                        {str((e.extensions or {}).get("code", "GRAPHQL_ERROR")) for e in errors}
                    )
                    span.set_status(Status(StatusCode.ERROR, ", ".join(codes)))
