"""Database access: the async engine, sessions, and the embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "flowdeck"


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """Where the database is: a plain ``postgresql://`` URL and whether it is embedded."""

    url: str
    embedded: bool
    data_dir: Path | None = None


def resolve_database(settings: Settings) -> DatabaseTarget:
    """Use DATABASE_URL when set, else start (or reuse) the embedded PostgreSQL."""
    if settings.database_url is not None:
        return DatabaseTarget(url=settings.database_url.get_secret_value(), embedded=False)
    pgdata = settings.data_dir / "pgdata"
    url = start_embedded_postgres(pgdata)
    ensure_database(url, EMBEDDED_DATABASE)
    return DatabaseTarget(
        url=with_database(url, EMBEDDED_DATABASE), embedded=True, data_dir=settings.data_dir
    )


def start_embedded_postgres(pgdata: Path, *, delete_at_exit: bool = False) -> str:
    """Start PostgreSQL 16 from the pgserver wheel with its data in ``pgdata``; return its URL."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime directory at import and is warned when
        # XDG_RUNTIME_DIR is unset (servers, containers); its /tmp fallback is fine.
        warnings.simplefilter("ignore")
        import pgserver  # imported here: only embedded mode needs it

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # pgserver counts the processes using this data directory (API, workers) and stops
    # PostgreSQL when the last of them exits; a killed process leaves it for the next start.
    server = pgserver.get_server(pgdata, cleanup_mode="delete" if delete_at_exit else "stop")
    return str(server.get_uri())


def with_database(url: str, database: str) -> str:
    """Return ``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def ensure_database(url: str, database: str) -> None:
    """Create ``database`` on the server of ``url`` if it does not exist."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            log.info("created database %s", database)


def async_url(url: str) -> str:
    """The SQLAlchemy URL for psycopg 3 async from a ``postgresql://`` URL."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must start with postgresql://")


def libpq_url(url: str) -> str:
    """The plain libpq URL (for psycopg directly) from any accepted spelling."""
    return "postgresql://" + async_url(url)[len("postgresql+psycopg://") :]


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    """An async engine over psycopg 3 with the configured pool."""
    return create_async_engine(
        async_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_overflow,
        pool_pre_ping=True,
        # A failed statement's error (logged, and raised to callers) would otherwise carry
        # its parameters: secrets' ciphertext, webhook URL ids, API token hashes, run inputs.
        hide_parameters=True,
        connect_args={"application_name": "flowdeck"},
    )


def create_pool(url: str, settings: Settings) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """Plain psycopg connections for the lean paths (autocommit; opened by ``open()``).

    Each statement prepares itself server-side after a few uses (psycopg's default).
    """
    return AsyncConnectionPool(
        libpq_url(url),
        min_size=1,
        max_size=settings.db_pool_size,
        kwargs={"autocommit": True, "application_name": "flowdeck"},
        open=False,
        name="flowdeck",
    )


class SerializedSession(AsyncSession):
    """An AsyncSession whose statements queue up instead of colliding.

    GraphQL resolves sibling fields concurrently (DataLoaders too); they share the request's
    one session and connection, so each statement waits for the previous one to finish.
    """

    _statement_lock: asyncio.Lock | None = None

    def _lock(self) -> asyncio.Lock:
        if self._statement_lock is None:
            self._statement_lock = asyncio.Lock()
        return self._statement_lock

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock():
            return await super().execute(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock():
            return await super().scalar(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock():
            return await super().get(*args, **kwargs)

    async def flush(self, *args: Any, **kwargs: Any) -> None:
        async with self._lock():
            await super().flush(*args, **kwargs)

    async def commit(self) -> None:
        async with self._lock():
            await super().commit()

    async def rollback(self) -> None:
        async with self._lock():
            await super().rollback()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit, safe for sibling resolvers."""
    return async_sessionmaker(engine, class_=SerializedSession, expire_on_commit=False)
