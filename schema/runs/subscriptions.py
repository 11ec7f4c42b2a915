"""Live run progress: the event log replayed after a seq, then followed as it grows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta

import strawberry
from sqlalchemy import select

from app.engine.states import TERMINAL_RUN
from app.events.log import read_events
from app.models import TERMINAL_EVENTS, RunStatus
from app.models import Run as RunModel
from app.services import runs as run_service
from app.services.workflows import get_workflow
from schema.context import Info
from schema.errors import guarded
from schema.ids import decode_id
from schema.runs.types import Run, RunEvent

# Re-read the table this often even without a NOTIFY: a missed wake-up costs latency only.
POLL_SECONDS = 5.0
# A run list's catch-up read looks back this far past its previous look (commit lag).
CATCH_UP_MARGIN_SECONDS = 10.0


@strawberry.type
class RunSubscriptions:
    @strawberry.subscription(
        description="Every event of the run after `afterSeq` (all when null), then live events "
        "until the terminal one, then complete: no gap, no duplicate, also on reconnect."
    )
    async def run_progress(
        self, info: Info, run_id: strawberry.ID, after_seq: int | None = None
    ) -> AsyncGenerator[RunEvent, None]:
        async for event in guarded(_run_progress(info, run_id, after_seq)):
            yield event

    @strawberry.subscription(
        description="Runs of one workflow as they are queued, start and finish (a live run list)."
    )
    async def workflow_runs(
        self, info: Info, workflow_id: strawberry.ID
    ) -> AsyncGenerator[Run, None]:
        async for run in guarded(_workflow_runs(info, workflow_id)):
            yield run


async def _run_progress(
    info: Info, run_id: strawberry.ID, after_seq: int | None
) -> AsyncGenerator[RunEvent, None]:
    ctx = info.context
    principal = await ctx.principal()
    sessions = ctx.runtime.sessions
    async with sessions() as session:
        run = await run_service.get_run(
            session, principal=principal, run_id=decode_id("Run", run_id)
        )
    last = max(after_seq or 0, 0)
    async with ctx.operation():
        # Watch before the first read: an event committed in between still wakes us.
        with ctx.runtime.hub.watch_run(run.id) as waiter:
            while True:
                async with sessions() as session:
                    events = await read_events(session, run_id=run.id, after_seq=last)
                    if not events:
                        status, last_seq = (
                            await session.execute(
                                select(RunModel.status, RunModel.last_event_seq).where(
                                    RunModel.id == run.id  # type: ignore[arg-type]
                                )
                            )
                        ).one()
                for event in events:
                    await ctx.refresh()
                    yield RunEvent.from_model(event)
                    last = event.seq
                    if event.type in TERMINAL_EVENTS:
                        return
                if not events:
                    if last >= last_seq and status in TERMINAL_RUN:
                        return  # resumed after the terminal event: nothing more will come
                    await waiter.wait(POLL_SECONDS)


async def _workflow_runs(info: Info, workflow_id: strawberry.ID) -> AsyncGenerator[Run, None]:
    ctx = info.context
    principal = await ctx.principal()
    sessions = ctx.runtime.sessions
    async with sessions() as session:
        workflow = await get_workflow(
            session, principal=principal, workflow_id=decode_id("Workflow", workflow_id)
        )
    sent: dict[uuid.UUID, RunStatus] = {}
    async with ctx.operation():
        with ctx.runtime.hub.watch_workflow(workflow.id) as waiter:
            looked = datetime.now(UTC)
            while True:
                await waiter.wait(POLL_SECONDS)
                notified = waiter.take()
                async with sessions() as session:
                    # Besides what NOTIFY named, read the table for runs whose status moved
                    # since the last look: a wake-up missed while the listener reconnected.
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
                    await ctx.refresh()
                    yield Run.from_model(row)
