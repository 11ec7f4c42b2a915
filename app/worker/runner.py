"""Running workers: procrastinate's worker, the schedule tick, stalled-job recovery, pruning.

A worker rides out database outages. Its queries wait for the database to come back (see
``SteadyConnector``), its loops carry on after any failure, and procrastinate's worker is
started again should it stop on its own. After an outage a worker waits before it judges
other workers stalled: they were cut off too, and need a moment to say they are alive.
A worker never judges its own jobs: a worker that runs its maintenance is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

import procrastinate
import procrastinate.jobs
from procrastinate.worker import Worker
from sqlalchemy import bindparam, text

from app.db import RECONNECT_SECONDS
from app.engine.nodes.base import load_catalogue
from app.engine.states import OPEN_RUN
from app.errors import database_unavailable
from app.outage import DATABASE, MAX_DELAY, Backoff, DatabaseWatch, every
from app.worker.context import WorkerContext
from app.worker.queue import DRIVING, POOL_WAIT_SECONDS, RUNS_QUEUE
from app.worker.retention import retention_loop
from app.worker.schedules import tick

log = logging.getLogger(__name__)

# Finished jobs are deleted when they succeed; the others are kept this long for inspection.
KEEP_FINISHED_JOBS_HOURS = 72
# A job the database says this worker holds, that it is not driving, fetched this long ago:
# its fetch was applied but its answer lost (the connection died). Handed to a new job.
ORPHANED_JOB_SECONDS = 30


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

ORPHANED_JOBS = text(
    """
    SELECT j.id FROM procrastinate_jobs j
    WHERE j.status = 'doing' AND j.worker_id = :worker AND NOT (j.id = ANY(:driving))
      AND (SELECT max(e.at) FROM procrastinate_events e
           WHERE e.job_id = j.id AND e.type = 'started')
          < now() - make_interval(secs => :seconds)
    """
)


def recovery_grace_seconds(worker: WorkerContext) -> float:
    """How long after an outage a worker waits before it judges others stalled: time for
    them to reconnect (a pool starts over within RECONNECT_SECONDS, a wait lasts at most
    POOL_WAIT_SECONDS) and to send a heartbeat, and for API processes to renew leases."""
    settings = worker.settings
    reconnect = RECONNECT_SECONDS + POOL_WAIT_SECONDS + MAX_DELAY
    return reconnect + max(settings.worker_stalled_seconds, settings.run_lease_seconds / 3)


async def recover_stalled(
    worker: WorkerContext, own_worker_id: int | None = None, *, watch: DatabaseWatch = DATABASE
) -> int:
    """Hand the runs of workers that stopped heartbeating (and stranded runs) to new jobs.

    Jobs of ``own_worker_id`` are never judged: this worker is alive, however slow. Nothing
    is judged until a while after the database (as ``watch`` saw it) came back.
    """
    manager = worker.jobs.job_manager
    # Silence is measured by the database's clock (its now() against last_heartbeat).
    stalled = await manager.get_stalled_jobs(
        seconds_since_heartbeat=worker.settings.worker_stalled_seconds
    )
    if watch.seconds_since_back() < recovery_grace_seconds(worker):
        return 0  # an outage just ended (or has not): the others are reconnecting
    for job in stalled:
        # Only a job not yet deferred has no id; these come from the table.
        if job.id is None or (own_worker_id is not None and job.worker_id == own_worker_id):
            continue
        try:
            await manager.finish_job_by_id_async(
                job_id=job.id, status=procrastinate.jobs.Status.FAILED, delete_job=False
            )
        except Exception as error:  # finished meanwhile, or another worker got to it first
            if database_unavailable(error):
                raise
            log.info("stalled job not finished", extra={"job_id": job.id})
    if own_worker_id is not None:
        await _finish_orphaned_jobs(worker, own_worker_id)
    recovered = 0
    async with worker.sessions() as session, session.begin():
        for (run_id,) in (await session.execute(STRANDED_RUNS)).all():
            await worker.queue.defer_drive(session, run_id)
            recovered += 1
    if recovered:
        log.warning("handed runs to new jobs", extra={"count": recovered})
    return recovered


async def _finish_orphaned_jobs(worker: WorkerContext, own_worker_id: int) -> None:
    """Fail the jobs this worker holds in the database but is not driving (see
    ORPHANED_JOB_SECONDS); their runs are stranded then, and handed on below."""
    params = {
        "worker": own_worker_id,
        "driving": sorted(DRIVING),
        "seconds": ORPHANED_JOB_SECONDS,
    }
    async with worker.sessions() as session:
        orphaned = (await session.execute(ORPHANED_JOBS, params)).scalars().all()
    for job_id in orphaned:
        await worker.jobs.job_manager.finish_job_by_id_async(
            job_id=job_id, status=procrastinate.jobs.Status.FAILED, delete_job=False
        )
        log.warning("job lost between its fetch and its answer", extra={"job_id": job_id})


async def _prune_jobs(worker: WorkerContext) -> None:
    await worker.jobs.job_manager.delete_old_jobs(
        nb_hours=KEEP_FINISHED_JOBS_HOURS,
        include_failed=True,
        include_cancelled=True,
        include_aborted=True,
    )


class _Maintenance:
    """Stalled-job recovery every few seconds, pruning of finished jobs hourly."""

    def __init__(self, worker: WorkerContext, jobs: Worker | None) -> None:
        self.worker = worker
        self.jobs = jobs
        self.last_prune: float | None = None

    async def __call__(self) -> None:
        await recover_stalled(self.worker, self.jobs.worker_id if self.jobs else None)
        now = asyncio.get_running_loop().time()
        if self.last_prune is None or now - self.last_prune > 3600:
            await _prune_jobs(self.worker)
            self.last_prune = now


def _procrastinate_worker(worker: WorkerContext) -> Worker:
    settings = worker.settings
    return Worker(
        worker.jobs,
        queues=[RUNS_QUEUE],
        concurrency=settings.worker_concurrency,
        fetch_job_polling_interval=1.0,
        abort_job_polling_interval=1.0,
        update_heartbeat_interval=settings.worker_heartbeat_seconds,
        # Only when a worker starts does procrastinate delete the rows of workers silent
        # this long; a live but slow worker whose row were deleted could fetch no more
        # jobs. Stalled jobs are found by heartbeat (FLOWDECK_WORKER_STALLED_SECONDS).
        stalled_worker_timeout=max(300.0, 10 * settings.worker_stalled_seconds),
        additional_context={"worker": worker},
        install_signal_handlers=False,
        delete_jobs="successful",
        shutdown_graceful_timeout=5,
    )


@contextlib.contextmanager
def _stop_on_signals(
    jobs: Worker, stopping: asyncio.Event, requested: Callable[[], bool]
) -> Iterator[None]:
    """SIGTERM and SIGINT stop the worker gracefully (its running jobs may finish); so does
    one that came during start-up, before these handlers (``requested``)."""
    loop = asyncio.get_running_loop()
    stop_jobs: Callable[[], None] = jobs.stop  # procrastinate's methods are not annotated

    def stop() -> None:
        stopping.set()
        stop_jobs()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop)
    # Checked once the handlers are in place: a signal from now on reaches them.
    if requested():
        stop()
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _supervise(jobs: Worker, stopping: asyncio.Event) -> None:
    """Run procrastinate's worker; should it stop without being asked, start it again."""
    backoff = Backoff()
    run: Callable[[], Awaitable[None]] = jobs.run  # procrastinate's methods are not annotated
    while not stopping.is_set():
        try:
            await run()
        except Exception as error:
            if database_unavailable(error):
                DATABASE.failed(error)
            else:
                log.exception("the job worker stopped; starting it again")
        else:
            if stopping.is_set():
                return
            log.warning("the job worker stopped; starting it again")
        await asyncio.sleep(backoff.next())


