"""Closed-loop HTTP load against a real server process, with CPU per request from /proc.

The pieces every process-level scenario needs, whatever it measures:

- ``scratch_database``: a database of its own on the bench's server, dropped afterwards;
- ``ServerProcess`` / ``api_process``: a real `flowdeck serve --no-worker` (uvicorn with
  production settings) or any other ASGI app under uvicorn, on a free port;
- ``measure``: wrk at concurrency c for a fixed duration (closed loop: each connection sends
  its next request when the previous answer arrived), reporting req/s, p50/p99 and the CPU
  the server process (and its children) and the PostgreSQL backends serving it used, per
  request. The load generator's own CPU is not counted: it is another process;
- ``statements_per_request``: SQL statements per request from pg_stat_statements;
- ``profile``: py-spy's view of a server process under load, aggregated.

CPU comes from utime+stime in /proc/<pid>/stat, sampled a few times a second (backends that
start or end during a run are counted from their first to their last sample). The backends
are the ones pg_stat_activity shows on the scratch database, which only the server under
test uses; the meter's own connection is left out. PostgreSQL must run on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from app.db import libpq_url, start_embedded_postgres, with_database
from app.keyring import generate_key

FLOWDECK = str(Path(sys.executable).with_name("flowdeck"))
UVICORN = str(Path(sys.executable).with_name("uvicorn"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS = 0.25


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bench_server_url(scratch: Path) -> str:
    """The server to measure on: TEST_DATABASE_URL, DATABASE_URL, else an embedded one."""
    for name in ("TEST_DATABASE_URL", "DATABASE_URL"):
        if os.environ.get(name):
            return libpq_url(os.environ[name])
    return start_embedded_postgres(scratch / "pgdata")


@contextlib.contextmanager
def scratch_database(prefix: str = "flowdeck_bench") -> Iterator[str]:
    """A new database on the bench's server for as long as the block lasts; its URL."""
    with tempfile.TemporaryDirectory() as scratch:
        server = bench_server_url(Path(scratch))
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield with_database(server, name)
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


class ServerProcess:
    """A server in its own process, started and awaited until ``ready_path`` answers 200."""

    def __init__(
        self, argv: Sequence[str], *, port: int, env: dict[str, str], ready_path: str = "/healthz"
    ) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(list(argv), env=env, stdout=subprocess.DEVNULL)
        self._wait_ready(ready_path)

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def _wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + path, timeout=2).status_code == 200:
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args!r} exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.process.args!r} did not become ready")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a production Flowdeck process on ``url``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "DATABASE_URL")}
    env.update(
        DATABASE_URL=url,
        FLOWDECK_ENV="production",
        FLOWDECK_LOG_LEVEL="WARNING",
        # Production with an external database requires a key.
        FLOWDECK_SECRET_KEY=generate_key(),
        **extra,
    )
    return env


def api_process(url: str, *args: str, **extra_env: str) -> ServerProcess:
    """`flowdeck serve --no-worker` (production settings) on a free port."""
    port = free_port()
    argv = [FLOWDECK, "serve", "--no-worker", "--port", str(port), *args]
    return ServerProcess(argv, port=port, env=server_env(url, **extra_env))


