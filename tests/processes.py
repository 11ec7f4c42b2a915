"""Helpers for tests of `flowdeck` as real processes: start, read, signal, and find the
embedded PostgreSQL they run; workers and API processes on the test database."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.conftest import TEST_SECRET_KEY

FLOWDECK = str(Path(sys.executable).with_name("flowdeck"))
READY = "GraphiQL: "  # the banner line that says serve listens


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_processes(supervisor: int) -> list[psutil.Process]:
    """The API processes a ``serve --processes`` supervisor started (not its resource tracker)."""
    return [
        child
        for child in psutil.Process(supervisor).children()
        if "spawn_main" in " ".join(child.cmdline())
    ]


@contextlib.contextmanager
def paused(process: psutil.Process) -> Iterator[None]:
    """SIGSTOP ``process`` for the block, so that another process sharing its port accepts
    every connection made meanwhile (the kernel does not deal them in turn).

    Kept short: the supervisor restarts a process that misses its 5 s health check.
    """
    process.suspend()
    try:
        yield
    finally:
        process.resume()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without database URLs (the embedded PostgreSQL), plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "TEST_DATABASE_URL") and not k.startswith("FLOWDECK_")
    }
    env.update(extra)
    return env


def run(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run `flowdeck ARGS` to its end."""
    return subprocess.run(
        [FLOWDECK, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Process:
    """A running `flowdeck` (or python) process whose stderr lines are read as they come."""

    def __init__(self, argv: list[str], env: dict[str, str], **popen: Any) -> None:
        self.process = subprocess.Popen(
            argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **popen
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def until(self, marker: str, timeout: float = 90) -> list[str]:
        """The lines printed up to and including the first one containing ``marker``."""
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    raise AssertionError(
                        f"exited {self.process.returncode} before {marker!r}:\n"
                        + "".join(self.seen)
                    ) from None
                continue
            self.seen.append(line)
            if marker in line:
                return self.seen[start:]
        raise AssertionError(f"no {marker!r} within {timeout} s:\n" + "".join(self.seen))

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> tuple[int, float]:
        """Send ``sig``; the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started

    def rest(self) -> str:
        """Everything printed on stderr once the process has exited."""
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                self.seen.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                break
        return "".join(self.seen)

    def kill(self) -> None:
        """After a failed test: SIGKILL the process and every process it started (a
        ``serve --processes`` child would otherwise outlive it, orphaned)."""
        if self.process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(self.process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            self.process.kill()
            self.process.wait(timeout=10)


class Served(Process):
    """A running `flowdeck serve`, read up to its banner and answering /healthz."""

    def __init__(self, env: dict[str, str], port: int | None = None, *args: str) -> None:
        self.port = port or free_port()
        super().__init__([FLOWDECK, "serve", "--port", str(self.port), *args], env)
        self.printed = self.until(READY)
        self.printed += self.until("Stop with Ctrl-C", timeout=5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url("/healthz"), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("serve did not answer /healthz")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def gql(self, token: str, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = httpx.post(
            self.url("/graphql"),
            json={"query": query, "variables": variables or {}},
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        return response.json()

    def banner(self) -> list[str]:
        """The banner's lines: from the blank line before "Flowdeck … is ready." on."""
        lines = [line.rstrip("\n") for line in self.printed]
        start = max(i for i, line in enumerate(lines) if line.startswith("Flowdeck "))
        return lines[start:]


def token_in(banner: list[str]) -> str | None:
    """The token a first-start banner shows, if any."""
    for line in banner:
        if line.startswith("API token (shown once, keep it): "):
            return line.rsplit(" ", 1)[1]
    return None


def postmaster_pid(data_dir: Path) -> int:
    """The pid of the embedded PostgreSQL running on ``data_dir`` (from postmaster.pid)."""
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])


def is_running(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float = 10) -> bool:
    """True once ``pid`` has ended (within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.05)
    return False


def postgres_processes(pgdata: Path) -> list[int]:
    """Every postgres server process whose data directory is ``pgdata``."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmdline = p.info["cmdline"] or []
        if p.info["name"] == "postgres" and str(pgdata) in cmdline:
            found.append(p.pid)
    return found


def stop_postgres(pgdata: Path) -> None:
    """After a failed test: never leave a server behind."""
    for pid in postgres_processes(pgdata):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)


class Processes:
    """Starts `flowdeck worker` and `flowdeck serve` processes; kills what is left at the end."""

    def __init__(self, database_url: str, **settings: str) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"},
            "DATABASE_URL": database_url,
            "FLOWDECK_OUTBOUND_ALLOW": "127.0.0.1/32",
            "FLOWDECK_WORKER_HEARTBEAT_SECONDS": "0.3",
            "FLOWDECK_WORKER_STALLED_SECONDS": "1.5",
            "FLOWDECK_LOG_LEVEL": "WARNING",
            "FLOWDECK_SECRET_KEY": TEST_SECRET_KEY,
            **settings,
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def _spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [FLOWDECK, *argv], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.processes.append(process)
        return process

    def start(self, metrics_port: int | None = None) -> subprocess.Popen[bytes]:
        """A worker (concurrency 4), serving /metrics on ``metrics_port`` when given."""
        serving = ("--metrics-port", str(metrics_port)) if metrics_port else ()
        return self._spawn("worker", "--concurrency", "4", *serving)

    def api(self) -> tuple[subprocess.Popen[bytes], str]:
        """An API process without a worker; returns once it answers, with its base URL."""
        port = free_port()
        process = self._spawn("serve", "--no-worker", "--port", str(port))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    return process, base
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "flowdeck serve exited"
            assert time.monotonic() < deadline, "flowdeck serve did not answer"
            time.sleep(0.1)

    def stop_all(self) -> None:
        """Kill every process still running (a paused one is resumed first), and every
        process it started (a ``serve --processes`` child would otherwise outlive it)."""
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                with contextlib.suppress(psutil.NoSuchProcess):
                    for child in psutil.Process(process.pid).children(recursive=True):
                        with contextlib.suppress(psutil.NoSuchProcess):
                            child.kill()
                process.kill()
            process.wait(timeout=10)
