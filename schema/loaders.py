"""Per-request DataLoaders: one query per kind of object, whatever the page size."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from strawberry.dataloader import DataLoader

from app.models import (
    Run,
    RunStatus,
    RunStep,
    User,
    Webhook,
    Workflow,
    Workspace,
)
from app.services import reads
from app.services.pagination import Page
from app.services.reads import RunPageKey, VersionPageKey
from app.services.records import FireRecord, RunRecord, UserRecord, VersionRecord
from app.services.runs import load_steps

SessionGetter = Callable[[], AsyncSession]
Pool = AsyncConnectionPool[Any]
K = TypeVar("K")
V = TypeVar("V")
Columns = frozenset[str]


class SharedLoader(DataLoader[K, V]):
    """A DataLoader whose answers are shared safely: each ``load`` is shielded.

    Fields that ask for the same key await one future. When a non-null field fails,
    graphql-core cancels its siblings' pending resolvers, and cancelling a task cancels the
    future it awaits: unshielded, the shared future was cancelled under every other field
    waiting on it (in another, healthy part of the query), whose resolvers then raised
    CancelledError out of the request.
    """

    def load(self, key: K) -> Awaitable[V]:
        return asyncio.shield(super().load(key))


@dataclass(slots=True)
class Loaders:
    """The loaders of one request (or one WebSocket operation)."""

    # (workflow id, number, the columns the selection needs): lean rows, by plain psycopg.
    version_by_key: DataLoader[tuple[uuid.UUID, int, Columns], VersionRecord | None]
    graph_text_by_version_id: DataLoader[uuid.UUID, str | None]
    user_by_id: DataLoader[uuid.UUID, User | UserRecord | None]
    # Connections nested under a list: every parent's page in one statement.
    version_page: DataLoader[tuple[VersionPageKey, Columns], Page[VersionRecord]]
    run_page: DataLoader[tuple[RunPageKey, Columns], Page[RunRecord]]
    run_count: DataLoader[tuple[uuid.UUID, RunStatus | None], int]
    workspace_by_id: DataLoader[uuid.UUID, Workspace | None]
    workflow_by_id: DataLoader[uuid.UUID, Workflow | None]
    run_by_id: DataLoader[uuid.UUID, Run | None]
    steps_by_run_id: DataLoader[uuid.UUID, list[RunStep]]
    last_run_by_workflow_id: DataLoader[tuple[uuid.UUID, Columns], RunRecord | None]
    webhook_by_workflow_id: DataLoader[uuid.UUID, Webhook | None]
    fires_by_workflow_and_limit: DataLoader[tuple[uuid.UUID, int], list[FireRecord]]
    # What the document selects below each place, computed once (schema/selection.py).
    selections: dict[tuple[str, ...], frozenset[str]] = field(default_factory=dict)


def _by_id(session: SessionGetter, model: Any) -> Callable[[list[uuid.UUID]], Awaitable[list[Any]]]:
    async def load(keys: list[uuid.UUID]) -> list[Any]:
        rows = await session().execute(select(model).where(model.id.in_(keys)))
        found = {row.id: row for row in rows.scalars()}
        return [found.get(key) for key in keys]

    return load


async def _grouped(
    keys: list[tuple[K, Columns]],
    read: Callable[[list[K], Columns], Awaitable[list[V]]],
) -> list[V]:
    """Values for keys of (key, columns): one read per distinct column set, aligned."""
    groups: dict[Columns, list[int]] = {}
    for i, (_, columns) in enumerate(keys):
        groups.setdefault(columns, []).append(i)
    found: dict[int, V] = {}
    for columns, positions in groups.items():
        values = await read([keys[i][0] for i in positions], columns)
        found.update(zip(positions, values, strict=True))
    return [found[i] for i in range(len(keys))]


def build_loaders(session: SessionGetter, pool: Pool) -> Loaders:
    """Fresh loaders reading through ``session()`` and, the lean ones, ``pool``."""

    async def load_fires(keys: list[tuple[uuid.UUID, int]]) -> list[list[FireRecord]]:
        async with pool.connection() as conn:
            return await reads.read_recent_fires(conn, keys=keys)

    async def load_webhooks(keys: list[uuid.UUID]) -> list[Webhook | None]:
        rows = await session().execute(select(Webhook).where(col(Webhook.workflow_id).in_(keys)))
        found = {row.workflow_id: row for row in rows.scalars()}
        return [found.get(key) for key in keys]

    async def read_versions(
        keys: list[tuple[uuid.UUID, int]], columns: Columns
    ) -> list[VersionRecord | None]:
        async with pool.connection() as conn:
            found = await reads.read_versions(conn, keys=keys, columns=columns)
        return [found.get(key) for key in keys]

    async def load_versions(
        keys: list[tuple[uuid.UUID, int, Columns]],
    ) -> list[VersionRecord | None]:
        return await _grouped([((k[0], k[1]), k[2]) for k in keys], read_versions)

    async def load_version_graphs(keys: list[uuid.UUID]) -> list[str | None]:
        async with pool.connection() as conn:
            found = await reads.read_graph_texts(conn, version_ids=list(keys))
        return [found.get(key) for key in keys]

    async def load_users(keys: list[uuid.UUID]) -> list[User | UserRecord | None]:
        async with pool.connection() as conn:
            found = await reads.read_users(conn, user_ids=list(keys))
        return [found.get(key) for key in keys]

    async def read_version_pages(
        keys: list[VersionPageKey], columns: Columns
    ) -> list[Page[VersionRecord]]:
        async with pool.connection() as conn:
            return await reads.read_version_pages(conn, keys=keys, columns=columns)

    async def load_version_pages(
        keys: list[tuple[VersionPageKey, Columns]],
    ) -> list[Page[VersionRecord]]:
        return await _grouped(list(keys), read_version_pages)

    async def read_run_pages(keys: list[RunPageKey], columns: Columns) -> list[Page[RunRecord]]:
        async with pool.connection() as conn:
            return await reads.read_run_pages(conn, keys=keys, columns=columns)

    async def load_run_pages(keys: list[tuple[RunPageKey, Columns]]) -> list[Page[RunRecord]]:
        return await _grouped(list(keys), read_run_pages)

    async def load_run_counts(keys: list[tuple[uuid.UUID, RunStatus | None]]) -> list[int]:
        async with pool.connection() as conn:
            return await reads.count_runs_of(conn, keys=list(keys))

    async def load_steps_of(keys: list[uuid.UUID]) -> list[list[RunStep]]:
        found = await load_steps(session(), run_ids=list(keys))
        return [found[key] for key in keys]

    async def read_last(workflow_ids: list[uuid.UUID], columns: Columns) -> list[RunRecord | None]:
        async with pool.connection() as conn:
            found = await reads.read_last_runs(conn, workflow_ids=workflow_ids, columns=columns)
        return [found.get(key) for key in workflow_ids]

    async def load_last(keys: list[tuple[uuid.UUID, Columns]]) -> list[RunRecord | None]:
        return await _grouped(list(keys), read_last)

    return Loaders(
        version_by_key=SharedLoader(load_fn=load_versions),
        graph_text_by_version_id=SharedLoader(load_fn=load_version_graphs),
        user_by_id=SharedLoader(load_fn=load_users),
        version_page=SharedLoader(load_fn=load_version_pages),
        run_page=SharedLoader(load_fn=load_run_pages),
        run_count=SharedLoader(load_fn=load_run_counts),
        workspace_by_id=SharedLoader(load_fn=_by_id(session, Workspace)),
        workflow_by_id=SharedLoader(load_fn=_by_id(session, Workflow)),
        run_by_id=SharedLoader(load_fn=_by_id(session, Run)),
        steps_by_run_id=SharedLoader(load_fn=load_steps_of),
        last_run_by_workflow_id=SharedLoader(load_fn=load_last),
        webhook_by_workflow_id=SharedLoader(load_fn=load_webhooks),
        fires_by_workflow_and_limit=SharedLoader(load_fn=load_fires),
    )
