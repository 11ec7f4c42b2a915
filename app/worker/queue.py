"""The job queue: procrastinate on Flowdeck's own PostgreSQL; a job only says "drive run X"."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

import procrastinate
import psycopg
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import libpq_url
from app.engine.executor import RunDriver
from app.engine.states import MAX_CRASHES
from app.models import Run
from app.worker.context import WorkerContext
from app.worker.inline import InlineRuns

log = logging.getLogger(__name__)

DRIVE_TASK = "flowdeck.drive_run"
RUNS_QUEUE = "runs"


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
    outcome = await driver.drive()
    log.info("run driven", extra={"run_id": run_id, "outcome": outcome})


def build_queue(url: str, *, max_connections: int = 10) -> ProcrastinateRunQueue:
    """The run queue over the database at ``url``, with Flowdeck's task registered."""
    connector = procrastinate.PsycopgConnector(
        conninfo=libpq_url(url), min_size=1, max_size=max_connections
    )
    app = procrastinate.App(connector=connector)
    # An unexpected error re-drives the run a few times (each counts against its crash limit,
    # so it ends FAILED rather than looping). No job lock: see procrastinate issue 1599.
    retry = procrastinate.RetryStrategy(max_attempts=MAX_CRASHES + 1, wait=2)
    app.task(name=DRIVE_TASK, queue=RUNS_QUEUE, pass_context=True, retry=retry)(drive_run_task)
    return ProcrastinateRunQueue(app)
