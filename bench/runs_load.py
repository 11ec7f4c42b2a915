"""Run scenarios under load: ``python -m bench runs`` (or ``flowdeck bench runs``).

Real processes on a scratch database: one `flowdeck serve --no-worker` (production
settings) and one `flowdeck worker`, the webhook rate limit raised. Each scenario is wrk in
a closed loop against a webhook set to wait for its run's result, reporting runs a second,
p50/p99 and the CPU per run of the API process, the worker process and the PostgreSQL
backends of the database (from /proc), beside the floor: the same runs written by plain
psycopg from a bare ASGI app (``bench/run_floor.py``). Then the latency from
``workflowExecute`` to RUNNING with an idle system, the SQL statements of one delivery, and
two API and two worker processes against one of each.

FLOWDECK_BENCH_SECONDS sets each measurement's length (default 15).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from bench.harness import (
    FLOWDECK,
    SAMPLE_SECONDS,
    UVICORN,
    Load,
    ServerProcess,
    _Tally,
    free_port,
    process_cpu_seconds,
    process_tree,
    run_wrk,
    scratch_database,
    server_env,
    statements_per_request,
)

CREATE = """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) {
  workflow { id } userErrors { code message } } }"""
HOOK = """mutation($i: WorkflowWebhookUpdateInput!) { workflowWebhookUpdate(input: $i) {
  webhook { url } userErrors { code message } } }"""
EXECUTE = """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
  run { id } userErrors { code message } } }"""
PUBLISH = """mutation($i: WorkflowPublishInput!) { workflowPublish(input: $i) {
  userErrors { code message } } }"""


def _node(node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "position": {"x": 0, "y": 0}, "data": data}


def chain(nodes: int) -> dict[str, Any]:
    """trigger, then nodes - 2 transform.set, then output; its output is {n, twice}."""
    ids = ["t", *(f"n{i}" for i in range(1, nodes - 1)), "out"]
    graph = [_node("t", "trigger")]
    for i in range(1, nodes - 1):
        source = "trigger" if i == 1 else "input"
        graph.append(
            _node(
                f"n{i}",
                "transform.set",
                fields={"n": f"{{{{ {source}.n }}}}", "twice": f"{{{{ {source}.n * 2 }}}}"}
                if i == 1
                else {"n": "{{ input.n }}", "twice": "{{ input.twice }}"},
            )
        )
    graph.append(_node("out", "output", value="{{ input }}"))
    edges = [
        {"id": f"e{i}", "source": a, "target": b, "sourceHandle": "out", "targetHandle": "in"}
        for i, (a, b) in enumerate(itertools.pairwise(ids))
    ]
    return {"nodes": graph, "edges": edges}


@dataclass(frozen=True)
class RunMeasurement:
    """One scenario under load: runs a second, latency, CPU per run by process."""

    name: str
    runs: int
    seconds: float
    bad: int
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float]  # role → CPU seconds

    def per_run_ms(self, role: str) -> float:
        """CPU of a role per run, in milliseconds."""
        return self.cpu.get(role, 0.0) * 1000 / max(1, self.runs)

    @property
    def total_ms(self) -> float:
        """CPU of every process per run, in milliseconds."""
        return sum(self.cpu.values()) * 1000 / max(1, self.runs)


class Meter:
    """CPU of named process trees and of the database's backends, sampled from /proc."""

    def __init__(self, roles: Mapping[str, Sequence[int]], database_url: str) -> None:
        self.roles = roles
        self.database_url = database_url
        self.tallies = {role: _Tally() for role in [*roles, "postgres"]}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, conn: psycopg.Connection[Any], *, first: bool) -> None:
        for role, pids in self.roles.items():
            for root in pids:
                for pid in process_tree(root):
                    self.tallies[role].see(pid, process_cpu_seconds(pid), new=not first)
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        for (pid,) in rows:
            self.tallies["postgres"].see(pid, process_cpu_seconds(pid), new=not first)

    def __enter__(self) -> Meter:
        conn = psycopg.connect(self.database_url, autocommit=True)
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

    def seconds(self) -> dict[str, float]:
        """CPU seconds by role since the meter started."""
        return {role: tally.total() for role, tally in self.tallies.items()}


