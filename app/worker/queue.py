"""The job queue: procrastinate on Flowdeck's own PostgreSQL; a job only says "drive run X"."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import procrastinate
import psycopg
from procrastinate.connector import Notify
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import RECONNECT_SECONDS, libpq_url
from app.engine.executor import RunDriver
from app.engine.states import MAX_CRASHES
from app.errors import database_unavailable
from app.models import Run
from app.outage import DATABASE, Backoff, ride_out
from app.worker.context import WorkerContext
from app.worker.inline import InlineRuns

log = logging.getLogger(__name__)

DRIVE_TASK = "flowdeck.drive_run"
RUNS_QUEUE = "runs"
# How long a request for a pool connection waits (then tries again: see SteadyConnector).
POOL_WAIT_SECONDS = 5.0

# The ids of the jobs this process is driving now (a job the database says it holds but
# that is not here was lost between its fetch and its answer: see app.worker.runner).
DRIVING: set[int] = set()


class SteadyConnector(procrastinate.PsycopgConnector):
    """procrastinate's connector, riding out database outages.

    The queries a worker runs on its own (fetching jobs, heartbeats, finishing jobs, the
    maintenance queries) wait for the database to come back instead of raising, and so
    does listening for new jobs; procrastinate's worker never sees an outage. Queries run
    on a caller's connection (deferring a job in a transaction) are the caller's to retry.
    """

    async def open_async(self, pool: Any = None) -> None:
        """Open the pool, waiting for the database when it is away."""
        await ride_out(lambda: self._open_once(pool))

    async def _open_once(self, pool: Any) -> None:
        try:
            await super().open_async(pool)
        except Exception:
            # Forget a pool that could not connect, so that the next try makes another.
            if self._async_pool is not None and not self._pool_externally_set:
                await self._async_pool.close()
            self._async_pool = None
            raise

    async def execute_query_async(self, query: Any, **arguments: Any) -> None:
        run = super().execute_query_async
        await ride_out(lambda: run(query, **arguments))

    async def execute_query_one_async(self, query: Any, **arguments: Any) -> dict[str, Any]:
        run = super().execute_query_one_async
        return await ride_out(lambda: run(query, **arguments))

    async def execute_query_all_async(self, query: Any, **arguments: Any) -> list[dict[str, Any]]:
        run = super().execute_query_all_async
        return await ride_out(lambda: run(query, **arguments))

    async def listen_notify(self, on_notification: Notify, channels: Iterable[str]) -> None:
        listen = super().listen_notify
        backoff = Backoff()
        while True:  # returns only by cancellation, like procrastinate's own
            try:
                await listen(on_notification=on_notification, channels=channels)
            except Exception as error:
                if not database_unavailable(error):
                    raise
                DATABASE.failed(error)
                await asyncio.sleep(backoff.next())


async def driver_connection(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under a session, so a job is deferred in its transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: psycopg.AsyncConnection[Any] | None = raw.driver_connection
    assert driver is not None  # None only for a connection the pool invalidated or closed
    return driver


class ProcrastinateRunQueue:
    """The RunQueue port over procrastinate (``app`` is what a worker process runs), and
    over the runs an API process drives itself (``inline``, when it does)."""

    def __init__(self, app: procrastinate.App) -> None:
        self.app = app
        self.inline: InlineRuns | None = None

    def reserve(self) -> float | None:
        """A slot here for a run about to be written, and the lease it is born with; None
        when this process drives no runs or is full."""
        if self.inline is not None and self.inline.reserve():
            return self.inline.lease_seconds
        return None

    def release(self) -> None:
        """Give back a slot for a run that was not written."""
        if self.inline is not None:
            self.inline.unreserve()

    async def start(self, session: AsyncSession, run: Run) -> None:
        """Drive a new run here once the caller commits when it was born leased; else a job."""
        if self.inline is not None and run.lease_until is not None:
            self.inline.hold(session, run)
        else:
            await self.defer_drive(session, run.id)

    async def defer_drive(
        self, session: AsyncSession, run_id: uuid.UUID, *, schedule_at: datetime | None = None
    ) -> int:
        """Queue "drive run X" in the session's transaction; records the job id on the run."""
        task = self.app.tasks[DRIVE_TASK]
        connection = await driver_connection(session)
        configured = (
            task.configure(connection=connection, schedule_at=schedule_at)
            if schedule_at is not None
            else task.configure(connection=connection)
        )
        job_id = await configured.defer_async(run_id=str(run_id))
        await session.execute(update(Run).where(col(Run.id) == run_id).values(job_id=job_id))
        return job_id

    async def stop(self, session: AsyncSession, job_id: int) -> None:
        """Cancel a job not started yet, or ask its worker to abort it (in the transaction)."""
        await self.app.job_manager.cancel_job_by_id_async(
            job_id, abort=True, connection=await driver_connection(session)
        )


async def drive_run_task(context: procrastinate.JobContext, run_id: str) -> None:
    """The job: drive one run (resumable, so a retried job picks up where it stopped)."""
    worker: WorkerContext = context.additional_context["worker"]

    async def resume(session: AsyncSession, rid: uuid.UUID, wake_at: datetime) -> int:
        return await worker.queue.defer_drive(session, rid, schedule_at=wake_at)

    driver = RunDriver(
        sessions=worker.sessions,
        pool=worker.pool,
        settings=worker.settings,
        run_id=uuid.UUID(run_id),
        resume=resume,
        job_id=context.job.id,
        secrets=worker.secrets,
    )
    job_id = context.job.id
    if job_id is not None:
        DRIVING.add(job_id)
    try:
        outcome = await driver.drive()
    finally:
        DRIVING.discard(job_id or 0)
    log.info("run driven", extra={"run_id": run_id, "outcome": outcome})


def build_queue(url: str, *, max_connections: int = 10) -> ProcrastinateRunQueue:
    """The run queue over the database at ``url``, with Flowdeck's task registered."""
    connector = SteadyConnector(
        conninfo=libpq_url(url),
        min_size=1,
        max_size=max_connections,
        timeout=POOL_WAIT_SECONDS,
        reconnect_timeout=RECONNECT_SECONDS,
    )
    app = procrastinate.App(connector=connector)
    # An unexpected error re-drives the run a few times (each counts against its crash limit,
    # so it ends FAILED rather than looping). No job lock: see procrastinate issue 1599.
    retry = procrastinate.RetryStrategy(max_attempts=MAX_CRASHES + 1, wait=2)
    app.task(name=DRIVE_TASK, queue=RUNS_QUEUE, pass_context=True, retry=retry)(drive_run_task)
    return ProcrastinateRunQueue(app)
