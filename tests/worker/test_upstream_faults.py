"""A step whose upstream trickles forever or floods gigabytes, run by a real worker process.

`flowdeck serve --no-worker` and `flowdeck worker` run over a database of their own; a stub
upstream (tests/servers.py) sends one byte a second for ever, 2 GiB without a length, a
declared 2 GiB, or a 4 MiB JSON body. Each step ends within its limits: FAILED with the
reason for the first three, SUCCEEDED with its output cut to FLOWDECK_MAX_STEP_IO_BYTES for
the last, and the worker's memory stays bounded (measured before and after).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from app.db import create_engine
from app.settings import Settings
from schema.ids import decode_id
from tests.factories import Factory
from tests.faults import FaultyDatabase, FlowdeckProcess, raw_error_text
from tests.runs import create_workflow, execute, flow, node, steps_by_node, wait_for
from tests.servers import LocalHTTP

MIB = 1024 * 1024
GIB = 1024 * MIB
HTTP_CAP = 5 * MIB  # FLOWDECK_HTTP_MAX_RESPONSE_BYTES, its default
STEP_CAP = MIB  # FLOWDECK_MAX_STEP_IO_BYTES, its default


async def trickle(request: Request) -> Response:
    async def one_byte_a_second() -> AsyncIterator[bytes]:
        while True:
            yield b" "
            await asyncio.sleep(1)

    return StreamingResponse(one_byte_a_second(), media_type="application/json")


async def flood(request: Request) -> Response:
    chunk = b"x" * MIB

    async def two_gibibytes() -> AsyncIterator[bytes]:
        for _ in range(2 * 1024):
            yield chunk

    return StreamingResponse(two_gibibytes(), media_type="text/plain")


async def declared_flood(request: Request) -> Response:
    async def nothing() -> AsyncIterator[bytes]:
        yield b""

    return StreamingResponse(
        nothing(), media_type="text/plain", headers={"content-length": str(2 * GIB)}
    )


async def big_json(request: Request) -> Response:
    return JSONResponse({"items": [f"item {n:07d} " + "y" * 100 for n in range(4 * MIB // 120)]})


async def small_json(request: Request) -> Response:
    return JSONResponse({"ok": True})


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalHTTP]:
    server = LocalHTTP(
        routes={
            "/trickle": trickle,
            "/flood": flood,
            "/declared": declared_flood,
            "/big": big_json,
            "/small": small_json,
        }
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(
    server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FaultyDatabase, FlowdeckProcess, FlowdeckProcess]]:
    logs: Path = tmp_path_factory.mktemp("upstream-faults")
    with FaultyDatabase.scratch(server_url) as database:
        # The API drives no run itself: the worker process runs them, and is measured.
        api = FlowdeckProcess.api(database.url, logs, inline_runs="0").start()
        worker = FlowdeckProcess.worker(database.url, logs, worker_concurrency="4").start()
        try:
            yield database, api, worker
        finally:
            worker.stop()
            api.stop()


@pytest.fixture
async def factory(stack: tuple, settings: Settings) -> AsyncIterator[Factory]:
    database, api, _worker = stack
    engine = create_engine(database.url, settings)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        yield Factory(engine, client)
    await engine.dispose()


def fetching(url: str, timeout: float) -> dict:
    return flow(
        node("start", "trigger"),
        node("fetch", "http.request", url=url, timeoutSeconds=timeout),
        node("out", "output", value="{{ nodes.fetch.output.status }}"),
    )


async def test_endless_and_huge_bodies_end_within_their_limits_with_memory_bounded(
    stack: tuple, upstream: LocalHTTP, factory: Factory
) -> None:
    _database, api, worker = stack
    owner = await factory.owner()
    cases = {
        "trickle": (upstream.url("/trickle"), 2.0),
        "flood": (upstream.url("/flood"), 60.0),
        "declared": (upstream.url("/declared"), 60.0),
        "big": (upstream.url("/big"), 60.0),
    }
    workflows = {
        name: await create_workflow(factory, owner, fetching(*case), name=name)
        for name, case in cases.items()
    }
    # Given a worker that has run one small fetch (its node types loaded, its pools open)
    warm_up = await create_workflow(factory, owner, fetching(upstream.url("/small"), 5), "warm")
    await wait_for(factory, owner, (await execute(factory, owner, warm_up))["run"]["id"])
    rss_before = worker.rss()
    # When each runs
    started = time.monotonic()
    runs = {name: (await execute(factory, owner, workflows[name]))["run"]["id"] for name in cases}
    ended = {
        name: await wait_for(factory, owner, run_id, timeout=60) for name, run_id in runs.items()
    }
    elapsed = time.monotonic() - started
    rss_after = worker.rss()
    # ... and the floods and the big body once more
    again = {
        name: (await execute(factory, owner, workflows[name]))["run"]["id"]
        for name in ("flood", "declared", "big")
    }
    for run_id in again.values():
        await wait_for(factory, owner, run_id, timeout=60)
    rss_again = worker.rss()
    # Then the endless one failed at its 2 s timeout, the floods at the 5 MiB cap
    fetched = {name: steps_by_node(run)["fetch"] for name, run in ended.items()}
    host = "127.0.0.1"
    assert {
        name: (run["status"], fetched[name]["status"], fetched[name]["error"])
        for name, run in ended.items()
    } == {
        "trickle": ("FAILED", "FAILED", "Timed out after 2.0 seconds."),
        "flood": ("FAILED", "FAILED", f"Response from {host} is larger than {HTTP_CAP} bytes."),
        "declared": ("FAILED", "FAILED", f"Response from {host} is larger than {HTTP_CAP} bytes."),
        "big": ("SUCCEEDED", "SUCCEEDED", None),
    }
    assert elapsed < 30
    # ... the 4 MiB body is stored cut to 1 MiB, marked, in the step and in its event
    big_run = decode_id("Run", runs["big"])
    stored = await factory.scalar(
        "SELECT octet_length(output::text) FROM run_steps WHERE run_id = :r AND node_id = 'fetch'",
        r=big_run,
    )
    announced = await factory.scalar(
        "SELECT max(octet_length(output::text)) FROM run_events WHERE run_id = :r",
        r=big_run,
    )
    items = fetched["big"]["output"]["body"]["items"]
    assert fetched["big"]["output"]["status"] == 200
    assert items[0] == "item 0000000 " + "y" * 100
    assert items[-1] == f"[truncated: {4 * MIB // 120 - (len(items) - 1)} more items]"
    assert ended["big"]["output"] == 200
    assert STEP_CAP * 0.9 < stored <= STEP_CAP * 1.05  # JSONB's text adds a space per item
    assert announced <= STEP_CAP * 1.05
    # ... and the worker's memory grew by far less than one flood, and not again on repeats
    assert rss_after - rss_before < 64 * MIB, (rss_before, rss_after)
    assert rss_again - rss_after < 16 * MIB, (rss_after, rss_again)
    assert worker.leaked_log_lines() == []
    assert api.leaked_log_lines() == []
    assert raw_error_text(str(fetched)) == []
