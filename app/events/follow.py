"""Following runs: a run's event log (replay after a seq, then the live tail, then done), a
run's end, a workflow's runs.

The loops behind ``runProgress``, ``workflowRuns`` and a webhook's ``waitForResult`` (for a
run driven elsewhere; one driven in the same process is awaited in memory).
NOTIFY only wakes it; it always reads the table after the last seq it saw, so a lost
wake-up costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.auth.principal import Principal
from app.engine.states import TERMINAL_RUN
from app.events.hub import EventHub
from app.models import TERMINAL_EVENTS, Run, RunEvent, RunStatus
from app.services import runs as run_service
from app.services.workflows import get_workflow

Sessions = async_sessionmaker[AsyncSession]

# Re-read the table this often even without a NOTIFY: a missed wake-up costs latency only.
POLL_SECONDS = 5.0
# A run list's catch-up read looks back this far past its previous look (commit lag).
CATCH_UP_MARGIN_SECONDS = 10.0
EVENTS_PER_READ = 500


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ended: its status, output and error."""

    status: RunStatus
    output: Any
    error: str | None


async def read_events(
    session: AsyncSession, *, run_id: uuid.UUID, after_seq: int, limit: int = EVENTS_PER_READ
) -> list[RunEvent]:
    """The events of a run after ``after_seq``, in order."""
    rows = await session.execute(
        select(RunEvent)
        .where(col(RunEvent.run_id) == run_id, col(RunEvent.seq) > after_seq)
        .order_by(col(RunEvent.seq))
        .limit(limit)
    )
    return list(rows.scalars())


async def follow_run(
    sessions: Sessions,
    hub: EventHub,
    *,
    run_id: uuid.UUID,
    after_seq: int = 0,
    poll_seconds: float = POLL_SECONDS,
) -> AsyncIterator[RunEvent]:
    """Every event of a run after ``after_seq``, then the live ones, until the terminal one."""
    last = max(after_seq, 0)
    # Watch before the first read: an event committed in between still wakes us.
    with hub.watch_run(run_id) as waiter:
        while True:
            async with sessions() as session:
                events = await read_events(session, run_id=run_id, after_seq=last)
                if not events:
                    status, last_seq = (
                        await session.execute(
                            select(col(Run.status), col(Run.last_event_seq)).where(
                                col(Run.id) == run_id
                            )
                        )
                    ).one()
            for event in events:
                yield event
                last = event.seq
                if event.type in TERMINAL_EVENTS:
                    return
            if not events:
                if last >= last_seq and status in TERMINAL_RUN:
                    return  # resumed after the terminal event: nothing more will come
                await waiter.wait(poll_seconds)


async def run_progress(
    sessions: Sessions,
    hub: EventHub,
    *,
    principal: Principal,
    run_id: uuid.UUID,
    after_seq: int | None,
) -> AsyncIterator[RunEvent]:
    """A caller's view of ``follow_run``: NOT_FOUND unless the run is in their workspaces."""
    async with sessions() as session:
        run = await run_service.get_run(session, principal=principal, run_id=run_id)
    async for event in follow_run(sessions, hub, run_id=run.id, after_seq=after_seq or 0):
        yield event


async def wait_for_end(
    sessions: Sessions, hub: EventHub, *, run_id: uuid.UUID, at_most: float
) -> RunEnd | None:
    """How the run ended, once it ends within ``at_most`` seconds; None if it did not.

    Only the run's row is read at each wake-up: the events between are not wanted.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + at_most
    with hub.watch_run(run_id) as waiter:
        while True:
            async with sessions() as session:
                status, output, error = (
                    await session.execute(
                        select(col(Run.status), col(Run.output), col(Run.error)).where(
                            col(Run.id) == run_id
                        )
                    )
                ).one()
            if status in TERMINAL_RUN:
                return RunEnd(status=status, output=output, error=error)
            left = deadline - loop.time()
            if left <= 0:
                return None
            # NOTIFY wakes us at once; the poll only covers a lost notification.
            await waiter.wait(min(left, 1.0))


async def workflow_runs(
    sessions: Sessions, hub: EventHub, *, principal: Principal, workflow_id: uuid.UUID
) -> AsyncIterator[Run]:
    """A workflow's runs each time one is queued, starts or ends (a live run list)."""
    async with sessions() as session:
        workflow = await get_workflow(session, principal=principal, workflow_id=workflow_id)
    sent: dict[uuid.UUID, RunStatus] = {}
    with hub.watch_workflow(workflow.id) as waiter:
        looked = datetime.now(UTC)
        while True:
            await waiter.wait(POLL_SECONDS)
            notified = waiter.take()
            async with sessions() as session:
                # Besides what NOTIFY named, read the table for runs whose status moved since
                # the last look: a wake-up missed while the listener reconnected.
                since = looked - timedelta(seconds=CATCH_UP_MARGIN_SECONDS)
                looked = datetime.now(UTC)
                moved = await run_service.runs_changed_since(
                    session, workflow_id=workflow.id, since=since
                )
                ids = list(dict.fromkeys([*notified, *moved]))
                rows = await run_service.runs_by_ids(session, run_ids=ids) if ids else []
            for row in rows:
                if row.id not in notified and sent.get(row.id) is row.status:
                    continue  # already sent in this status
                sent[row.id] = row.status
                yield row
