"""The `flowdeck` command as a real process: serve, first start, restart, token create."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from tests.databases import scratch_database

FLOWDECK = str(Path(sys.executable).with_name("flowdeck"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env.update(extra)
    return env


class Served:
    """A running `flowdeck serve` and the lines it printed until it was ready."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [FLOWDECK, "serve", "--port", str(port)],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.printed = self._until("GraphiQL: ")
        self._wait_http()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def _until(self, marker: str, timeout: float = 60) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.process.poll() is None, "".join(seen)
                continue
            seen.append(line)
            if line.startswith(marker):
                return seen
        raise AssertionError("".join(seen))

    def _wait_http(self) -> None:
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

    def gql(self, token: str, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(
            self.url("/graphql"),
            json={"query": query, "variables": variables or {}},
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        return response.json()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def token_from(lines: list[str]) -> str | None:
    for line in lines:
        if line.startswith("API token (shown once, keep it): "):
            return line.rsplit(" ", 1)[1].strip()
    return None


def postgres_processes(data_dir: Path) -> list[int]:
    pgdata = str(data_dir / "pgdata")
    return [
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and pgdata in (p.info["cmdline"] or [])
    ]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "flowdeck-data"
    yield path
    for pid in postgres_processes(path):  # only after a failure: never leave a server behind
        os.kill(pid, signal.SIGTERM)
    shutil.rmtree(path, ignore_errors=True)


def test_embedded_first_start_prints_a_token_once_and_restart_keeps_data(data_dir: Path) -> None:
    env = clean_env(FLOWDECK_DATA_DIR=str(data_dir), FLOWDECK_LOG_LEVEL="WARNING")

    first = Served(env, free_port())
    try:
        token = token_from(first.printed)
        assert token is not None, first.printed
        assert any(f"Embedded PostgreSQL: data in {data_dir}" in line for line in first.printed)
        assert first.printed[-1] == f"GraphiQL: http://127.0.0.1:{first.port}/graphql\n"
        me = first.gql(token, "{ viewer { email memberships { role workspace { id name } } } }")
        viewer = me["data"]["viewer"]
        assert viewer["email"] == "admin@flowdeck.localhost"
        assert viewer["memberships"][0]["role"] == "OWNER"
        workspace_id = viewer["memberships"][0]["workspace"]["id"]
        created = first.gql(
            token,
            "mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) { workflow { id } } }",
            {"i": {"workspaceId": workspace_id, "name": "Survives restarts"}},
        )
        assert created["data"]["workflowCreate"]["workflow"]["id"]
    finally:
        first.stop()

    second = Served(env, free_port())
    try:
        assert token_from(second.printed) is None
        listed = second.gql(
            token,
            "query($ws: ID!) { workspace(id: $ws) { workflows(first: 5) { edges { node { name } } } } }",
            {"ws": workspace_id},
        )
        edges = listed["data"]["workspace"]["workflows"]["edges"]
        assert edges == [{"node": {"name": "Survives restarts"}}]
        assert httpx.get(second.url("/readyz")).json()["status"] == "ready"
    finally:
        second.stop()
    assert second.process.returncode == 0
    assert postgres_processes(data_dir) == [], "the embedded PostgreSQL stops with serve"


@pytest.fixture
def database(server_url: str) -> Iterator[str]:
    """An empty database of this test's own."""
    with scratch_database(server_url, "flowdeck_cli") as url:
        yield url


def test_with_database_url_nobody_is_created_unless_asked(server_url: str, database: str) -> None:
    url = database
    env = clean_env(
        DATABASE_URL=url,
        FLOWDECK_LOG_LEVEL="WARNING",
        FLOWDECK_DATA_DIR=tempfile.mkdtemp(prefix="flowdeck-cli-data-"),
    )
    served = Served(env, free_port())
    try:
        assert token_from(served.printed) is None
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)

        created = subprocess.run(
            [FLOWDECK, "token", "create", "--email", "Ops@Example.com", "--workspace", "Ops"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        token = created.stdout.strip()
        me = served.gql(token, "{ viewer { email memberships { role workspace { name } } } }")
        assert me["data"]["viewer"] == {
            "email": "ops@example.com",
            "memberships": [{"role": "OWNER", "workspace": {"name": "Ops"}}],
        }
    finally:
        served.stop()

    config = subprocess.run(
        [FLOWDECK, "config"],
        env={**env, "DATABASE_URL": url.replace("postgres@", "postgres:hunter2@")},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    shown = json.loads(config.stdout)
    assert "hunter2" not in config.stdout
    assert shown["database_url"].startswith("postgresql://postgres:********@")
    assert shown["env"] == "development"
