"""Running workers: procrastinate's worker plus the stalled-job recovery and job pruning."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import procrastinate

from app.worker.queue import RUNS_QUEUE

log = logging.getLogger(__name__)

# Finished jobs are deleted when they succeed; the others are kept this long for inspection.
KEEP_FINISHED_JOBS_HOURS = 72


async def recover_stalled(queue: procrastinate.App, stalled_seconds: float) -> int:
    """Give the jobs of workers that stopped heartbeating to other workers; how many."""
    manager = queue.job_manager
    jobs = await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_seconds)
    recovered = 0
    for job in jobs:
        try:
            await manager.retry_job(job)
            recovered += 1
        except Exception:  # another worker retried it first, or it finished meanwhile
            log.info("stalled job not retried", extra={"job_id": job.id}, exc_info=True)
    if recovered:
        log.warning("recovered stalled jobs", extra={"count": recovered})
    return recovered


async def maintenance_loop(queue: procrastinate.App, settings: Any) -> None:
    """Every few seconds: recover stalled jobs; hourly: prune old finished jobs."""
    interval = max(0.5, settings.worker_stalled_seconds / 4)
    last_prune = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            await recover_stalled(queue, settings.worker_stalled_seconds)
            if loop.time() - last_prune > 3600:
                await queue.job_manager.delete_old_jobs(
                    nb_hours=KEEP_FINISHED_JOBS_HOURS,
                    include_failed=True,
                    include_cancelled=True,
                    include_aborted=True,
                )
                last_prune = loop.time()
        except Exception:  # the database may be restarting; try again next tick
            log.warning("worker maintenance failed", exc_info=True)
        await asyncio.sleep(interval)


async def run_worker(
    queue: procrastinate.App, runtime: Any, *, install_signal_handlers: bool
) -> None:
    """Consume run jobs until cancelled (or, with signal handlers, until SIGTERM/SIGINT)."""
    settings = runtime.settings
    maintenance = asyncio.create_task(maintenance_loop(queue, settings))
    try:
        await queue.run_worker_async(
            queues=[RUNS_QUEUE],
            concurrency=settings.worker_concurrency,
            fetch_job_polling_interval=1.0,
            abort_job_polling_interval=1.0,
            update_heartbeat_interval=settings.worker_heartbeat_seconds,
            stalled_worker_timeout=settings.worker_stalled_seconds,
            additional_context={"runtime": runtime},
            install_signal_handlers=install_signal_handlers,
            delete_jobs="successful",
            shutdown_graceful_timeout=5,
        )
    finally:
        maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
