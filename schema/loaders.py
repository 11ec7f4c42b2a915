"""Per-request DataLoaders: one query per kind of object, whatever the page size."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from strawberry.dataloader import DataLoader

from app.models import (
    Run,
    RunStep,
    ScheduleFire,
    User,
    Webhook,
    Workflow,
    WorkflowVersion,
    Workspace,
)
from app.services.runs import load_last_runs, load_steps
from app.services.schedules import load_recent_fires
from app.services.versions import VersionKey, load_graph_texts, load_version_heads

SessionGetter = Callable[[], AsyncSession]


@dataclass(slots=True)
class Loaders:
    """The loaders of one request (or one WebSocket operation)."""

    version_by_key: DataLoader[VersionKey, WorkflowVersion | None]
    graph_text_by_version_id: DataLoader[uuid.UUID, str | None]
    user_by_id: DataLoader[uuid.UUID, User | None]
    workspace_by_id: DataLoader[uuid.UUID, Workspace | None]
    workflow_by_id: DataLoader[uuid.UUID, Workflow | None]
    run_by_id: DataLoader[uuid.UUID, Run | None]
    steps_by_run_id: DataLoader[uuid.UUID, list[RunStep]]
    last_run_by_workflow_id: DataLoader[uuid.UUID, Run | None]
    webhook_by_workflow_id: DataLoader[uuid.UUID, Webhook | None]
    fires_by_workflow_and_limit: DataLoader[tuple[uuid.UUID, int], list[ScheduleFire]]


def _by_id(session: SessionGetter, model: Any) -> Callable[[list[uuid.UUID]], Awaitable[list[Any]]]:
    async def load(keys: list[uuid.UUID]) -> list[Any]:
        rows = await session().execute(select(model).where(model.id.in_(keys)))
        found = {row.id: row for row in rows.scalars()}
        return [found.get(key) for key in keys]

    return load


def build_loaders(session: SessionGetter) -> Loaders:
    """Fresh loaders reading through ``session()``."""

    async def load_fires(keys: list[tuple[uuid.UUID, int]]) -> list[list[ScheduleFire]]:
        found = await load_recent_fires(session(), keys=list(keys))
        return [found[key] for key in keys]

    async def load_webhooks(keys: list[uuid.UUID]) -> list[Webhook | None]:
        rows = await session().execute(select(Webhook).where(col(Webhook.workflow_id).in_(keys)))
        found = {row.workflow_id: row for row in rows.scalars()}
        return [found.get(key) for key in keys]

    async def load_versions(keys: list[VersionKey]) -> list[WorkflowVersion | None]:
        found = await load_version_heads(session(), keys=list(keys))
        return [found.get(key) for key in keys]

    async def load_version_graphs(keys: list[uuid.UUID]) -> list[str | None]:
        found = await load_graph_texts(session(), version_ids=list(keys))
        return [found.get(key) for key in keys]

    async def load_steps_of(keys: list[uuid.UUID]) -> list[list[RunStep]]:
        found = await load_steps(session(), run_ids=list(keys))
        return [found[key] for key in keys]

    async def load_last(keys: list[uuid.UUID]) -> list[Run | None]:
        found = await load_last_runs(session(), workflow_ids=list(keys))
        return [found.get(key) for key in keys]

    return Loaders(
        version_by_key=DataLoader(load_fn=load_versions),
        graph_text_by_version_id=DataLoader(load_fn=load_version_graphs),
        user_by_id=DataLoader(load_fn=_by_id(session, User)),
        workspace_by_id=DataLoader(load_fn=_by_id(session, Workspace)),
        workflow_by_id=DataLoader(load_fn=_by_id(session, Workflow)),
        run_by_id=DataLoader(load_fn=_by_id(session, Run)),
        steps_by_run_id=DataLoader(load_fn=load_steps_of),
        last_run_by_workflow_id=DataLoader(load_fn=load_last),
        webhook_by_workflow_id=DataLoader(load_fn=load_webhooks),
        fires_by_workflow_and_limit=DataLoader(load_fn=load_fires),
    )
