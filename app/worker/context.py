"""What a worker needs from its process; the runtime builds it (and extends it)."""

from __future__ import annotations

from dataclasses import dataclass

import procrastinate
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.engine.claim import SecretsSource
from app.engine.journal import Pool
from app.services.graphs import GraphPolicy
from app.services.queue import RunQueue
from app.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerContext:
    """Settings, sessions and connections, the run queue (and the procrastinate app behind
    it, which a worker runs), and where a run's driver finds its workspace's secrets."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    pool: Pool
    graph_policy: GraphPolicy
    queue: RunQueue
    jobs: procrastinate.App
    secrets: SecretsSource
