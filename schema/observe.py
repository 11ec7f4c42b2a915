"""Each GraphQL operation counted and timed (``flowdeck_graphql_operations_total``,
``flowdeck_graphql_operation_duration_seconds``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from app.metrics import GRAPHQL_DURATION, GRAPHQL_OPERATIONS


class OperationMetrics(SchemaExtension):
    """Count every operation by type and outcome; time queries and mutations."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        execution = self.execution_context
        try:
            kind = execution.operation_type.value
        except Exception:  # no document (it did not parse) or no such operation
            kind = "unknown"
        result = execution.result
        outcome = "error" if result is not None and getattr(result, "errors", None) else "ok"
        GRAPHQL_OPERATIONS.labels(kind, outcome).inc()
        if kind != "subscription":  # a subscription lasts as long as its client wants
            GRAPHQL_DURATION.labels(kind).observe(time.perf_counter() - started)
