"""Database access: the async engine, sessions, and the embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import atexit
import fcntl
import json
import logging
import os
import shutil
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.settings import Settings, mask_url

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "flowdeck"
# How long a pool keeps reconnecting a lost connection before the next request starts over.
RECONNECT_SECONDS = 5.0
# A lean-read connection not handed out for this long is checked (one empty query) first.
IDLE_CHECK_SECONDS = 1.0


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
    url = start_embedded_postgres(embedded_pgdata(settings))
    ensure_database(url, EMBEDDED_DATABASE)
    return DatabaseTarget(
        url=with_database(url, EMBEDDED_DATABASE), embedded=True, data_dir=settings.data_dir
    )


def embedded_pgdata(settings: Settings) -> Path:
    """The embedded PostgreSQL's data directory (inside FLOWDECK_DATA_DIR)."""
    return Path(settings.data_dir).expanduser() / "pgdata"


def describe_database(settings: Settings) -> dict[str, Any]:
    """Which database serve, worker and migrate use: DATABASE_URL, or the embedded one."""
    if settings.database_url is not None:
        url = mask_url(settings.database_url.get_secret_value())
        return {"source": "DATABASE_URL", "url": url, "summary": f"DATABASE_URL {url}"}
    pgdata = embedded_pgdata(settings)
    state = "created at first start" if needs_initdb(pgdata) else "initialised"
    return {
        "source": "embedded",
        "data_dir": str(pgdata),
        "summary": f"embedded PostgreSQL, data in {pgdata} ({state}; DATABASE_URL is unset)",
    }


def needs_initdb(pgdata: Path) -> bool:
    """True before the first start of an embedded PostgreSQL in ``pgdata`` (initdb to come)."""
    return not (pgdata / "PG_VERSION").exists()


def start_embedded_postgres(pgdata: Path, *, delete_at_exit: bool = False) -> str:
    """Start (or join) PostgreSQL 16 from the pgserver wheel with its data in ``pgdata``.

    Returns its URL. This process becomes one of the server's owners; when the last owner
    exits (normally, by an exception, SIGTERM, SIGHUP or Ctrl-C) it stops the server by
    its pid. Owners that died without a word (kill -9) are cleared at the next start.
    """
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime directory at import and is warned when
        # XDG_RUNTIME_DIR is unset (servers, containers); its /tmp fallback is fine.
        warnings.simplefilter("ignore")
        from pgserver import postgres_server  # imported here: only embedded mode needs it

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _install_exit_handlers()
    with _owners_lock(pgdata):
        _clear_pgserver_handles(pgdata)
        # pgserver only starts it (initdb the first time): its own clean-up counts users in a
        # pid list that a kill -9 leaves stale for good, and cannot stop a server whose
        # data directory was deleted under it. Flowdeck keeps the owners itself.
        server = postgres_server.get_server(pgdata, cleanup_mode=None)
        atexit.unregister(server._cleanup)
        postgres_server.PostgresServer._instances.pop(pgdata, None)
        _clear_pgserver_handles(pgdata)
        postmaster = server.get_postmaster_info().process
        assert postmaster is not None  # get_server returns once the server runs
        me = _Owner.current()
        owners = [owner for owner in _read_owners(pgdata) if owner.alive() and owner != me]
        _write_owners(pgdata, [*owners, me])
        _owned[pgdata] = _Embedded(
            pgdata=pgdata,
            postmaster=_Owner(postmaster.pid, postmaster.create_time()),
            delete_at_exit=delete_at_exit,
            owner_pid=me.pid,
        )
    return str(server.get_uri())


OWNERS_FILE = "flowdeck-owners.json"


@dataclass(frozen=True, slots=True)
class _Owner:
    """A process, told apart from a later one that reuses its pid by its start time."""

    pid: int
    started: float

    @classmethod
    def current(cls) -> _Owner:
        return cls(os.getpid(), psutil.Process().create_time())

    def process(self) -> psutil.Process | None:
        """The live process, or None when it ended (a zombie counts as ended)."""
        try:
            process = psutil.Process(self.pid)
            if process.create_time() != self.started or process.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return process

    def alive(self) -> bool:
        return self.process() is not None