def measure_runs(
    name: str,
    targets: Sequence[tuple[str, Load]],
    roles: Mapping[str, Sequence[int]],
    database_url: str,
    *,
    concurrency: int,
    seconds: float,
) -> RunMeasurement:
    """Load each (base URL, load) target at ``concurrency`` at once, metering every role."""
    for base, load in targets:  # warm-up: connections, caches, prepared statements
        run_wrk(base, load, concurrency=concurrency, seconds=2)
    results: list[dict[str, int]] = []
    with Meter(roles, database_url) as meter:
        threads = [
            threading.Thread(
                target=lambda b=base, ld=load: results.append(
                    run_wrk(b, ld, concurrency=concurrency, seconds=seconds)
                )
            )
            for base, load in targets
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return RunMeasurement(
        name=name,
        runs=sum(r["requests"] for r in results),
        seconds=max(r["us"] for r in results) / 1e6,
        bad=sum(r["bad"] + r["socket"] for r in results),
        p50_ms=max(r["p50"] for r in results) / 1000,
        p99_ms=max(r["p99"] for r in results) / 1000,
        cpu=meter.seconds(),
    )


class System:
    """API and worker processes of Flowdeck on one database, and a token to call them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.env = server_env(
            url,
            FLOWDECK_WEBHOOK_RATE_PER_SECOND="1000000",
            FLOWDECK_WEBHOOK_RATE_BURST="1000000",
            FLOWDECK_WORKER_CONCURRENCY="20",
        )
        self.apis: list[ServerProcess] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.token = ""

    def start(self, apis: int, workers: int) -> None:
        """Start processes until there are ``apis`` API and ``workers`` worker ones."""
        while len(self.apis) < apis:
            port = free_port()
            argv = [FLOWDECK, "serve", "--no-worker", "--port", str(port)]
            self.apis.append(ServerProcess(argv, port=port, env=self.env))
        while len(self.workers) < workers:
            argv = [FLOWDECK, "worker"]
            self.workers.append(subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL))
        if not self.token:
            argv = [FLOWDECK, "token", "create", "--email", "bench@example.com"]
            argv += ["--workspace", "Bench"]
            out = subprocess.run(argv, env=self.env, check=True, capture_output=True, text=True)
            self.token = out.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        """Stop every process."""
        for api in self.apis:
            api.stop()
        for worker in self.workers:
            worker.terminate()
            worker.wait(timeout=30)

    def roles(self) -> dict[str, list[int]]:
        """The pids of each role."""
        return {"api": [a.pid for a in self.apis], "worker": [w.pid for w in self.workers]}

    def gql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """A GraphQL call to the first API process."""
        response = httpx.post(
            self.apis[0].base_url + "/graphql",
            json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    def workspace_id(self) -> str:
        """The bench workspace's id."""
        data = self.gql("{ viewer { memberships { workspace { id } } } }", {})
        return str(data["viewer"]["memberships"][0]["workspace"]["id"])

    def workflow(self, graph: dict[str, Any], name: str) -> tuple[str, str]:
        """A workflow with a webhook that waits for the result: its id and hook path."""
        created = self.gql(
            CREATE, {"i": {"workspaceId": self.workspace_id(), "name": name, "graph": graph}}
        )["workflowCreate"]
        assert created["userErrors"] == [], created
        workflow_id = created["workflow"]["id"]
        # A webhook runs the published version: publish version 1 (none was published: 0).
        published = self.gql(
            PUBLISH, {"i": {"workflowId": workflow_id, "version": 1, "baseVersion": 0}}
        )["workflowPublish"]
        assert published["userErrors"] == [], published
        hook = self.gql(
            HOOK, {"i": {"workflowId": workflow_id, "enabled": True, "waitForResult": True}}
        )["workflowWebhookUpdate"]
        assert hook["userErrors"] == [], hook
        return workflow_id, "/hooks/" + hook["webhook"]["url"].rsplit("/", 1)[1]


def _load(path: str) -> Load:
    bodies = [json.dumps({"n": n}).encode() for n in range(100)]
    return Load(path=path, bodies=bodies, headers={"content-type": "application/json"})


def _floor(url: str, nodes: int) -> ServerProcess:
    with psycopg.connect(url) as conn:
        workspace, workflow, version = conn.execute(
            "SELECT w.workspace_id, w.id, v.id FROM workflows w "
            "JOIN workflow_versions v ON v.workflow_id = w.id LIMIT 1"
        ).fetchone() or ("", "", "")
    port = free_port()
    argv = [UVICORN, "bench.run_floor:app", "--port", str(port), "--loop", "uvloop"]
    argv += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
    env = server_env(
        url,
        FLOOR_WORKSPACE=str(workspace),
        FLOOR_WORKFLOW=str(workflow),
        FLOOR_VERSION=str(version),
        FLOOR_NODES=str(nodes),
    )
    return ServerProcess(argv, port=port, env=env)


def execute_to_running(system: System, workflow_id: str, count: int = 200) -> list[float]:
    """Milliseconds from queued to started of runs executed one at a time (idle system)."""
    for _ in range(count):
        data = system.gql(EXECUTE, {"i": {"workflowId": workflow_id, "input": {"n": 1}}})
        assert data["workflowExecute"]["userErrors"] == []
        time.sleep(0.02)
    time.sleep(1)
    with psycopg.connect(system.url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM started_at - queued_at) * 1000 FROM runs "
            "WHERE trigger = 'MANUAL' ORDER BY queued_at"
        ).fetchall()
    return [float(r[0]) for r in rows[10:] if r[0] is not None]


