"""What one process shares between requests: settings, engine, sessions, policy, queue."""

from __future__ import annotations

from dataclasses import dataclass

import procrastinate
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import libpq_url, session_factory
from app.events.hub import EventHub
from app.keyring import Keyring
from app.services.graphs import GraphPolicy
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    """The process-wide dependencies, built once by the app factory."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    graph_policy: GraphPolicy
    queue: procrastinate.App
    hub: EventHub
    keyring: Keyring

    @classmethod
    def build(cls, settings: Settings, engine: AsyncEngine, url: str) -> Runtime:
        """A runtime over an engine and the job queue of the same database."""
        from app.worker.queue import build_queue

        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            graph_policy=GraphPolicy.from_settings(settings),
            queue=build_queue(url, max_connections=settings.worker_concurrency + 2),
            hub=EventHub(libpq_url(url)),
            keyring=Keyring.from_settings(settings),
        )
