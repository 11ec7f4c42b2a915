"""The embedded PostgreSQL as real processes: the first-start banner, and a server that
stops with its last owner whatever the way out (SIGTERM, Ctrl-C, an exception, a deleted
data directory, a kill -9 of the previous owner)."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    FLOWDECK,
    Process,
    Served,
    clean_env,
    is_running,
    postgres_processes,
    postmaster_pid,
    run,
    stop_postgres,
    token_in,
    wait_gone,
)
from tests.runs import edge, node

VERSION = version("flowdeck")


@dataclass
class FirstStart:
    """The module's one first start (initdb takes ~15 s): what it printed and left."""

    env: dict[str, str]
    data_dir: Path
    template: Path  # a copy of its stopped pgdata, for tests that need a throwaway server
    printed: list[str]
    banner: list[str]
    port: int
    token: str
    exit_code: int
    postmaster: int


@pytest.fixture(scope="module")
def first() -> Iterator[FirstStart]:
    # Not under pytest's tmp dirs: another pytest session on the machine prunes old ones.
    root = Path(tempfile.mkdtemp(prefix="flowdeck-embedded-"))
    data_dir = root / "data"
    env = clean_env(FLOWDECK_DATA_DIR=str(data_dir), FLOWDECK_LOG_JSON="true")
    try:
        served = Served(env)
        postmaster = postmaster_pid(data_dir)
        token = token_in(served.banner())
        assert token is not None, served.printed
        code, _ = served.stop(signal.SIGINT)
        copy_tree(data_dir / "pgdata", root / "template")
        yield FirstStart(
            env, data_dir, root / "template", served.printed, served.banner(), served.port, token,
            code, postmaster,
        )  # fmt: skip
    finally:
        stop_postgres(data_dir / "pgdata")
        shutil.rmtree(root, ignore_errors=True)


def copy_tree(source: Path, target: Path) -> None:
    """Copy a stopped data directory with its owners (as root, pgserver runs PostgreSQL as
    the user `pgserver`)."""
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


def owners(data_dir: Path) -> list[int]:
    """The pids in the owners file of the embedded PostgreSQL."""
    path = data_dir / "pgdata" / "flowdeck-owners.json"
    return [row["pid"] for row in json.loads(path.read_text())] if path.exists() else []


def test_first_start_says_it_is_creating_the_database_then_prints_a_plain_banner(
    first: FirstStart,
) -> None:
    printed = [line.rstrip("\n") for line in first.printed]
    progress = (
        f"Embedded PostgreSQL: first start, creating its database in {first.data_dir}/pgdata "
        "(about 15 seconds)..."
    )
    assert printed[0] == progress  # before the silent initdb, not after it
    assert printed.index(f"Embedded PostgreSQL: data in {first.data_dir}") > 0
    assert first.banner == [
        f"Flowdeck {VERSION} is ready.",
        f"GraphiQL: http://127.0.0.1:{first.port}/graphql",
        'First start: created admin@flowdeck.localhost, owner of "My workspace".',
        f"API token (shown once, keep it): {first.token}",
        f"Send it as the header  Authorization: Bearer {first.token}  (GraphiQL: Headers tab)",
        "Stop with Ctrl-C; the embedded PostgreSQL stops with it.",
    ]
    # The banner comes after the start-up log lines (JSON here), as one block of plain lines
    assert printed[printed.index(first.banner[0]) - 1] == ""
    assert all(line.startswith("{") for line in printed[1:-7] if "Embedded" not in line)
    assert sum(first.token in line for line in printed) == 2  # shown once (token and header)
    # Ctrl-C stopped serve and its PostgreSQL
    assert first.exit_code == 0
    assert not is_running(first.postmaster)