async def maintenance_loop(
    worker: WorkerContext, jobs: Worker | None = None, *, watch: DatabaseWatch = DATABASE
) -> None:
    """Every few seconds: recover stalled jobs; hourly: prune old finished jobs. Forever."""
    interval = max(0.5, worker.settings.worker_stalled_seconds / 4)
    await every(interval, _Maintenance(worker, jobs), "worker maintenance", logger=log, watch=watch)


async def schedule_loop(worker: WorkerContext, *, watch: DatabaseWatch = DATABASE) -> None:
    """Every ``schedule_tick_seconds``: fire the schedules that are due. Forever."""
    await every(
        worker.settings.schedule_tick_seconds,
        lambda: tick(worker),
        "schedule tick",
        logger=log,
        watch=watch,
    )


async def run_worker(
    worker: WorkerContext,
    *,
    install_signal_handlers: bool,
    stop_requested: Callable[[], bool] = lambda: False,
) -> None:
    """Consume run jobs until cancelled (or, with signal handlers, until SIGTERM/SIGINT, or
    at once when ``stop_requested()`` says one came before them)."""
    # Importing the node types holds the event loop for a second or two (more under load):
    # before the first job, not in the middle of one while its heartbeat waits.
    load_catalogue()
    jobs = _procrastinate_worker(worker)
    stopping = asyncio.Event()
    loops = [
        asyncio.create_task(maintenance_loop(worker, jobs)),
        asyncio.create_task(schedule_loop(worker)),
        asyncio.create_task(retention_loop(worker)),
    ]
    try:
        if install_signal_handlers:
            with _stop_on_signals(jobs, stopping, stop_requested):
                await _supervise(jobs, stopping)
        else:
            await _supervise(jobs, stopping)
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
