"""Finding runs across a workspace: a keyset list, newest first, by status, workflow, trigger
and time.

Every filter has an index that starts with the workspace and ends with (queued_at, id), so
a page costs the same at ten thousand runs as at a million: runs by (workspace, queued_at),
(workspace, status, queued_at), (workspace, trigger, queued_at), and by workflow
(workflow, queued_at).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.errors import InputErrors, NotFound
from app.models import Role, Run, RunStatus, RunTrigger, Workflow
from app.services.pagination import (
    Page,
    check_page_size,
    check_period,
    decode_time_cursor,
    make_page,
)


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs to list; every given condition must hold."""

    status: RunStatus | None = None
    workflow_id: uuid.UUID | None = None
    trigger: RunTrigger | None = None
    since: datetime | None = None  # queued at or after (inclusive)
    until: datetime | None = None  # queued before (exclusive)


def _conditions(workspace_id: uuid.UUID, where: RunFilter) -> list[Any]:
    # A workflow's runs are all in its workspace (checked before): naming the workspace too
    # would make the planner multiply the two selectivities as if independent, expect a few
    # rows of a small workspace beside a large one, and sort a bitmap scan (15 ms at 10k runs).
    if where.workflow_id is not None:
        conditions: list[Any] = [col(Run.workflow_id) == where.workflow_id]
    else:
        conditions = [col(Run.workspace_id) == workspace_id]
    if where.status is not None:
        conditions.append(col(Run.status) == where.status)
    if where.trigger is not None:
        conditions.append(col(Run.trigger) == where.trigger)
    if where.since is not None:
        conditions.append(col(Run.queued_at) >= where.since)
    if where.until is not None:
        conditions.append(col(Run.queued_at) < where.until)
    return conditions


async def search_runs(
    session: AsyncSession,
    *,
    principal: Principal,
    workspace_id: uuid.UUID,
    first: int,
    after: str | None,
    where: RunFilter,
) -> Page[Run]:
    """A page of a workspace's runs, newest queued first (viewers and above)."""
    principal.require(workspace_id, Role.VIEWER, "Workspace")
    check_page_size(first)
    errors = check_period(where.since, where.until, ("filter",))
    if errors:
        raise InputErrors(errors)
    if where.workflow_id is not None:
        owner = await session.scalar(
            select(col(Workflow.workspace_id)).where(col(Workflow.id) == where.workflow_id)
        )
        if owner != workspace_id:
            raise NotFound("Workflow")
    query = page_query(workspace_id, where, decode_time_cursor(after) if after else None, first + 1)
    rows = list((await session.execute(query)).scalars())
    return make_page(rows, first, lambda r: [r.queued_at.isoformat(), str(r.id)])


def page_query(
    workspace_id: uuid.UUID,
    where: RunFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Select[Run]:
    """The statement of one page: an index range scan in (queued_at, id) order, no sort."""
    query = (
        select(Run)
        .where(*_conditions(workspace_id, where))
        .order_by(col(Run.queued_at).desc(), col(Run.id).desc())
        .limit(limit)
    )
    if after is not None:
        query = query.where(func.row(col(Run.queued_at), col(Run.id)) < func.row(*after))
    return query


async def count_runs(session: AsyncSession, *, workspace_id: uuid.UUID, where: RunFilter) -> int:
    """How many of a workspace's runs match (an index-only count, yet linear in them)."""
    query = select(func.count()).select_from(Run).where(*_conditions(workspace_id, where))
    return int(await session.scalar(query) or 0)
