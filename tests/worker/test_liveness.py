"""A live but slow worker is never judged stalled.

Silence is measured by the database's clock; a long CPU-bound run does not starve the
heartbeats of the worker running it (its plan compiles in a thread, its pure nodes give the
event loop a turn between them); a worker never judges its own jobs; and after a database outage nobody is judged until the others had time to
reconnect and say they are alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from app.outage import DatabaseWatch
from app.runtime import Runtime
from app.worker.runner import recover_stalled
from tests.factories import Factory
from tests.processes import Processes
from tests.runs import create_workflow, execute, flow, node, wait_for

STALLED_SECONDS = 1.5  # tests.processes: heartbeats every 0.3 s, stalled after 1.5 s


def busy_chain(length: int = 498) -> dict:
    """A trigger, ``length`` transform.set nodes of nine expressions each, an output: pure
    work, with nothing to wait on, compiled when first claimed (4,500 expressions)."""
    fields = {"n": "{{ input.n + 1 }}"} | {
        f"f{k}": f'{{{{ input.n * {k} + size("abcdefgh") }}}}' for k in range(8)
    }
    steps = [node(f"n{i}", "transform.set", fields=fields) for i in range(length)]
    return flow(node("t", "trigger"), *steps, node("out", "output", value="{{ input.n }}"))


@pytest.fixture
def workers(database_url: str) -> Iterator[Processes]:
    pool = Processes(database_url)
    yield pool
    pool.stop_all()


async def worker_ids(factory: Factory, after: int) -> list[int]:
    rows = await factory.scalar(
        "SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM procrastinate_workers"
        " WHERE id > :after",
        after=after,
    )
    return list(rows)


async def test_a_long_cpu_bound_run_does_not_starve_the_heartbeats_of_its_worker(
    factory: Factory, workers: Processes
) -> None:
    # given two workers, heartbeating every 0.3 s, judged stalled after 1.5 s of silence
    before = await factory.scalar("SELECT coalesce(max(id), 0) FROM procrastinate_workers")
    workers.start()
    workers.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while len(await worker_ids(factory, before)) < 2:
        assert loop.time() < deadline, "the workers did not start"
        await asyncio.sleep(0.1)
    ids = await worker_ids(factory, before)
    # and a long run of pure nodes: seconds of CPU, and never a wait
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, busy_chain())

    # when one of them runs it, while we read their heartbeats' age by the database's clock
    run_id = (await execute(factory, owner, workflow_id, {"n": 0}))["run"]["id"]
    oldest = 0.0
    while (status := await factory.scalar("SELECT status FROM runs")) not in (
        "SUCCEEDED",
        "FAILED",
    ):
        assert loop.time() < deadline, status
        age = await factory.scalar(
            "SELECT extract(epoch FROM max(now() - last_heartbeat))::float"
            " FROM procrastinate_workers WHERE id = ANY(:ids)",
            ids=ids,
        )
        oldest = max(oldest, age)
        await asyncio.sleep(0.05)
    run = await wait_for(factory, owner, run_id)

    # then no heartbeat was ever as old as the stall threshold, and the run was claimed once
    assert oldest < STALLED_SECONDS
    assert run["status"] == "SUCCEEDED", run
    assert run["output"] == 498
    assert {step["attempt"] for step in run["steps"]} == {1}
    assert await factory.scalar("SELECT (attempt, crashes)::text FROM runs") == "(1,0)"


async def stalled_job(factory: Factory, runtime: Runtime) -> tuple[int, int]:
    """A queued run whose job a worker silent for a minute holds: (worker id, job id)."""
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, flow(node("t", "trigger")))
    await execute(factory, owner, workflow_id)
    async with factory.engine.begin() as conn:
        worker_id = await conn.scalar(
            text(
                "INSERT INTO procrastinate_workers (last_heartbeat)"
                " VALUES (now() - interval '1 minute') RETURNING id"
            )
        )
    job_id = await factory.scalar("SELECT job_id FROM runs")
    await factory.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = :w WHERE id = :j",
        w=worker_id,
        j=job_id,
    )
    return worker_id, job_id


async def test_a_worker_never_judges_its_own_jobs_stalled(
    factory: Factory, runtime: Runtime
) -> None:
    # given a job held by a worker whose last heartbeat is a minute old (database clock)
    worker_id, job_id = await stalled_job(factory, runtime)
    watch = DatabaseWatch()

    # when that worker itself looks for stalled jobs (it runs: it is alive, however slow)
    handed = await recover_stalled(runtime, worker_id, watch=watch)

    # then it keeps its job
    assert handed == 0
    job = "SELECT status::text FROM procrastinate_jobs WHERE id = :j"
    assert await factory.scalar(job, j=job_id) == "doing"
    assert await factory.scalar("SELECT job_id FROM runs") == job_id

    # and when another worker looks, the job is failed and its run handed to a new job
    assert await recover_stalled(runtime, worker_id + 1, watch=watch) == 1
    assert await factory.scalar(job, j=job_id) == "failed"
    assert await factory.scalar("SELECT job_id FROM runs") != job_id
    await factory.execute("DELETE FROM procrastinate_workers WHERE id = :w", w=worker_id)


async def test_nobody_is_judged_stalled_right_after_a_database_outage(
    factory: Factory, runtime: Runtime
) -> None:
    # given a job held by a worker silent for a minute, seen by a worker whose database
    # just went away
    worker_id, job_id = await stalled_job(factory, runtime)
    watch = DatabaseWatch(settle_seconds=0.1)
    watch.failed(psycopg.OperationalError("connection refused"))

    # when the database is back (the outage settled) and the worker looks at once
    await asyncio.sleep(0.2)
    watch.succeeded()
    handed = await recover_stalled(runtime, None, watch=watch)

    # then it judges nobody yet: every worker was cut off, and needs time to say it is alive
    assert (watch.reachable, watch.outage, handed) == (True, False, 0)
    job = "SELECT status::text FROM procrastinate_jobs WHERE id = :j"
    assert await factory.scalar(job, j=job_id) == "doing"
    await factory.execute("DELETE FROM procrastinate_workers WHERE id = :w", w=worker_id)
