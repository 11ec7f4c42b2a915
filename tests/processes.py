"""Flowdeck processes for tests: `flowdeck worker` and `flowdeck serve` on the test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_SECRET_KEY

FLOWDECK = str(Path(sys.executable).with_name("flowdeck"))


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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

    def start(self) -> subprocess.Popen[bytes]:
        """A worker (concurrency 4)."""
        return self._spawn("worker", "--concurrency", "4")

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
        """Kill every process still running (a paused one is resumed first)."""
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
            process.wait(timeout=10)
