"""What one process shares between requests: settings, engine, sessions, graph policy."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import session_factory
from app.services.graphs import GraphPolicy
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    """The process-wide dependencies, built once by the app factory."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    graph_policy: GraphPolicy

    @classmethod
    def build(cls, settings: Settings, engine: AsyncEngine) -> Runtime:
        """A runtime over an engine."""
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            graph_policy=GraphPolicy.from_settings(settings),
        )
