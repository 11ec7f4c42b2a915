"""Workers as real processes: kill -9 mid-run, SIGSTOP past the lease, a node that kills them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.factories import Factory
from tests.processes import Processes
from tests.runs import (
    cancel_run,
    create_workflow,
    execute,
    flow,
    node,
    read_run,
    start_run,
    steps_by_node,
    wait_for,
    wait_step,
)
from tests.servers import LocalHTTP


@pytest.fixture
def workers(database_url: str) -> Iterator[Processes]:
    pool = Processes(database_url)
    yield pool
    pool.stop_all()


@pytest.fixture
def server() -> Iterator[LocalHTTP]:
    """The outside world, its routes set by each test."""
    local = LocalHTTP().start()
    yield local
    local.stop()


def calling(url: str, output: str) -> dict:
    """trigger → an http.request of ``url`` → an output of ``output``."""
    return flow(
        node("t", "trigger"),
        node("call", "http.request", url=url),
        node("out", "output", value=output),
        handle="out",
    )


async def test_kill_9_mid_run_resumes_on_another_worker_without_redoing_steps(
    factory: Factory, workers: Processes, server: LocalHTTP
) -> None:
    async def ok(request: Request) -> Response:
        return JSONResponse({"path": request.url.path})

    server.routes |= {"/first": ok, "/second": ok}
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"),
        node("first", "http.request", url=server.url("/first")),
        node("wait", "flow.delay", seconds=3),
        node("second", "http.request", url=server.url("/second")),
        node("out", "output", value="{{ input.body.path }}"),
        handle="out",
    )
    workflow_id = await create_workflow(factory, owner, graph)
    doomed = workers.start()
    run_id = (await execute(factory, owner, workflow_id))["run"]["id"]
    await wait_step(factory, owner, run_id, "wait", "RUNNING")

    doomed.kill()  # SIGKILL: no goodbye, no cleanup
    doomed.wait()
    workers.start()
    run = await wait_for(factory, owner, run_id, timeout=30)

    assert run["status"] == "SUCCEEDED", run
    assert run["output"] == "/second"
    steps = steps_by_node(run)
    assert steps["first"]["attempt"] == 1
    assert steps["wait"]["attempt"] == 2  # run again by the second worker, for what was left
    assert server.count("/first") == 1  # the step that had succeeded was not executed again
    assert server.count("/second") == 1
    assert await factory.scalar("SELECT crashes FROM runs") == 1


async def test_a_paused_worker_cannot_overwrite_its_successor(
    factory: Factory, workers: Processes, server: LocalHTTP
) -> None:
    calls = {"n": 0}

    async def hold(request: Request) -> Response:
        calls["n"] += 1
        mine = calls["n"]
        if mine == 1:
            await asyncio.sleep(4)  # the first worker's call: answered while it is paused
        return JSONResponse({"who": "first" if mine == 1 else "second"})

    server.routes["/hold"] = hold
    owner = await factory.owner()
    workflow_id = await create_workflow(
        factory, owner, calling(server.url("/hold"), "{{ input.body.who }}")
    )
    paused = workers.start()
    run_id = (await execute(factory, owner, workflow_id))["run"]["id"]
    while calls["n"] == 0:
        await asyncio.sleep(0.02)

    os.kill(paused.pid, signal.SIGSTOP)
    workers.start()
    run = await wait_for(factory, owner, run_id, timeout=30)
    os.kill(paused.pid, signal.SIGCONT)
    await asyncio.sleep(3)  # the paused worker wakes, gets its answer, tries to write it
    after = await read_run(factory, owner, run_id)

    assert run["status"] == "SUCCEEDED"
    assert run["output"] == "second"
    assert after == run
    assert steps_by_node(after)["call"]["output"]["body"] == {"who": "second"}
    assert await factory.scalar("SELECT attempt FROM runs") == 2


async def test_a_node_that_kills_its_worker_every_time_ends_the_run_failed(
    factory: Factory, workers: Processes, server: LocalHTTP
) -> None:
    current: dict[str, subprocess.Popen[bytes]] = {}

    async def boom(request: Request) -> Response:
        current["worker"].kill()
        await asyncio.sleep(5)
        return JSONResponse({})

    server.routes["/boom"] = boom
    owner = await factory.owner()
    boom_node = node("boom", "http.request", url=server.url("/boom"))
    run_id = await start_run(factory, owner, flow(node("t", "trigger"), boom_node, handle="out"))

    deaths = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while (await read_run(factory, owner, run_id))["status"] not in ("FAILED", "SUCCEEDED"):
        assert loop.time() < deadline
        if "worker" not in current or current["worker"].poll() is not None:
            if "worker" in current:
                deaths += 1
            current["worker"] = workers.start()
        await asyncio.sleep(0.1)
    run = await read_run(factory, owner, run_id)

    assert run["status"] == "FAILED"
    assert run["error"] == (
        'The worker running this run stopped 4 times while node "boom" was running; '
        "giving up (a node may be crashing its worker)."
    )
    assert run["errorNodeId"] == "boom"
    assert steps_by_node(run)["boom"]["status"] == "FAILED"
    assert server.count("/boom") == 4
    assert deaths == 4


async def test_cancel_while_the_worker_is_dead_settles_every_step(
    factory: Factory, workers: Processes, server: LocalHTTP
) -> None:
    async def hang(request: Request) -> Response:
        await asyncio.sleep(30)
        return JSONResponse({})

    server.routes["/hang"] = hang
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, calling(server.url("/hang"), "x"))
    doomed = workers.start()
    run_id = (await execute(factory, owner, workflow_id))["run"]["id"]
    await wait_step(factory, owner, run_id, "call", "RUNNING")
    while server.count("/hang") == 0:
        await asyncio.sleep(0.02)
    doomed.kill()
    doomed.wait()

    cancelled = await cancel_run(factory, owner, run_id)
    workers.start()  # a new worker must not bring the cancelled run back to life
    await asyncio.sleep(3)
    run = await read_run(factory, owner, run_id)

    assert cancelled["run"]["status"] == "CANCELLED"
    assert run["status"] == "CANCELLED"
    assert {n: s["status"] for n, s in steps_by_node(run).items()} == {
        "t": "SUCCEEDED",
        "call": "CANCELLED",
        "out": "CANCELLED",
    }
    assert server.count("/hang") == 1