def test_a_restart_keeps_the_data_and_says_how_to_mint_a_token_which_works(
    first: FirstStart,
) -> None:
    served = Served(first.env)
    try:
        assert not any("first start" in line for line in served.printed)
        mint = "flowdeck token create --email admin@flowdeck.localhost --workspace 'My workspace'"
        assert served.banner() == [
            f"Flowdeck {VERSION} is ready.",
            f"GraphiQL: http://127.0.0.1:{served.port}/graphql",
            f"A new API token: {mint}",
            "Stop with Ctrl-C; the embedded PostgreSQL stops with it.",
        ]
        viewer = "{ viewer { email memberships { role workspace { name } } } }"
        me = served.gql(first.token, viewer)["data"]["viewer"]
        assert me == {
            "email": "admin@flowdeck.localhost",
            "memberships": [{"role": "OWNER", "workspace": {"name": "My workspace"}}],
        }
        # The printed command, run as printed, while serve runs on the same PostgreSQL
        created = run(first.env, *shlex.split(mint)[1:])
        assert created.returncode == 0, created.stderr
        new_token = created.stdout.strip()
        assert served.gql(new_token, viewer)["data"]["viewer"] == me
        # token create joined the running server and left it running for serve
        assert owners(first.data_dir) == [served.pid]
        assert httpx.get(served.url("/readyz")).json()["status"] == "ready"
        postmaster = postmaster_pid(first.data_dir)
    finally:
        code, _ = served.stop(signal.SIGTERM)
    assert code == 0
    assert not is_running(postmaster)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_serve_and_its_postgresql_promptly(
    first: FirstStart, sig: signal.Signals
) -> None:
    served = Served(first.env)
    postmaster = postmaster_pid(first.data_dir)
    code, seconds = served.stop(sig)
    assert code == 0, served.rest()
    assert seconds < 5, seconds
    assert not is_running(postmaster)
    assert postgres_processes(first.data_dir / "pgdata") == []


def test_after_a_kill_9_the_next_start_clears_the_stale_owner_and_ctrl_c_stops_postgresql(
    first: FirstStart,
) -> None:
    killed = Served(first.env)
    postmaster = postmaster_pid(first.data_dir)
    assert owners(first.data_dir) == [killed.pid]
    killed.kill()  # SIGKILL: nothing runs in serve, its PostgreSQL stays up
    assert is_running(postmaster)
    assert owners(first.data_dir) == [killed.pid]

    served = Served(first.env)
    assert postmaster_pid(first.data_dir) == postmaster  # joined the orphan
    assert owners(first.data_dir) == [served.pid]  # the dead owner is cleared
    pgserver_handles = first.data_dir / "pgdata" / ".handle_pids.json"
    assert json.loads(pgserver_handles.read_text()) == []
    code, _ = served.stop(signal.SIGINT)
    assert code == 0
    assert not is_running(postmaster)
    assert postgres_processes(first.data_dir / "pgdata") == []


# As `flowdeck bench` does (bench.suite.server_url): an embedded PostgreSQL in a scratch
# directory (a copy of the template here, to skip initdb) deleted at the end of a `with`
# block, under the running server, before the process exits.
BENCH_LIKE = """
import subprocess, sys, tempfile, time
from pathlib import Path
from app.db import start_embedded_postgres

mode, template = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as scratch:
    subprocess.run(["cp", "-a", template, str(Path(scratch) / "pgdata")], check=True)
    start_embedded_postgres(Path(scratch) / "pgdata")
    pid = (Path(scratch) / "pgdata" / "postmaster.pid").read_text().split()[0]
    print(f"postmaster {pid} {scratch}", file=sys.stderr, flush=True)
    if mode == "exception":
        raise RuntimeError("the bench failed")
    if mode == "signal":
        time.sleep(60)
"""


@pytest.mark.parametrize(
    ("mode", "sig", "expected_code"),
    [
        ("exit", None, 0),
        ("exception", None, 1),
        ("signal", signal.SIGTERM, 128 + signal.SIGTERM),
        ("signal", signal.SIGHUP, 128 + signal.SIGHUP),
        ("signal", signal.SIGINT, -signal.SIGINT),
    ],
)
def test_a_bench_like_process_leaves_no_postgresql_behind(
    first: FirstStart, mode: str, sig: signal.Signals | None, expected_code: int
) -> None:
    process = Process([sys.executable, "-c", BENCH_LIKE, mode, str(first.template)], clean_env())
    _, pid, scratch = process.until("postmaster ")[-1].split()
    pgdata = Path(scratch) / "pgdata"
    try:
        if sig is not None:
            time.sleep(0.2)
            process.process.send_signal(sig)
        assert process.process.wait(timeout=30) == expected_code, process.rest()
        assert not Path(scratch).exists()  # deleted under the running server, as bench does
        assert not is_running(int(pid))
    finally:
        process.kill()
        stop_postgres(pgdata)


