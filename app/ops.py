"""Operator endpoints: /healthz (process up), /readyz (database and migrations), /metrics;
a worker serves /healthz, /readyz and /metrics on a port of its own (``endpoints_app``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg_pool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Metric, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.db import libpq_url
from app.errors import database_error_summary
from app.metrics import QUEUE_READ_ERRORS, exposition
from app.migrate import head_revision
from app.runtime import Runtime

log = logging.getLogger(__name__)

READY_KEY = "ready"


async def healthz(request: Request) -> Response:
    """The process is up and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers and its migrations are at this code's head.

    Each call asks the database afresh over a connection of its own, within
    FLOWDECK_READINESS_TIMEOUT_SECONDS: the answer follows the database within about a
    second either way, and a pool busy with slow requests does not make it lie.
    """
    runtime: Runtime = request.app.state.runtime
    head = head_revision()
    try:
        async with asyncio.timeout(runtime.settings.readiness_timeout_seconds):
            current = await _database_revision(runtime.url)
    except (psycopg.Error, OSError, TimeoutError) as error:
        _note_readiness(request, False, error)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    _note_readiness(request, True, None)
    body = {"status": "ready", "database": "ok", "migration": current, "head": head}
    if current != head:
        body["status"] = "migrating"
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


async def _database_revision(url: str) -> str | None:
    async with await psycopg.AsyncConnection.connect(
        libpq_url(url), autocommit=True, application_name="flowdeck-readyz"
    ) as conn:
        cursor = await conn.execute(
            "SELECT CASE WHEN to_regclass('alembic_version') IS NOT NULL"
            " THEN (SELECT version_num FROM alembic_version) END"
        )
        row = await cursor.fetchone()
        return None if row is None else row[0]


def _note_readiness(request: Request, ready: bool, error: BaseException | None) -> None:
    """Log when the database goes away or comes back, once per change, without its text."""
    previous = getattr(request.app.state, READY_KEY, None)
    setattr(request.app.state, READY_KEY, ready)
    if ready and previous is False:
        log.info("database reachable again")
    elif not ready and previous is not False and error is not None:
        summary = database_error_summary(error) if not isinstance(error, TimeoutError) else {}
        log.warning("database unreachable", extra={"error_class": type(error).__name__, **summary})


async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format: this process's counters, then
    the queue (read from the database now) and the connection pools."""
    runtime: Runtime = request.app.state.runtime
    families = [*await queue_families(runtime), *pool_families(runtime)]
    body = exposition() + generate_latest(_Families(families))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class _Families(CollectorRegistry):
    """A registry of metric families read once, for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        super().__init__(auto_describe=False)
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


# The partial index ix_runs_workflow_id_open holds only open runs: the scan is as long as
# the runs now queued or running, however many runs the table keeps.
QUEUE = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(queued_at)), 0)::float8"
    " FROM runs WHERE status = 'QUEUED'"
)


async def queue_families(runtime: Runtime) -> list[Metric]:
    """The queue's depth and the age of its oldest run, asked within the metrics timeout;
    nothing (and a counted error) when the database does not answer in time."""
    timeout = runtime.settings.metrics_query_timeout_seconds
    try:
        async with asyncio.timeout(timeout), runtime.pool.connection(timeout=timeout) as conn:
            row = await (await conn.execute(QUEUE)).fetchone()
    except (psycopg.Error, psycopg_pool.PoolTimeout, OSError, TimeoutError) as error:
        QUEUE_READ_ERRORS.inc()
        log.warning("metrics: queue not read", extra={"error_class": type(error).__name__})
        return []
    assert row is not None
    depth = GaugeMetricFamily(
        "flowdeck_queue_depth", "Runs queued (QUEUED), not yet started by any driver."
    )
    depth.add_metric([], row[0])
    age = GaugeMetricFamily(
        "flowdeck_queue_oldest_age_seconds",
        "Seconds the oldest queued run has waited (0 when none waits).",
    )
    age.add_metric([], row[1])
    return [depth, age]


def pool_families(runtime: Runtime) -> list[Metric]:
    """Connections of this process's pools: in use, idle, the most it may open, and the
    requests waiting for one. Pools: sessions (SQLAlchemy: GraphQL and services), direct
    (psycopg: run writes, webhooks), jobs (procrastinate's)."""
    labels = ["pool", "state"]
    connections = GaugeMetricFamily(
        "flowdeck_db_pool_connections", "Database connections of a pool, by state.", labels=labels
    )
    limit = GaugeMetricFamily(
        "flowdeck_db_pool_max", "Most connections a pool may open.", labels=["pool"]
    )
    waiting = GaugeMetricFamily(
        "flowdeck_db_pool_waiting",
        "Requests waiting for a connection of a psycopg pool.",
        labels=["pool"],
    )
    engine_pool: Any = runtime.engine.pool
    if hasattr(engine_pool, "checkedout"):
        connections.add_metric(["sessions", "in_use"], engine_pool.checkedout())
        connections.add_metric(["sessions", "idle"], engine_pool.checkedin())
        limit.add_metric(["sessions"], engine_pool.size() + engine_pool._max_overflow)
    psycopg_pools: list[tuple[str, Any]] = [("direct", runtime.pool)]
    with contextlib.suppress(Exception):  # not open yet (or closed): nothing to say
        psycopg_pools.append(("jobs", runtime.jobs.connector.pool))  # type: ignore[attr-defined]
    for name, pool in psycopg_pools:
        stats = pool.get_stats()
        size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
        connections.add_metric([name, "in_use"], size - available)
        connections.add_metric([name, "idle"], available)
        limit.add_metric([name], stats.get("pool_max", pool.max_size))
        waiting.add_metric([name], stats.get("requests_waiting", 0))
    return [connections, limit, waiting]


def endpoints_app(runtime: Runtime) -> Starlette:
    """/healthz, /readyz and /metrics, over a runtime: what a worker process serves."""
    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    )
    app.state.runtime = runtime
    return app
