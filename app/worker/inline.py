"""Runs driven where they were queued: the API process that accepted a run drives it at once.

No job stands behind such a run; a lease does (``runs.lease_until``, judged by the
database's clock and renewed here every third of its length). A process that dies, or
stalls past its lease, loses the run: a worker's stranded-run recovery hands it to a job,
whose claim fences this process out. A cancelled run is stopped at once when its
RUN_CANCELLED event arrives (the process's event hub), and by the fence at its next write
in any case. Past ``inline_runs`` runs at once, new runs go to the workers as jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.executor import NewRun, RunDriver, RunEnd
from app.engine.journal import DuplicateRun, StaleBirth
from app.engine.plan import RunPlan
from app.models import Run
from app.outage import every, ride_out
from app.worker.context import WorkerContext

log = logging.getLogger(__name__)

RENEW = text(
    """
    UPDATE runs SET lease_until = now() + make_interval(secs => :seconds)
    WHERE id = ANY(:ids) AND lease_until IS NOT NULL
    """
)


@dataclass(frozen=True, slots=True)
class Driving:
    """A run being driven here: its task, and the event set once its row is written."""

    task: asyncio.Task[RunEnd | None]
    written: asyncio.Event


class InlineRuns:
    """The runs this process drives itself, their slots, their leases."""

    def __init__(self, worker: WorkerContext) -> None:
        self.worker = worker
        self.capacity = worker.settings.inline_runs
        self.lease_seconds = worker.settings.run_lease_seconds
        self._tasks: dict[uuid.UUID, asyncio.Task[RunEnd | None]] = {}
        self._reserved = 0
        self._renewer: asyncio.Task[None] | None = None

    # --- slots -------------------------------------------------------------------------

    def has_room(self) -> bool:
        """Whether this process can drive one more run now."""
        return len(self._tasks) + self._reserved < self.capacity

    def reserve(self) -> bool:
        """Take a slot for a run about to be queued; False when this process is full."""
        if len(self._tasks) + self._reserved >= self.capacity:
            return False
        self._reserved += 1
        return True

    def unreserve(self) -> None:
        """Give back a slot whose run was not queued after all (its transaction rolled back)."""
        self._reserved = max(0, self._reserved - 1)

    def hold(self, session: AsyncSession, run: Run) -> None:
        """Drive a run born leased to this process once the session's transaction commits
        (its slot given back if it rolls back). Call after ``reserve``."""
        loop = asyncio.get_running_loop()

        def committed(_: Any) -> None:
            loop.call_soon(self._start_queued, run)

        def rolled_back(_: Any) -> None:
            self.unreserve()

        sync = session.sync_session
        _listen_once(sync, "after_commit", committed, rolled_back)

    def _start_queued(self, run: Run) -> None:
        self._reserved = max(0, self._reserved - 1)
        driver = self._driver(run.id)
        self._track(run.id, driver, driver.drive_queued(run))

    # --- runs born here ----------------------------------------------------------------

    def start_born(self, new: NewRun, plan: RunPlan, *, queue_first: bool) -> Driving | None:
        """Drive a run that exists only in memory; None when this process is full.

        Its task's result is the run's end (None when it did not end here: released to wait,
        or taken over); it raises DuplicateRun when the run's idempotency key was taken (the
        run was never written). ``written`` is set once the run is durable.
        """
        if len(self._tasks) + self._reserved >= self.capacity:
            return None
        driver = self._driver(new.id)
        task = self._track(new.id, driver, driver.drive_born(new, plan, queue_first=queue_first))
        return Driving(task=task, written=driver.written)

    # --- running -----------------------------------------------------------------------

    def _driver(self, run_id: uuid.UUID) -> RunDriver:
        worker = self.worker

        async def resume(session: AsyncSession, rid: uuid.UUID, wake_at: datetime) -> int:
            return await worker.queue.defer_drive(session, rid, schedule_at=wake_at)

        return RunDriver(
            sessions=worker.sessions,
            pool=worker.pool,
            settings=worker.settings,
            run_id=run_id,
            resume=resume,
            secrets=worker.secrets,
            lease_seconds=self.lease_seconds,
        )

    def _track(
        self, run_id: uuid.UUID, driver: RunDriver, driving: Any
    ) -> asyncio.Task[RunEnd | None]:
        async def drive() -> RunEnd | None:
            try:
                outcome = await driving
            except (DuplicateRun, StaleBirth):
                raise  # never written: the caller answers for it
            except asyncio.CancelledError:
                raise
            except Exception:  # the lease or the workers take the run from here
                log.exception("run driven here failed", extra={"run_id": str(run_id)})
                return None
            log.debug("run driven", extra={"run_id": str(run_id), "outcome": outcome})
            return driver.end

        task = asyncio.create_task(drive(), name=f"run {run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))
        return task

    def run_event(self, run_id: uuid.UUID, event_type: str) -> None:
        """An event of some run arrived: a cancelled run driven here stops now."""
        if event_type == "RUN_CANCELLED":
            task = self._tasks.get(run_id)
            if task is not None:
                task.cancel()

    @property
    def active(self) -> int:
        """How many runs this process is driving now."""
        return len(self._tasks)

    async def start(self) -> None:
        """Start renewing the leases."""
        self._renewer = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        """Stop every run driven here (each is released to resume elsewhere), then renewing."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

    async def _renew_forever(self) -> None:
        await every(self.lease_seconds / 3, self._renew, "renewing the leases of runs", logger=log)

    async def _renew(self) -> None:
        ids = list(self._tasks)
        if not ids:
            return
        # Through an outage, renewed the moment the database is back (a worker waits a
        # while after an outage before it takes runs whose lease ran out meanwhile).
        await ride_out(lambda: self._renew_once(ids))

    async def _renew_once(self, ids: list[uuid.UUID]) -> None:
        async with self.worker.sessions() as session, session.begin():
            await session.execute(RENEW, {"seconds": self.lease_seconds, "ids": ids})


def _listen_once(
    session: Any, event: str, on_event: Callable[[Any], None], on_rollback: Callable[[Any], None]
) -> None:
    """Call ``on_event`` at the session's next commit, or ``on_rollback`` at its rollback."""
    from sqlalchemy import event as sa_event

    fired = False

    def committed(target: Any) -> None:
        nonlocal fired
        if not fired:
            fired = True
            on_event(target)

    def rolled_back(target: Any) -> None:
        nonlocal fired
        if not fired:
            fired = True
            on_rollback(target)

    sa_event.listen(session, event, committed, once=True)
    sa_event.listen(session, "after_rollback", rolled_back, once=True)