@dataclass(frozen=True, slots=True)
class _Embedded:
    """An embedded PostgreSQL this process started or joined."""

    pgdata: Path
    postmaster: _Owner
    delete_at_exit: bool
    owner_pid: int  # a forked child inherits this record but is not an owner


_owned: dict[Path, _Embedded] = {}
_stopping = threading.RLock()
_exit_handlers_installed = False


def stop_embedded_postgres() -> None:
    """Leave every embedded PostgreSQL of this process; stop each one nobody else uses."""
    # Called at exit, and by serve's deadline from another thread: one at a time.
    with _stopping:
        for pgdata in list(_owned):
            embedded = _owned.pop(pgdata, None)
            if embedded is None or embedded.owner_pid != os.getpid():
                continue
            try:
                _leave(embedded)
            except Exception:  # at exit: say so, and go on with the others
                log.exception("could not stop the embedded PostgreSQL in %s", pgdata)


def _leave(embedded: _Embedded) -> None:
    pgdata = embedded.pgdata
    with _owners_lock(pgdata, missing_ok=True):
        me = _Owner.current()
        others = [owner for owner in _read_owners(pgdata) if owner != me and owner.alive()]
        if others and not needs_initdb(pgdata):
            _write_owners(pgdata, others)
            return
        # The last owner, or the data directory is gone (nobody can use the server any more).
        # Data about to be deleted, or already gone, needs no shutdown checkpoint.
        gone = embedded.delete_at_exit or needs_initdb(pgdata)
        _stop_postmaster(embedded.postmaster, immediate=gone)
        (pgdata / OWNERS_FILE).unlink(missing_ok=True)
    if embedded.delete_at_exit:
        shutil.rmtree(pgdata, ignore_errors=True)
        _lock_path(pgdata).unlink(missing_ok=True)


def _stop_postmaster(postmaster: _Owner, *, immediate: bool = False) -> None:
    """Stop PostgreSQL by its pid: fast shutdown (or immediate), then SIGKILL."""
    process = postmaster.process()
    if process is None:
        return
    # SIGINT is PostgreSQL's fast shutdown (clients disconnected, a checkpoint); SIGQUIT its
    # immediate one (no checkpoint: crash recovery at the next start). Both work when the
    # data directory was deleted under the server.
    steps = [(signal.SIGQUIT, 5.0)] if immediate else [(signal.SIGINT, 15.0), (signal.SIGQUIT, 5.0)]
    for sig, wait_seconds in [*steps, (signal.SIGKILL, 5.0)]:
        try:
            process.send_signal(sig)
            process.wait(wait_seconds)
            return
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            log.warning("embedded PostgreSQL (pid %s) ignored %s", process.pid, sig.name)


def _install_exit_handlers() -> None:
    """Stop the embedded PostgreSQL on every way out that runs Python code."""
    global _exit_handlers_installed
    if _exit_handlers_installed:
        return
    _exit_handlers_installed = True
    atexit.register(stop_embedded_postgres)
    if threading.current_thread() is not threading.main_thread():
        return
    # SIGTERM and SIGHUP end a process without running atexit unless they are handled;
    # handled, they exit through SystemExit like any other path out. Handlers set by the
    # program (uvicorn, the worker) are left alone.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _exit_on_signal)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _lock_path(pgdata: Path) -> Path:
    return pgdata.parent / f".{pgdata.name}.lock"


@contextmanager
def _owners_lock(pgdata: Path, *, missing_ok: bool = False) -> Iterator[None]:
    """Serialise starting, joining and stopping the server of ``pgdata`` across processes.

    With ``missing_ok``, a data directory deleted with its parent goes on without the lock.
    """
    try:
        handle = open(_lock_path(pgdata), "a")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        if not missing_ok:
            raise
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_owners(pgdata: Path) -> list[_Owner]:
    try:
        rows = json.loads((pgdata / OWNERS_FILE).read_text())
        return [_Owner(int(row["pid"]), float(row["started"])) for row in rows]
    except (OSError, ValueError, TypeError, KeyError):
        return []  # none yet, deleted with the data directory, or unreadable: no owners


