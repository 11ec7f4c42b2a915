"""Run retention: finished runs older than their workspace's ``run_retention_days`` are
deleted with their steps and events, a small batch per transaction.

Each batch is one short transaction (its rows locked with SKIP LOCKED, under a lock timeout),
so pruning never holds locks for long and never waits on a run someone is touching. A run
still QUEUED or RUNNING is never pruned, however old. Deleting a run cascades to its steps
and events; schedule fires and retries that pointed at it keep a null (both found by index).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.engine.states import TERMINAL_RUN
from app.metrics import RUNS_PRUNED
from app.models import Run, Workspace, utcnow

log = logging.getLogger(__name__)

PRUNE_BATCH = 200
WORKSPACE_BATCH = 500
# A batch that cannot get its locks soon gives up; the next pass tries again.
LOCK_TIMEOUT = "2s"


async def prune_batch(
    session: AsyncSession, *, workspace_id: uuid.UUID, cutoff: datetime, limit: int
) -> int:
    """Delete up to ``limit`` of a workspace's runs that ended and were queued before
    ``cutoff``, oldest first; how many were deleted."""
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    expired = (
        select(col(Run.id))
        .where(
            col(Run.workspace_id) == workspace_id,
            col(Run.queued_at) < cutoff,  # the (workspace_id, queued_at, id) index's range
            col(Run.status).in_(TERMINAL_RUN),
            col(Run.finished_at) < cutoff,
        )
        .order_by(col(Run.queued_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    deleted = await session.execute(
        delete(Run).where(col(Run.id).in_(expired.scalar_subquery())).returning(col(Run.id))
    )
    return len(deleted.all())


async def _retention_of_workspaces(
    session: AsyncSession, after: uuid.UUID | None
) -> list[tuple[uuid.UUID, int]]:
    query = (
        select(col(Workspace.id), col(Workspace.run_retention_days))
        .order_by(col(Workspace.id))
        .limit(WORKSPACE_BATCH)
    )
    if after is not None:
        query = query.where(col(Workspace.id) > after)
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


async def prune_runs(
    sessions: async_sessionmaker[AsyncSession],
    *,
    now: datetime | None = None,
    batch_size: int = PRUNE_BATCH,
) -> int:
    """Prune every workspace's expired runs; how many were deleted.

    Takes the session factory, not a session: each batch commits on its own, so no lock
    outlives a batch.
    """
    now = now or utcnow()
    total = 0
    after: uuid.UUID | None = None
    while True:
        async with sessions() as session:
            workspaces = await _retention_of_workspaces(session, after)
        for workspace_id, days in workspaces:
            cutoff = now - timedelta(days=days)
            while True:
                async with sessions() as session, session.begin():
                    count = await prune_batch(
                        session, workspace_id=workspace_id, cutoff=cutoff, limit=batch_size
                    )
                total += count
                RUNS_PRUNED.inc(count)
                if count < batch_size:
                    break
                await asyncio.sleep(0)  # between batches, let the rest of the process run
        if len(workspaces) < WORKSPACE_BATCH:
            break
        after = workspaces[-1][0]
    if total:
        log.info("pruned expired runs", extra={"runs": total})
    return total
