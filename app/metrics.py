"""Prometheus metrics of the API process."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "flowdeck_http_requests_total",
    "HTTP requests served, by method, route and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "flowdeck_http_request_duration_seconds",
    "Time to serve an HTTP request, by route.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GRAPHQL_OPERATIONS = Counter(
    "flowdeck_graphql_operations_total",
    "GraphQL operations executed, by operation type and outcome.",
    ["type", "outcome"],
)
SCHEDULE_FIRES = Counter(
    "flowdeck_schedule_fires_total",
    "Schedule fires, by outcome (STARTED, SKIPPED, FAILED).",
    ["outcome"],
)
