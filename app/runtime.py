"""What one process shares between requests: settings, engine, sessions, policy, queue."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.cache import PrincipalCache
from app.db import create_pool, libpq_url, session_factory
from app.events.hub import EventHub
from app.keyring import Keyring
from app.services.graphs import GraphPolicy
from app.services.secrets import WorkspaceSecrets
from app.settings import Settings
from app.worker.context import WorkerContext
from app.worker.inline import InlineRuns
from app.worker.queue import ProcrastinateRunQueue, build_queue


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime(WorkerContext):
    """The process-wide dependencies, built once by the app factory (or the worker command)."""

    engine: AsyncEngine
    hub: EventHub
    # Signed-in principals by token hash, kept while the hub listens for access changes.
    principals: PrincipalCache
    keyring: Keyring
    runs: ProcrastinateRunQueue
    # The database's URL (postgresql://), for what needs a connection of its own (/readyz).
    url: str

    @classmethod
    def build(cls, settings: Settings, engine: AsyncEngine, url: str) -> Runtime:
        """A runtime over an engine and the job queue of the same database."""
        keyring = Keyring.from_settings(settings)
        runs = build_queue(url, max_connections=settings.worker_concurrency + 2)
        principals = PrincipalCache(settings.token_cache_seconds)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            pool=create_pool(url, settings),
            graph_policy=GraphPolicy.from_settings(settings),
            queue=runs,
            runs=runs,
            jobs=runs.app,
            secrets=WorkspaceSecrets(keyring),
            hub=EventHub(libpq_url(url), principals),
            principals=principals,
            keyring=keyring,
            url=url,
        )

    @property
    def inline(self) -> InlineRuns | None:
        """The runs this process drives where they were queued (None: only workers drive)."""
        return self.runs.inline

    def drive_inline(self) -> InlineRuns:
        """Let this process drive the runs it queues (an API process); its hub stops them."""
        inline = InlineRuns(self)
        self.runs.inline = inline
        self.hub.on_run_event = inline.run_event
        return inline

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Runtime]:
        """The runtime with its connections open: the pool and the job queue's."""
        await self.pool.open()
        # Back from an outage, the pool's idle connections are checked (dead ones replaced)
        # before a request is handed one.
        self.hub.on_reconnected = self.pool.check
        try:
            async with self.jobs.open_async():
                inline = self.inline
                if inline is not None:
                    await inline.start()
                try:
                    yield self
                finally:
                    if inline is not None:
                        await inline.stop()
        finally:
            await self.pool.close()
