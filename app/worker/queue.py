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

from app.db import libpq_url
from app.engine.executor import MAX_CRASHES, RunDriver
from app.models import Run

log = logging.getLogger(__name__)

DRIVE_TASK = "flowdeck.drive_run"
RUNS_QUEUE = "runs"


async def driver_connection(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under a session, so a job is deferred in its transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


async def defer_drive(
    queue: procrastinate.App,
    session: AsyncSession,
    run_id: uuid.UUID,
    *,
    schedule_at: datetime | None = None,
) -> int:
    """Queue "drive run X" in the session's transaction; records the job id on the run."""
    options: dict[str, Any] = {"connection": await driver_connection(session)}
    if schedule_at is not None:
        options["schedule_at"] = schedule_at
    job_id = await queue.tasks[DRIVE_TASK].configure(**options).defer_async(run_id=str(run_id))
    await session.execute(update(Run).where(Run.id == run_id).values(job_id=job_id))  # type: ignore[arg-type]
    return job_id


async def stop_job(queue: procrastinate.App, session: AsyncSession, job_id: int) -> None:
    """Cancel a job not started yet, or ask its worker to abort it (in the transaction)."""
    await queue.job_manager.cancel_job_by_id_async(
        job_id, abort=True, connection=await driver_connection(session)
    )


async def drive_run_task(context: procrastinate.JobContext, run_id: str) -> None:
    """The job: drive one run (resumable, so a retried job picks up where it stopped)."""
    runtime = context.additional_context["runtime"]
    queue = context.app
    assert queue is not None

    async def resume(session: AsyncSession, rid: uuid.UUID, wake_at: datetime) -> None:
        await defer_drive(queue, session, rid, schedule_at=wake_at)

    driver = RunDriver(
        runtime.sessions,
        runtime.settings,
        uuid.UUID(run_id),
        resume,
        job_id=context.job.id,
        keyring=runtime.keyring,
    )
    outcome = await driver.drive()
    log.info("run driven", extra={"run_id": run_id, "outcome": outcome})


def build_queue(url: str, *, max_connections: int = 10) -> procrastinate.App:
    """The procrastinate app over the database at ``url``, with Flowdeck's task."""
    connector = procrastinate.PsycopgConnector(
        conninfo=libpq_url(url), min_size=1, max_size=max_connections
    )
    app = procrastinate.App(connector=connector)
    # An unexpected error re-drives the run a few times (each counts against its crash limit,
    # so it ends FAILED rather than looping). No job lock: see procrastinate issue 1599.
    retry = procrastinate.RetryStrategy(max_attempts=MAX_CRASHES + 1, wait=2)
    app.task(name=DRIVE_TASK, queue=RUNS_QUEUE, pass_context=True, retry=retry)(drive_run_task)
    return app
