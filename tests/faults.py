"""Fault injection for tests: a database a test owns and breaks, Flowdeck processes over it,
and the checks that nothing raw leaked.

- ``FaultyDatabase``: a database of its own on the test server that a test can refuse
  (``ALTER DATABASE … WITH ALLOW_CONNECTIONS false`` plus terminating its backends), cut
  off for a moment (``pg_terminate_backend`` of every backend), or terminate repeatedly in
  the background. Connections are always allowed again when the block or the test ends.
- ``FlowdeckProcess``: ``flowdeck serve`` or ``flowdeck worker`` as a real process over that
  database, in production settings, its stderr (the JSON log) kept in a file.
- ``raw_error_text`` / ``leaked_log_lines``: where driver or SQL text got out.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg
from psycopg import sql

from tests.databases import scratch_database

FLOWDECK = str(Path(sys.executable).with_name("flowdeck"))

# Text that only the driver, SQLAlchemy or PostgreSQL writes: none of it may reach a client,
# nor a log line at INFO or above.
RAW_MARKERS = (
    "[SQL:",
    "sqlalche.me",
    "(psycopg.",
    "psycopg.errors",
    "OperationalError)",
    "InterfaceError)",
    "ProgrammingError)",
    "IntegrityError)",
    "DataError)",
    "InternalError)",
    "connection failed",
    "connection to server",
    "server closed the connection",
    "terminating connection",
    "not currently accepting connections",
    "canceling statement",
    "QueuePool limit",
    "couldn't get a connection",
    "consuming input failed",
    "Traceback",
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
)
LOG_LEVELS_SHOWN = {"info", "warning", "error", "critical", "exception"}


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def raw_error_text(text: str) -> list[str]:
    """The raw-error markers found in ``text`` (empty when it is clean)."""
    return [marker for marker in RAW_MARKERS if marker in text]


class FaultyDatabase:
    """A database of its own on the test server (``tests.databases.scratch_database``), for
    one test or module to break."""

    def __init__(self, server_url: str, url: str) -> None:
        self.server_url = server_url
        self.url = url
        self.name = urlsplit(url).path.lstrip("/")
        self._hammer: threading.Thread | None = None
        self._hammering = threading.Event()

    @classmethod
    @contextlib.contextmanager
    def scratch(cls, server_url: str) -> Iterator[FaultyDatabase]:
        """A new empty database to break; connections allowed again and dropped afterwards."""
        with scratch_database(server_url, "flowdeck_fault") as url:
            database = cls(server_url, url)
            try:
                yield database
            finally:
                database.heal()

    def _admin(self, statement: str) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(self.name)))

    def terminate_backends(self) -> int:
        """End every connection to the database now; returns how many there were."""
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            ).fetchone()
        return int(row[0]) if row else 0

    def refuse(self) -> None:
        """Refuse new connections and end the existing ones: the database is gone."""
        self._admin("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false")
        self.terminate_backends()

    def allow(self) -> None:
        """Accept connections again."""
        self._admin("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true")

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The database is unreachable for the block."""
        self.refuse()
        try:
            yield
        finally:
            self.allow()

    @contextlib.contextmanager
    def terminating(self, every: float) -> Iterator[None]:
        """Terminate every backend of the database every ``every`` seconds during the block."""
        self._hammering.set()

        def hammer() -> None:
            while self._hammering.is_set():
                self.terminate_backends()
                time.sleep(every)

        self._hammer = threading.Thread(target=hammer, daemon=True)
        self._hammer.start()
        try:
            yield
        finally:
            self._hammering.clear()
            self._hammer.join(timeout=10)

    def heal(self) -> None:
        """Stop any background terminations and accept connections again."""
        self._hammering.clear()
        if self._hammer is not None:
            self._hammer.join(timeout=10)
        self.allow()


@dataclass
class FlowdeckProcess:
    """``flowdeck serve`` (API only) or ``flowdeck worker`` as a real process."""

    command: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @classmethod
    def api(cls, database_url: str, log_dir: Path, **settings: str) -> FlowdeckProcess:
        """`flowdeck serve --no-worker` on a free port, in production settings."""
        port = free_port()
        return cls(
            [FLOWDECK, "serve", "--no-worker", "--port", str(port)],
            production_env(database_url, **settings),
            log_dir / f"api-{port}.log",
            port,
        )

    @classmethod
    def worker(cls, database_url: str, log_dir: Path, **settings: str) -> FlowdeckProcess:
        """`flowdeck worker`, in production settings."""
        return cls(
            [FLOWDECK, "worker"],
            production_env(database_url, **settings),
            log_dir / f"worker-{uuid.uuid4().hex[:6]}.log",
        )

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FlowdeckProcess:
        """Start it; for the API, return once /healthz answers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if self.port is not None:
            deadline = time.monotonic() + 60
            while True:
                assert self.process.poll() is None, f"exited: {self.log_path.read_text()}"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, "did not answer /healthz"
                time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def database_ports(self) -> list[int]:
        """The local ports of its TCP connections to PostgreSQL (pg_stat_activity.client_port)."""
        server_port = urlsplit(self.env["DATABASE_URL"]).port or 5432
        return [
            c.laddr.port
            for c in psutil.Process(self.pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == server_port
        ]

    def rss(self) -> int:
        """Resident memory of the process, in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL when it does not stop within 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def loop_stalls(self, over: str = "0.5") -> int:
        """How often its event loop ran a timer more than ``over`` seconds late (a bucket
        bound of flowdeck_event_loop_lag_seconds), from /metrics."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=5).text
        values = {}
        for line in text.splitlines():
            if line.startswith("flowdeck_event_loop_lag_seconds_"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        within = values[f'flowdeck_event_loop_lag_seconds_bucket{{le="{over}"}}']
        return int(values["flowdeck_event_loop_lag_seconds_count"] - within)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line it wrote, as JSON objects (a line that is not JSON counts as INFO)."""
        lines = []
        for text in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(text)
            except ValueError:
                entry = {"level": "info", "event": text}
            lines.append(entry if isinstance(entry, dict) else {"level": "info", "event": text})
        return lines

    def leaked_log_lines(self) -> list[dict[str, Any]]:
        """Log lines at INFO or above that carry raw driver or SQL text."""
        return [
            line
            for line in self.log_lines()
            if str(line.get("level", "info")).lower() in LOG_LEVELS_SHOWN
            and raw_error_text(json.dumps(line, ensure_ascii=False))
        ]


def production_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a production process over ``database_url`` (JSON logs at INFO)."""
    from tests.conftest import TEST_SECRET_KEY

    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "DATABASE_URL")}
    env.update(
        DATABASE_URL=database_url,
        FLOWDECK_ENV="production",
        FLOWDECK_SECRET_KEY=TEST_SECRET_KEY,
        FLOWDECK_LOG_LEVEL="INFO",
        FLOWDECK_LOG_JSON="true",
        FLOWDECK_OUTBOUND_ALLOW="127.0.0.1/32",
    )
    env.update({f"FLOWDECK_{name.upper()}": value for name, value in settings.items()})
    return env