def _deliver(url: str) -> None:
    httpx.post(url, json={"n": 1}, timeout=30)


def wal_per_run(system: System, path: str, count: int = 200) -> float:
    """WAL bytes written per delivery run (sent one at a time, the system otherwise idle)."""
    base = system.apis[0].base_url
    with psycopg.connect(system.url, autocommit=True) as conn:
        start = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        for n in range(count):
            httpx.post(base + path, json={"n": n}, timeout=30)
        end = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", start).fetchone()
    assert end is not None
    return float(end[0]) / count


def report(rows: list[RunMeasurement], floors: dict[str, RunMeasurement]) -> str:
    """The table: runs/s, latency and CPU per run by process, beside the floor."""
    lines = [
        f"{'scenario':<44}{'runs/s':>8}{'p50':>7}{'p99':>7}{'api':>7}{'worker':>7}{'pg':>7}"
        f"{'total':>7}{'bad':>5}   floor runs/s, total ms",
    ]
    for row in rows:
        floor = floors.get(row.name)
        tail = f"   {floor.runs / floor.seconds:.0f}, {floor.total_ms:.2f}" if floor else ""
        lines.append(
            f"{row.name:<44}{row.runs / row.seconds:>8.0f}{row.p50_ms:>7.1f}{row.p99_ms:>7.1f}"
            f"{row.per_run_ms('api'):>7.2f}{row.per_run_ms('worker'):>7.2f}"
            f"{row.per_run_ms('postgres'):>7.2f}{row.total_ms:>7.2f}{row.bad:>5}{tail}"
        )
    lines.append("(latency and CPU in ms per run; CPU from /proc of every process involved)")
    return "\n".join(lines)


def main() -> None:
    """Every run scenario and its floor, on a scratch database; prints the table."""
    seconds = float(os.environ.get("FLOWDECK_BENCH_SECONDS", 15))
    rows: list[RunMeasurement] = []
    floors: dict[str, RunMeasurement] = {}
    extra: list[str] = []
    with scratch_database("flowdeck_bench_runs") as url:
        system = System(url)
        try:
            system.start(apis=1, workers=1)
            three_id, three = system.workflow(chain(3), "three")
            _, ten = system.workflow(chain(10), "ten")
            base = system.apis[0].base_url
            for name, path, c in (
                ("webhook → 3 nodes → response, c=1", three, 1),
                ("webhook → 3 nodes → response, c=10", three, 10),
                ("webhook → 10-node chain → response, c=10", ten, 10),
            ):
                rows.append(
                    measure_runs(
                        name,
                        [(base, _load(path))],
                        system.roles(),
                        url,
                        concurrency=c,
                        seconds=seconds,
                    )
                )
            for name, nodes, c in (
                ("webhook → 3 nodes → response, c=1", 3, 1),
                ("webhook → 3 nodes → response, c=10", 3, 10),
                ("webhook → 10-node chain → response, c=10", 10, 10),
            ):
                floor = _floor(url, nodes)
                try:
                    floors[name] = measure_runs(
                        name,
                        [(floor.base_url, _load("/"))],
                        {"api": [floor.pid]},
                        url,
                        concurrency=c,
                        seconds=seconds,
                    )
                finally:
                    floor.stop()
            counted = statements_per_request(
                url, lambda: httpx.post(base + three, json={"n": 1}, timeout=30)
            )
            if counted is not None:
                extra.append(f"statements per 3-node delivery: {counted.per_request:.1f}")
                extra += [f"  {calls:5.1f}  {query[:110]}" for calls, query in counted.by_statement]
            for label, path in (("3-node", three), ("10-node", ten)):
                extra.append(f"WAL per {label} run: {wal_per_run(system, path):.0f} bytes")
                counted = statements_per_request(url, functools.partial(_deliver, base + path))
                if counted is not None:
                    extra.append(
                        f"statements per {label} run: {counted.queries:.2f} "
                        f"(with BEGIN/COMMIT/SET: {counted.per_request:.2f})"
                    )
            latencies = execute_to_running(system, three_id)
            extra.append(
                f"workflowExecute → RUNNING, idle, one at a time: p50 "
                f"{statistics.median(latencies):.1f} ms, p99 "
                f"{sorted(latencies)[int(len(latencies) * 0.99) - 1]:.1f} ms"
            )
            single = rows[1]
            system.start(apis=2, workers=2)
            scaled = measure_runs(
                "webhook → 3 nodes, c=10 per API: 2 API + 2 workers",
                [(a.base_url, _load(three)) for a in system.apis],
                system.roles(),
                url,
                concurrency=10,
                seconds=seconds,
            )
            rows.append(scaled)
            extra.append(
                f"2 API + 2 workers: {scaled.runs / scaled.seconds:.0f} runs/s against "
                f"{single.runs / single.seconds:.0f} with one of each"
            )
        finally:
            system.stop()
    print(report(rows, floors))
    print("\n".join(extra))