def test_two_owners_the_server_stops_with_the_last_one(first: FirstStart) -> None:
    served = Served(first.env)
    postmaster = postmaster_pid(first.data_dir)
    worker = Process([FLOWDECK, "worker"], first.env)
    try:
        worker.until("Worker started")
        assert sorted(owners(first.data_dir)) == sorted([served.pid, worker.pid])
        assert served.stop(signal.SIGTERM)[0] == 0
        assert is_running(postmaster)  # the worker still uses it
        assert owners(first.data_dir) == [worker.pid]
        # The last owner stops PostgreSQL on its way out, waiting up to 15 s for a fast
        # shutdown, 5 s for an immediate one and 5 s after SIGKILL (app/db.py), after its
        # jobs' 5 s of grace: 60 s covers that design, and a hang shows what the worker said.
        try:
            code, _ = worker.stop(signal.SIGTERM, timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise AssertionError(f"the worker did not stop:\n{worker.rest()[-4000:]}") from None
        assert code == 0, worker.rest()
        assert wait_gone(postmaster, timeout=1)
    finally:
        served.kill()
        worker.kill()


CREATE = """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) {
  workflow { id } userErrors { code message } } }"""
EXECUTE = """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
  run { id } userErrors { code message } } }"""
STEPS = """query($id: ID!) { run(id: $id) { status steps { nodeId status } } }"""


def start_a_long_run(served: Served, token: str) -> None:
    """A run whose step waits 20 s, running on serve's embedded worker when this returns."""
    me = served.gql(token, "{ viewer { memberships { workspace { id } } } }")
    workspace_id = me["data"]["viewer"]["memberships"][0]["workspace"]["id"]
    graph = {
        "nodes": [node("t", "trigger"), node("wait", "flow.delay", seconds=20)],
        "edges": [edge("t", "wait")],
    }
    created = served.gql(
        token,
        CREATE,
        {"i": {"workspaceId": workspace_id, "name": f"Long {time.time()}", "graph": graph}},
    )
    workflow_id = created["data"]["workflowCreate"]["workflow"]["id"]
    executed = served.gql(token, EXECUTE, {"i": {"workflowId": workflow_id}})
    run_id = executed["data"]["workflowExecute"]["run"]["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        steps = served.gql(token, STEPS, {"id": run_id})["data"]["run"]["steps"]
        if {s["nodeId"]: s["status"] for s in steps}["wait"] == "RUNNING":
            return
        time.sleep(0.1)
    raise AssertionError(f"the step did not start: {steps}")


def test_serve_that_does_not_stop_within_its_deadline_exits_anyway_and_stops_postgresql(
    first: FirstStart,
) -> None:
    # The worker gives a running step 5 s to finish; the deadline here is shorter. (A run the
    # API process drives itself is released at once: this one must be on the worker.)
    served = Served(
        {**first.env, "FLOWDECK_SHUTDOWN_TIMEOUT_SECONDS": "1", "FLOWDECK_INLINE_RUNS": "0"}
    )
    postmaster = postmaster_pid(first.data_dir)
    start_a_long_run(served, first.token)
    code, seconds = served.stop(signal.SIGTERM)
    assert code == 1
    assert 1 <= seconds < 4, seconds
    assert (
        "flowdeck serve: not stopped after 1 s (FLOWDECK_SHUTDOWN_TIMEOUT_SECONDS): exiting\n"
        in served.rest()
    )
    assert not is_running(postmaster)


def test_a_second_signal_makes_serve_exit_at_once_and_stops_postgresql(first: FirstStart) -> None:
    served = Served({**first.env, "FLOWDECK_INLINE_RUNS": "0"})  # the run on the worker
    postmaster = postmaster_pid(first.data_dir)
    start_a_long_run(served, first.token)
    served.process.send_signal(signal.SIGTERM)
    served.until("Shutting down", timeout=10)
    code, seconds = served.stop(signal.SIGINT)
    assert code == 128 + signal.SIGINT
    assert seconds < 3, seconds
    assert "flowdeck serve: second SIGINT: exiting without waiting\n" in served.rest()
    assert not is_running(postmaster)
