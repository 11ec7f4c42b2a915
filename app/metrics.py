"""Prometheus metrics of a Flowdeck process (API or worker), and the event loop watch.

Counters and histograms live in the process's default registry and are updated where the
thing happens, in memory: no metric adds a database statement to a run. What only the
database knows (the queue) and the pools' usage are read when /metrics is scraped
(``app/ops.py``). Label values come from small closed sets (statuses, triggers, node
types, outcomes): never a workflow, workspace or run id.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

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
    "GraphQL operations executed, by operation type and outcome (ok, or error when the "
    "answer carries errors).",
    ["type", "outcome"],
)
GRAPHQL_DURATION = Histogram(
    "flowdeck_graphql_operation_duration_seconds",
    "Time to execute a GraphQL query or mutation (parsing and validation included), by type.",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMPILED_QUERIES = Counter(
    "flowdeck_graphql_compiled_total",
    "POSTed queries by how the compiled path took them: answered (by a plan), declined (a "
    "plan, but the general path answered: an error to report), none (no plan: executed field "
    "by field).",
    ["outcome"],
)
SCHEDULE_FIRES = Counter(
    "flowdeck_schedule_fires_total",
    "Schedule fires, by outcome (STARTED, SKIPPED, FAILED).",
    ["outcome"],
)
SCHEDULE_LAG = Histogram(
    "flowdeck_schedule_lag_seconds",
    "How long after its due time a schedule fired (a catch-up fire after downtime counts "
    "from the time it fired for).",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
EVENT_LOOP_LAG = Histogram(
    "flowdeck_event_loop_lag_seconds",
    "How late the event loop ran a timer it was given (a blocked loop stalls every request).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RUNS_PRUNED = Counter(
    "flowdeck_runs_pruned_total",
    "Finished runs deleted (with their steps and events) for being older than their "
    "workspace's retention.",
)

# --- runs and steps ---------------------------------------------------------------------

RUNS_FINISHED = Counter(
    "flowdeck_runs_finished_total",
    "Runs that ended, by status (SUCCEEDED, FAILED, CANCELLED) and trigger (MANUAL, "
    "SCHEDULE, WEBHOOK, RETRY), counted by the process that ended them.",
    ["status", "trigger"],
)
RUN_DURATION = Histogram(
    "flowdeck_run_duration_seconds",
    "From a run's start (its first claim) to its end, waits included, by status and trigger "
    "(runs cancelled before they started are not observed).",
    ["status", "trigger"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
STEP_DURATION = Histogram(
    "flowdeck_step_duration_seconds",
    "From a step's first attempt to its end (retries and their backoff included), by node "
    "type and status (SUCCEEDED or FAILED).",
    ["node_type", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
             60, 300),
)  # fmt: skip
STEP_RETRIES = Counter(
    "flowdeck_step_retries_total",
    "Failed attempts of a step that were tried again, by node type.",
    ["node_type"],
)
RUN_CLAIMS = Counter(
    "flowdeck_run_claims_total",
    "Claims of a run by a driver (each bumps the run's attempt), by path: job (a worker's "
    "job claimed it in the database) or inline (the API process that queued it).",
    ["path"],
)
RUN_RESUMES = Counter(
    "flowdeck_run_resumes_total",
    "Claims of a run that had started before, by reason: crash (its driver died or lost its "
    "lease mid-run) or wake (it was released to wait, or stopped by a shutdown).",
    ["reason"],
)
RUNS_DRIVING = Gauge(
    "flowdeck_runs_driving",
    "Runs this process is driving now.",
    multiprocess_mode="livesum",
)

# --- webhooks and subscriptions ---------------------------------------------------------

WEBHOOK_DELIVERIES = Counter(
    "flowdeck_webhook_deliveries_total",
    "Webhook deliveries, by outcome: ACCEPTED (a new run), COMPLETED (a new run, answered "
    "with its result), DUPLICATE (an earlier delivery's run), or the refusal's error code.",
    ["outcome"],
)
SUBSCRIPTIONS = Gauge(
    "flowdeck_subscriptions_active",
    "GraphQL subscriptions open in this process, by field (runProgress, workflowRuns).",
    ["field"],
    multiprocess_mode="livesum",
)
WEBSOCKETS = Gauge(
    "flowdeck_websocket_connections",
    "GraphQL WebSocket connections open in this process.",
    multiprocess_mode="livesum",
)

QUEUE_READ_ERRORS = Counter(
    "flowdeck_queue_read_errors_total",
    "Scrapes of /metrics that could not read the queue from the database in time (the "
    "queue gauges are then left out).",
)

# Set (by `flowdeck serve --processes N`) for processes that share a port: each writes its
# values into files there, and a scrape of any of them sums every process's.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def exposition() -> bytes:
    """This process's metrics in the text format, or all the port's processes' together."""
    directory = os.environ.get(MULTIPROCESS_DIR)
    if not directory:
        return generate_latest()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_stopped() -> None:
    """A process sharing the port stops: its live gauges stop counting (counters stay)."""
    if os.environ.get(MULTIPROCESS_DIR):
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


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


def run_finished(
    status: str, trigger: str, started_at: datetime | None, finished_at: datetime | None
) -> None:
    """Count a run's end and observe its duration (when it had started)."""
    RUNS_FINISHED.labels(status, trigger).inc()
    if started_at is not None and finished_at is not None:
        seconds = (finished_at - started_at).total_seconds()
        RUN_DURATION.labels(status, trigger).observe(max(0.0, seconds))


_AT_COMMIT = "flowdeck.metrics_at_commit"


def at_commit(session: AsyncSession, record: Callable[[], None]) -> None:
    """Call ``record`` once the session's transaction commits (never if it rolls back).

    A service or a claim notes what it counts inside a transaction that may still fail;
    counting at commit keeps the metrics equal to what the database holds.
    """
    sync = session.sync_session
    pending: list[Callable[[], None]] | None = sync.info.get(_AT_COMMIT)
    if pending is None:
        pending = sync.info[_AT_COMMIT] = []
        event.listen(sync, "after_commit", _run_pending)
        event.listen(sync, "after_rollback", _drop_pending)
    pending.append(record)


def _run_pending(session: Any) -> None:
    pending = session.info.get(_AT_COMMIT) or []
    session.info[_AT_COMMIT] = []
    for record in pending:
        record()


def _drop_pending(session: Any) -> None:
    session.info[_AT_COMMIT] = []
