"""Running workers: procrastinate's worker, the schedule tick, stalled-job recovery, pruning."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import procrastinate
import procrastinate.jobs
from sqlalchemy import bindparam, text

from app.engine.states import OPEN_RUN
from app.worker.context import WorkerContext
from app.worker.queue import RUNS_QUEUE
from app.worker.retention import retention_loop
from app.worker.schedules import tick

log = logging.getLogger(__name__)

# Finished jobs are deleted when they succeed; the others are kept this long for inspection.
KEEP_FINISHED_JOBS_HOURS = 72


# Non-terminal runs whose job is gone or over (or that never had one and whose lease ran
# out): handed to a fresh job (the same job id is never
# re-queued, so a worker that wakes up late finishes only its own, stale, job).
STRANDED_RUNS = text(
    """
    SELECT r.id FROM runs r
    LEFT JOIN procrastinate_jobs j ON j.id = r.job_id
    WHERE r.status IN :open
      AND (j.id IS NULL OR j.status NOT IN ('todo', 'doing', 'aborting'))
      -- A run driven where it was queued has no job while its process holds its lease.
      AND (r.lease_until IS NULL OR r.lease_until < now())
    ORDER BY r.queued_at
    LIMIT 100
    FOR UPDATE OF r SKIP LOCKED
    """
).bindparams(bindparam("open", value=sorted(s.value for s in OPEN_RUN), expanding=True))


async def recover_stalled(worker: WorkerContext) -> int:
    """Hand the runs of workers that stopped heartbeating (and stranded runs) to new jobs."""
    manager = worker.jobs.job_manager
    stalled = await manager.get_stalled_jobs(
        seconds_since_heartbeat=worker.settings.worker_stalled_seconds
    )
    for job in stalled:
        if job.id is None:  # only a job not yet deferred has none; these come from the table
            continue
        try:
            await manager.finish_job_by_id_async(
                job_id=job.id, status=procrastinate.jobs.Status.FAILED, delete_job=False
            )
        except Exception:  # finished meanwhile, or another worker got to it first
            log.info("stalled job not finished", extra={"job_id": job.id}, exc_info=True)
    recovered = 0
    async with worker.sessions() as session, session.begin():
        for (run_id,) in (await session.execute(STRANDED_RUNS)).all():
            await worker.queue.defer_drive(session, run_id)
            recovered += 1
    if recovered:
        log.warning("handed runs to new jobs", extra={"count": recovered})
    return recovered


async def maintenance_loop(worker: WorkerContext) -> None:
    """Every few seconds: recover stalled jobs; hourly: prune old finished jobs."""
    settings = worker.settings
    interval = max(0.5, settings.worker_stalled_seconds / 4)
    last_prune = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            await recover_stalled(worker)
            if loop.time() - last_prune > 3600:
                await worker.jobs.job_manager.delete_old_jobs(
                    nb_hours=KEEP_FINISHED_JOBS_HOURS,
                    include_failed=True,
                    include_cancelled=True,
                    include_aborted=True,
                )
                last_prune = loop.time()
        except Exception:  # the database may be restarting; try again next tick
            log.warning("worker maintenance failed", exc_info=True)
        await asyncio.sleep(interval)


async def schedule_loop(worker: WorkerContext) -> None:
    """Every ``schedule_tick_seconds``: fire the schedules that are due."""
    while True:
        try:
            await tick(worker)
        except Exception:  # the database may be restarting; try again next tick
            log.warning("schedule tick failed", exc_info=True)
        await asyncio.sleep(worker.settings.schedule_tick_seconds)


async def run_worker(worker: WorkerContext, *, install_signal_handlers: bool) -> None:
    """Consume run jobs until cancelled (or, with signal handlers, until SIGTERM/SIGINT)."""
    settings = worker.settings
    maintenance = asyncio.create_task(maintenance_loop(worker))
    schedules = asyncio.create_task(schedule_loop(worker))
    pruning = asyncio.create_task(retention_loop(worker))
    try:
        await worker.jobs.run_worker_async(
            queues=[RUNS_QUEUE],
            concurrency=settings.worker_concurrency,
            fetch_job_polling_interval=1.0,
            abort_job_polling_interval=1.0,
            update_heartbeat_interval=settings.worker_heartbeat_seconds,
            stalled_worker_timeout=settings.worker_stalled_seconds,
            additional_context={"worker": worker},
            install_signal_handlers=install_signal_handlers,
            delete_jobs="successful",
            shutdown_graceful_timeout=5,
        )
    finally:
        for task in (maintenance, schedules, pruning):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