def uvicorn_process(url: str, app: str, *, ready_path: str, **extra_env: str) -> ServerProcess:
    """Any ASGI app (``module:attribute``) under uvicorn with uvloop and httptools."""
    port = free_port()
    argv = [UVICORN, app, "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    argv += ["--no-access-log", "--log-level", "warning"]
    return ServerProcess(argv, port=port, env=server_env(url, **extra_env), ready_path=ready_path)


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (uvicorn --workers, a reloader)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(text[text.rfind(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += parents.get(current, [])
    return tree


@dataclass
class _Tally:
    """First and last CPU reading of each process seen."""

    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)

    def see(self, pid: int, seconds: float | None, *, new: bool) -> None:
        if seconds is None:
            return
        self.first.setdefault(pid, 0.0 if new else seconds)
        self.last[pid] = seconds

    def total(self) -> float:
        return sum(self.last[p] - self.first[p] for p in self.last)


class CpuMeter:
    """Samples the CPU of a server's processes and of the backends of its database."""

    def __init__(self, server_pid: int, database_url: str) -> None:
        self.server_pid = server_pid
        self.database_url = database_url
        self.api = _Tally()
        self.postgres = _Tally()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, conn: psycopg.Connection, *, first: bool) -> None:
        for pid in process_tree(self.server_pid):
            self.api.see(pid, process_cpu_seconds(pid), new=not first)
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        for (pid,) in rows:
            self.postgres.see(pid, process_cpu_seconds(pid), new=not first)

    def __enter__(self) -> CpuMeter:
        conn = psycopg.connect(
            self.database_url, autocommit=True, application_name="flowdeck-bench-meter"
        )
        self._sample(conn, first=True)

        def loop() -> None:
            with conn:
                while not self._stop.wait(SAMPLE_SECONDS):
                    self._sample(conn, first=False)
                self._sample(conn, first=False)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()


@dataclass(frozen=True)
class Load:
    """What each request of a load is: one of ``bodies`` in turn (GET when there is none)."""

    path: str | Sequence[str]
    bodies: Sequence[bytes] = ()
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        """The request paths, taken in turn."""
        return [self.path] if isinstance(self.path, str) else list(self.path)


@dataclass(frozen=True)
class Measurement:
    """One scenario measured under load."""

    name: str
    requests: int
    seconds: float
    bad: int
    p50_ms: float
    p99_ms: float
    api_cpu_seconds: float
    pg_cpu_seconds: float

    @property
    def per_second(self) -> float:
        """Requests answered a second."""
        return self.requests / self.seconds

    @property
    def api_ms(self) -> float:
        """Server-process CPU per request, in milliseconds."""
        return self.api_cpu_seconds * 1000 / max(1, self.requests)

    @property
    def pg_ms(self) -> float:
        """PostgreSQL backend CPU per request, in milliseconds."""
        return self.pg_cpu_seconds * 1000 / max(1, self.requests)


def _lua_string(value: str | bytes) -> str:
    text = value.decode() if isinstance(value, bytes) else value
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def wrk_script(load: Load) -> str:
    """The Lua that makes wrk send ``load`` and count wrong answers (non-200 or errors)."""
    lines = [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in load.headers.items()]
    lines.append("local paths = {" + ", ".join(_lua_string(p) for p in load.paths) + "}")
    lines.append("local bodies = {" + ", ".join(_lua_string(b) for b in load.bodies) + "}")
    method = "POST" if load.bodies else "GET"
    lines.append(
        f"""
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) n = math.random(1, 1000); bad = 0 end
function request()
  n = n + 1
  local body = nil
  if #bodies > 0 then body = bodies[(n % #bodies) + 1] end
  return wrk.format("{method}", paths[(n % #paths) + 1], nil, body)
end
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do wrong = wrong + thread:get("bad") end
  io.write(string.format(
    'WRK {{"requests": %d, "us": %d, "bad": %d, "socket": %d, "p50": %d, "p99": %d}}\\n',
    summary.requests, summary.duration, wrong,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
    )
    return "\n".join(lines)


def run_wrk(base_url: str, load: Load, *, concurrency: int, seconds: float) -> dict[str, int]:
    """wrk's summary of a closed-loop run."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is needed for the load: apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(load))
    try:
        threads = max(1, min(2, concurrency))
        duration = f"{max(1, round(seconds))}s"
        argv = [wrk, "-t", str(threads), "-c", str(concurrency), "-d", duration]
        argv += ["--timeout", "10s", "-s", script.name, base_url]
        output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(script.name)
    line = next(x for x in output.splitlines() if x.startswith("WRK "))
    return dict(json.loads(line[4:]))


def measure(
    name: str,
    server: ServerProcess,
    database_url: str,
    load: Load,
    *,
    concurrency: int = 10,
    seconds: float = 15.0,
    warmup_seconds: float = 3.0,
) -> Measurement:
    """Warm the server up, then load it for ``seconds`` while metering its CPU."""
    if warmup_seconds > 0:
        run_wrk(server.base_url, load, concurrency=concurrency, seconds=warmup_seconds)
    with CpuMeter(server.pid, database_url) as meter:
        summary = run_wrk(server.base_url, load, concurrency=concurrency, seconds=seconds)
    return Measurement(
        name=name,
        requests=summary["requests"],
        seconds=summary["us"] / 1e6,
        bad=summary["bad"] + summary["socket"],
        p50_ms=summary["p50"] / 1000,
        p99_ms=summary["p99"] / 1000,
        api_cpu_seconds=meter.api.total(),
        pg_cpu_seconds=meter.postgres.total(),
    )


@dataclass(frozen=True)
class StatementCount:
    """SQL statements per request, from pg_stat_statements."""

    per_request: float
    queries: float  # the same without BEGIN / COMMIT / ROLLBACK / SET
    by_statement: list[tuple[float, str]]


UTILITY = ("BEGIN", "COMMIT", "ROLLBACK", "SET ", "RESET", "DEALLOCATE", "DISCARD", "LISTEN")


def statements_per_request(
    database_url: str, send: Callable[[], object], *, requests: int = 50
) -> StatementCount | None:
    """Statements the database ran per ``send()``; None without pg_stat_statements."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
        except psycopg.Error:
            return None
        send()  # a warm-up request: plans, caches and prepared statements in place
        conn.execute(
            "SELECT pg_stat_statements_reset(0, "
            "(SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
        )
        for _ in range(requests):
            send()
        rows = conn.execute(
            "SELECT calls, query FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC, query"
        ).fetchall()
    by_statement = [(calls / requests, " ".join(query.split())) for calls, query in rows]
    total = sum(calls for calls, _ in by_statement)
    queries = sum(c for c, q in by_statement if not q.upper().startswith(UTILITY))
    return StatementCount(per_request=total, queries=queries, by_statement=by_statement)


def profile(pid: int, seconds: float, during: Callable[[], object]) -> Counter[str]:
    """py-spy samples of ``pid`` while ``during()`` runs, as collapsed stacks with counts."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as out:
        path = out.name
    recorder = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format",
         "raw", "--output", path, "--nonblocking", "--rate", "200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        during()
    finally:
        recorder.wait()
    stacks: Counter[str] = Counter()
    with open(path) as collapsed:
        for line in collapsed:
            stack, _, count = line.rstrip().rpartition(" ")
            if stack and count.isdigit():  # a frame's name may hold a line break
                stacks[stack] += int(count)
    os.unlink(path)
    return stacks


PACKAGES = {
    "sqlalchemy": "SQLAlchemy",
    "psycopg": "psycopg",
    "psycopg_pool": "psycopg",
    "strawberry": "Strawberry",
    "graphql": "graphql-core",
    "starlette": "HTTP stack",
    "uvicorn": "HTTP stack",
    "httptools": "HTTP stack",
    "cross_web": "HTTP stack",
    "app": "Flowdeck (app/)",
    "schema": "Flowdeck (schema/)",
    "orjson": "orjson",
    "asyncio": "event loop",
    "uvloop": "event loop",
}


def _package(frame: str) -> str:
    # A raw frame reads "function (path/to/module.py:line)".
    path = frame[frame.rfind("(") + 1 :]
    if "site-packages/" in path:
        top = path.split("site-packages/", 1)[1].split("/", 1)[0]
    elif "/lib/python3" in path:
        top = path.split("/lib/python3", 1)[1].split("/", 2)[1].removesuffix(".py")
    else:
        top = path.split("/", 1)[0] if "/" in path else path
    return PACKAGES.get(top, top)


def summarize_profile(stacks: Counter[str], top: int = 15) -> str:
    """Where the samples were: by package (own time) and the costliest functions."""
    total = sum(stacks.values()) or 1
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        leaf = frames[-1]
        by_package[_package(leaf)] += count
        by_function[leaf] += count
        for frame in set(frames):
            if _package(frame).startswith("Flowdeck"):
                inclusive[frame] += count
    lines = [f"  {total} samples; own time by package:"]
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in by_package.most_common(10)]
    lines.append("  own time, top functions:")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in by_function.most_common(top)]
    lines.append("  Flowdeck functions, time inside them (inclusive):")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)