def _write_owners(pgdata: Path, owners: list[_Owner]) -> None:
    path = pgdata / OWNERS_FILE
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps([{"pid": o.pid, "started": o.started} for o in owners]))
    os.replace(temporary, path)


def _clear_pgserver_handles(pgdata: Path) -> None:
    """Empty pgserver's own pid list: Flowdeck keeps the owners (see start_embedded_postgres)."""
    path = pgdata / ".handle_pids.json"
    if path.exists():
        path.write_text("[]")


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


def create_engine(url: str, settings: Settings, *, statement_timeout: bool = True) -> AsyncEngine:
    """An async engine over psycopg 3 with the configured pool and statement timeout.

    ``statement_timeout=False`` is for migrations: an index build or the wait for another
    replica's migration lock may rightly take longer than any request.
    """
    connect_args: dict[str, Any] = {"application_name": "flowdeck"}
    if statement_timeout:
        connect_args |= statement_timeout_option(settings)
    return create_async_engine(
        async_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_overflow,
        # Waiting longer for a pooled connection than this answers 503, not a hung request.
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=True,
        # A failed statement's error (logged, and raised to callers) would otherwise carry
        # its parameters: secrets' ciphertext, webhook URL ids, API token hashes, run inputs.
        hide_parameters=True,
        connect_args=connect_args,
    )


def statement_timeout_option(settings: Settings) -> dict[str, str]:
    """The libpq ``options`` setting FLOWDECK_DB_STATEMENT_TIMEOUT_SECONDS (none when 0).

    A connection option, so it holds for every statement of every transaction: one tenant's
    slow statements (or lock waits) cannot hold the pool's connections for long.
    """
    if settings.db_statement_timeout_seconds <= 0:
        return {}
    milliseconds = round(settings.db_statement_timeout_seconds * 1000)
    return {"options": f"-c statement_timeout={milliseconds}"}


class IdleCheck:
    """Check a pooled connection before it is handed out, but only when it was last handed
    out more than ``seconds`` ago: a busy pool pays no round trip, and a connection that lay
    in the pool through an outage (or had its backend terminated meanwhile) is found dead and
    replaced instead of failing a request (psycopg_pool's ``check`` and ``configure``
    callbacks; not ``reset``, which would make the pool return every connection through a
    background task).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._used_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    async def fresh(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A new connection: working now."""
        self._used_at[conn] = time.monotonic()

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Raise (the pool then discards it and takes another) when a connection unused for
        long does not answer."""
        now = time.monotonic()
        last = self._used_at.get(conn, 0.0)
        self._used_at[conn] = now
        if now - last > self.seconds:
            await AsyncConnectionPool.check_connection(conn)


def create_pool(url: str, settings: Settings) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """Plain psycopg connections for the lean paths (autocommit; opened by ``open()``).

    Each statement prepares itself server-side after a few uses (psycopg's default). The same
    statement timeout and pool wait as the engine's: a wait past it is a PoolTimeout (503).
    A connection not handed out for ``IDLE_CHECK_SECONDS`` is checked before use.
    """
    idle = IdleCheck(IDLE_CHECK_SECONDS)
    return AsyncConnectionPool(
        libpq_url(url),
        min_size=1,
        max_size=settings.db_pool_size,
        kwargs={"autocommit": True, "application_name": "flowdeck"}
        | statement_timeout_option(settings),
        timeout=settings.db_pool_timeout_seconds,
        # After an outage the pool reconnects with doubling waits; capped like this, the
        # next request for a connection starts over within seconds of the database's return.
        reconnect_timeout=RECONNECT_SECONDS,
        configure=idle.fresh,
        check=idle.check,
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
