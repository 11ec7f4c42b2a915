"""`flowdeck serve` as a real process on a database given by DATABASE_URL: a taken port,
stops at any moment of start-up, and its logs (JSON or readable lines)."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from psycopg import sql

from app.db import with_database
from app.keyring import generate_key
from tests.processes import (
    FLOWDECK,
    Process,
    Served,
    api_processes,
    clean_env,
    free_port,
    paused,
    run,
)


@pytest.fixture(scope="module")
def env(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a serve on a database of its own (dropped at the end)."""
    name = f"flowdeck_serving_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield clean_env(
        DATABASE_URL=with_database(server_url, name),
        FLOWDECK_SECRET_KEY=generate_key(),
        FLOWDECK_DATA_DIR=str(tmp_path_factory.mktemp("data")),
    )
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def tables(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert row is not None
        return int(row[0])


def test_a_taken_port_fails_at_once_with_a_hint_before_any_database_work(
    server_url: str, taken_port: int, tmp_path: Path
) -> None:
    name = f"flowdeck_port_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server_url, name)
    data_dir = tmp_path / "data"
    hint = (
        f"error: 127.0.0.1:{taken_port} is already in use (another Flowdeck, or another "
        f"program).\nChoose another port: flowdeck serve --port {taken_port + 1}, or set "
        f"FLOWDECK_PORT={taken_port + 1} (and FLOWDECK_HOST / --host for another address).\n"
    )
    try:
        for env, args in [
            (clean_env(DATABASE_URL=url), ["--port", str(taken_port)]),
            (clean_env(DATABASE_URL=url, FLOWDECK_PORT=str(taken_port)), []),
            (clean_env(FLOWDECK_DATA_DIR=str(data_dir), FLOWDECK_PORT=str(taken_port)), []),
        ]:
            started = time.monotonic()
            done = run(env, "serve", *args, timeout=30)
            assert time.monotonic() - started < 5
            assert done.returncode == 1
            assert done.stderr == hint
            assert done.stdout == ""
        assert tables(url) == 0  # no migration ran
        assert not data_dir.exists()  # no embedded PostgreSQL was started
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# During start-up (the moment a bind failure used to cancel the embedded worker) and running.
@pytest.mark.parametrize("moment", ["Waiting for application startup", "GraphiQL: "])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_promptly_whenever_the_signal_comes(
    env: dict[str, str], moment: str, sig: signal.Signals
) -> None:
    served = Process([FLOWDECK, "serve", "--port", str(free_port())], env)
    try:
        served.until(moment)
        code, seconds = served.stop(sig)
        assert code == 0, served.rest()
        assert seconds < 5, seconds
    finally:
        served.kill()


def test_json_logs_carry_no_terminal_colours(env: dict[str, str]) -> None:
    served = Served({**env, "FLOWDECK_LOG_JSON": "true"})
    served.stop(signal.SIGTERM)
    lines = served.rest().splitlines()
    banner_start = lines.index("") if "" in lines else len(lines)
    logs = [json.loads(line) for line in lines[:banner_start]]
    events = [entry["event"] for entry in logs]
    assert f"Started server process [{served.pid}]" in events
    assert "Application startup complete." in events
    assert all("color_message" not in entry for entry in logs)
    assert not any("\x1b" in line for line in lines)
    # after the banner: JSON again
    assert all(json.loads(line) for line in lines[banner_start + 7 :])


def test_readable_logs_when_asked(env: dict[str, str]) -> None:
    done = run({**env, "FLOWDECK_LOG_JSON": "false"}, "migrate")
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "database migrated" in line]
    assert not line.startswith("{")
    assert "[info     ] database migrated" in line
    assert "revision=" in line


def _migrate_on_a_terminal(env: dict[str, str]) -> str:
    """`flowdeck migrate` with its stderr on a pseudo-terminal; what it printed there."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [FLOWDECK, "migrate"], env=env, stdout=subprocess.DEVNULL, stderr=follower
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return output.decode()


def test_logs_are_readable_on_a_terminal_and_json_elsewhere_or_in_production(
    env: dict[str, str],
) -> None:
    on_terminal = _migrate_on_a_terminal(env)
    [line] = [line for line in on_terminal.splitlines() if "database migrated" in line]
    assert not line.startswith("{")
    assert "database migrated" in line
    piped = run(env, "migrate")
    [line] = [line for line in piped.stderr.splitlines() if "database migrated" in line]
    assert json.loads(line)["event"] == "database migrated"
    production = _migrate_on_a_terminal({**env, "FLOWDECK_ENV": "production"})
    [line] = [line for line in production.splitlines() if "database migrated" in line]
    assert json.loads(line)["event"] == "database migrated"


def _holds_a_connection(process: psutil.Process, port: int) -> bool:
    return any(
        c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        for c in process.net_connections(kind="tcp")
    )


def test_serve_runs_on_uvloop_and_httptools(env: dict[str, str]) -> None:
    served = Served({**env, "FLOWDECK_LOG_LEVEL": "WARNING"}, None, "--no-worker")
    try:
        assert any("uvloop" in m.path for m in psutil.Process(served.pid).memory_maps())
        assert any("httptools" in m.path for m in psutil.Process(served.pid).memory_maps())
    finally:
        code, _ = served.stop(signal.SIGTERM)
    assert code == 0


def test_serve_with_several_processes_shares_its_port_and_stops_them_all(
    env: dict[str, str],
) -> None:
    minted = run(env, "token", "create", "--email", "p@example.com", "--workspace", "Procs")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    served = Served(env, None, "--no-worker", "--processes", "2")
    try:
        # Then the banner comes once both serve, each on uvloop and httptools
        children = api_processes(served.pid)
        assert len(children) == 2
        for child in children:
            maps = [m.path for m in child.memory_maps()]
            assert any("uvloop" in path for path in maps)
            assert any("httptools" in path for path in maps)
        assert served.banner()[1].startswith("GraphiQL: ")
        # And both answer on the one port: while one is paused, the other takes the
        # connection (and keeps it open)
        clients: list[httpx.Client] = []
        try:
            for other in reversed(children):
                with paused(other):
                    client = httpx.Client(base_url=served.url(""), timeout=10)
                    clients.append(client)
                    body = client.post(
                        "/graphql",
                        json={"query": "{ viewer { email } }"},
                        headers={"authorization": f"Bearer {token}"},
                    ).json()
                assert body == {"data": {"viewer": {"email": "p@example.com"}}}
            assert all(_holds_a_connection(child, served.port) for child in children)
        finally:
            for client in clients:
                client.close()
    finally:
        code, _ = served.stop(signal.SIGTERM)
    # And SIGTERM stops every process, the parent exiting 0
    assert code == 0, served.rest()
    assert not any(child.is_running() and child.status() != "zombie" for child in children)
