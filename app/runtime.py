"""What one process shares between requests: settings, engine, sessions, policy, queue."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import libpq_url, session_factory
from app.events.hub import EventHub
from app.keyring import Keyring
from app.services.graphs import GraphPolicy
from app.services.secrets import secrets_source
from app.settings import Settings
from app.worker.queue import WorkerContext, build_queue


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime(WorkerContext):
    """The process-wide dependencies, built once by the app factory (or the worker command)."""

    engine: AsyncEngine
    hub: EventHub
    keyring: Keyring

    @classmethod
    def build(cls, settings: Settings, engine: AsyncEngine, url: str) -> Runtime:
        """A runtime over an engine and the job queue of the same database."""
        keyring = Keyring.from_settings(settings)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            graph_policy=GraphPolicy.from_settings(settings),
            queue=build_queue(url, max_connections=settings.worker_concurrency + 2),
            secrets=secrets_source(keyring),
            hub=EventHub(libpq_url(url)),
            keyring=keyring,
        )
