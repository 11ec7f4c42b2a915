"""Prometheus metrics of the API process, and the event loop watch that feeds one of them."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

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
EVENT_LOOP_LAG = Histogram(
    "flowdeck_event_loop_lag_seconds",
    "How late the event loop ran a timer it was given (a blocked loop stalls every request).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# A stall this long is logged: something ran on the loop that should not have.
BLOCKED_LOOP_SECONDS = 0.5


async def watch_event_loop(interval: float = 0.1) -> None:
    """Measure, until cancelled, how late the loop wakes from each ``interval`` sleep."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + interval
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - expected)
        EVENT_LOOP_LAG.observe(lag)
        if lag >= BLOCKED_LOOP_SECONDS:
            log.warning("event loop blocked", extra={"seconds": round(lag, 3)})


RUNS_PRUNED = Counter(
    "flowdeck_runs_pruned_total",
    "Finished runs deleted (with their steps and events) for being older than their "
    "workspace's retention.",
)
