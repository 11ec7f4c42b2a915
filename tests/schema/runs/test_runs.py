"""Running workflows through GraphQL with a real worker, against a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.models import Role
from app.worker.runner import run_worker
from schema.ids import decode_id
from tests.factories import Factory, Wire
from tests.hostile import user_error
from tests.runs import (
    NODE_TYPES,
    cancel_run,
    create_workflow,
    execute,
    flow,
    node,
    read_run,
    run_graph,
    start_run,
    steps_by_node,
    wait_for,
    wait_step,
)
from tests.servers import LocalHTTP, slow


@pytest.fixture
def server() -> Iterator[LocalHTTP]:
    """The outside world: a real HTTP server on 127.0.0.1 (allowed by the test settings)."""
    flaky_calls = {"n": 0}

    async def status(request: Request) -> Response:
        return JSONResponse({"ok": request.query_params.get("ok", "true") == "true", "count": 3})

    async def flaky(request: Request) -> Response:
        flaky_calls["n"] += 1
        if flaky_calls["n"] < 3:
            return JSONResponse({"error": "try again"}, status_code=503)
        return JSONResponse({"ok": True, "calls": flaky_calls["n"]})

    async def sleepy(request: Request) -> Response:
        return await slow(10, {"late": True})

    local = LocalHTTP(routes={"/status": status, "/flaky": flaky, "/slow": sleepy}).start()
    yield local
    local.stop()


@pytest.fixture
def gate(server: LocalHTTP) -> dict[str, bool]:
    """A route /gate of ``server`` that answers 500 until the test opens it."""
    state = {"open": False}

    async def gate_route(request: Request) -> Response:
        return JSONResponse({"open": state["open"]}, status_code=200 if state["open"] else 500)

    server.routes["/gate"] = gate_route
    return state


TRIGGER_ONLY = flow(node("t", "trigger"))


def waiting(seconds: float) -> dict:
    """trigger → a flow.delay of ``seconds`` → output."""
    return flow(
        node("t", "trigger"),
        node("wait", "flow.delay", seconds=seconds),
        node("out", "output", value="x"),
        handle="out",
    )


def ten_node_graph(server: LocalHTTP) -> dict:
    """A workflow of ten nodes: a call, a condition, parallel branches, a delay and a merge."""
    return flow(
        node("t", "trigger"),
        node("call", "http.request", method="GET", url=server.url("/status")),
        node("check", "logic.if", condition="{{ input.body.ok }}"),
        node(
            "report",
            "text.format",
            template="Found {{ nodes.call.output.body.count }} items for {{ trigger.name }}",
        ),
        node("apology", "text.format", template="Nothing for {{ trigger.name }}"),
        node("enrich", "transform.set", fields={"len": "{{ size(trigger.name) }}"}),
        node("pause", "flow.delay", seconds=0.2),
        node("merge", "logic.merge"),
        node(
            "shape",
            "transform.set",
            fields={"report": "{{ input.report }}", "len": "{{ input.enrich.len }}"},
        ),
        node("out", "output", value="{{ input }}"),
        edges="t->call, call->check, check.true->report, check.false->apology, t->enrich,"
        " t->pause, report->merge, apology->merge, enrich->merge, pause->merge, merge->shape,"
        " shape->out",
        handle="out",
        viewport={"x": 0, "y": 0, "zoom": 1},
    )


async def test_a_ten_node_workflow_runs_end_to_end(
    factory: Factory, worker: None, server: LocalHTTP
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, ten_node_graph(server))

    queued = await execute(factory, owner, workflow_id, {"name": "Ada"})
    run = await wait_for(factory, owner, queued["run"]["id"])

    assert queued["userErrors"] == []
    assert queued["run"]["status"] == "QUEUED"
    assert queued["run"]["trigger"] == "MANUAL"
    assert queued["run"]["version"] == {"number": 1}
    assert run["status"] == "SUCCEEDED", (
        run["error"],
        [(s["nodeId"], s["status"], s["error"]) for s in run["steps"]],
    )
    assert run["output"] == {"report": "Found 3 items for Ada", "len": 3}
    assert run["error"] is None
    steps = steps_by_node(run)
    assert [s["nodeId"] for s in run["steps"]] == [
        "t",
        "call",
        "check",
        "report",
        "apology",
        "enrich",
        "pause",
        "merge",
        "shape",
        "out",
    ]
    assert {n: s["status"] for n, s in steps.items()} == {
        "t": "SUCCEEDED",
        "call": "SUCCEEDED",
        "check": "SUCCEEDED",
        "report": "SUCCEEDED",
        "apology": "SKIPPED",
        "enrich": "SUCCEEDED",
        "pause": "SUCCEEDED",
        "merge": "SUCCEEDED",
        "shape": "SUCCEEDED",
        "out": "SUCCEEDED",
    }
    assert steps["call"]["output"]["status"] == 200
    assert steps["call"]["output"]["body"] == {"ok": True, "count": 3}
    assert steps["report"]["output"] == "Found 3 items for Ada"
    assert steps["merge"]["input"] == {
        "report": "Found 3 items for Ada",
        "enrich": {"len": 3},
        "pause": {"name": "Ada"},
    }
    assert steps["apology"]["attempt"] == 0
    assert all(s["attempt"] == 1 for n, s in steps.items() if n != "apology")
    assert run["durationMs"] >= 200
    hit = server.hits[0]
    assert hit.headers["idempotency-key"] == f"{decode_id('Run', run['id'])}:call"


async def test_independent_branches_run_concurrently(factory: Factory, worker: None) -> None:
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"),
        node("a", "flow.delay", seconds=0.5),
        node("b", "flow.delay", seconds=0.5),
        node("m", "logic.merge", mode="list"),
        node("out", "output", value="{{ input }}"),
        edges="t->a, t->b, a->m, b->m, m->out",
        handle="out",
    )

    run = await run_graph(factory, owner, graph, 7)

    steps = steps_by_node(run)
    assert run["status"] == "SUCCEEDED"
    assert run["output"] == [7, 7]
    # Both delays were running at the same time.
    assert steps["a"]["startedAt"] < steps["b"]["finishedAt"]
    assert steps["b"]["startedAt"] < steps["a"]["finishedAt"]


async def test_a_failing_node_fails_the_run_naming_the_node(factory: Factory, worker: None) -> None:
    owner = await factory.owner()
    stop = node("stop", "flow.fail", message="No stock for {{ trigger.sku }}")

    run = await run_graph(
        factory, owner, flow(node("t", "trigger"), stop, handle="out"), {"sku": "A1"}
    )

    assert run["status"] == "FAILED"
    assert run["error"] == 'Node "stop" (flow.fail) failed: No stock for A1'
    assert run["errorNodeId"] == "stop"
    assert steps_by_node(run)["stop"]["error"] == "No stock for A1"
    assert steps_by_node(run)["stop"]["status"] == "FAILED"


async def test_retries_with_backoff_then_success(
    factory: Factory, worker: None, server: LocalHTTP
) -> None:
    owner = await factory.owner()
    retry = {"maxAttempts": 3, "backoffSeconds": 0.05, "backoffMultiplier": 2}
    call = node("call", "http.request", method="POST", url=server.url("/flaky"), retry=retry)

    run = await run_graph(factory, owner, flow(node("t", "trigger"), call, handle="out"))

    step = steps_by_node(run)["call"]
    assert run["status"] == "SUCCEEDED"
    assert step["attempt"] == 3
    assert step["output"]["body"] == {"ok": True, "calls": 3}
    assert server.count("/flaky") == 3


async def test_continue_on_fail_and_node_timeout(
    factory: Factory, worker: None, server: LocalHTTP
) -> None:
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"),
        node(
            "call", "http.request", url=server.url("/slow"), timeoutSeconds=0.3, continueOnFail=True
        ),
        node("after", "transform.set", fields={"seen": "{{ input.error }}"}),
        node("out", "output", value="{{ input.seen }}"),
        handle="out",
    )

    run = await run_graph(factory, owner, graph)

    steps = steps_by_node(run)
    assert run["status"] == "SUCCEEDED"
    assert steps["call"]["status"] == "FAILED"
    assert steps["call"]["error"] == "Timed out after 0.3 seconds."
    assert run["output"] == "Timed out after 0.3 seconds."


async def test_cancel_during_a_short_delay_stops_within_a_second(
    factory: Factory, worker: None
) -> None:
    owner = await factory.owner()
    run_id = await start_run(factory, owner, waiting(20))
    await wait_step(factory, owner, run_id, "wait", "RUNNING")

    assert await cancel_run(factory, owner, run_id) == {
        "run": {"id": run_id, "status": "CANCELLED"},
        "userErrors": [],
    }

    settled = await _wait_no_running(factory, owner, run_id, timeout=1.0)
    assert {s["nodeId"]: s["status"] for s in settled["steps"]} == {
        "t": "SUCCEEDED",
        "wait": "CANCELLED",
        "out": "CANCELLED",
    }


async def test_cancel_during_a_slow_http_call(
    factory: Factory, worker: None, server: LocalHTTP
) -> None:
    owner = await factory.owner()
    call = node("call", "http.request", url=server.url("/slow"))
    run_id = await start_run(factory, owner, flow(node("t", "trigger"), call, handle="out"))
    await wait_step(factory, owner, run_id, "call", "RUNNING")
    while server.count("/slow") == 0:
        await asyncio.sleep(0.02)

    await cancel_run(factory, owner, run_id)

    settled = await _wait_no_running(factory, owner, run_id, timeout=1.0)
    assert settled["status"] == "CANCELLED"
    assert steps_by_node(settled)["call"]["status"] == "CANCELLED"


async def test_cancel_a_run_waiting_in_a_long_delay(factory: Factory, worker: None) -> None:
    owner = await factory.owner()
    wait = node("wait", "flow.delay", seconds=3600)
    run_id = await start_run(factory, owner, flow(node("t", "trigger"), wait, handle="out"))
    await wait_step(factory, owner, run_id, "wait", "RUNNING")
    # The worker released it: the wait holds no worker.
    await asyncio.sleep(0.3)
    assert await factory.scalar("SELECT wake_at IS NOT NULL FROM runs") is True

    await cancel_run(factory, owner, run_id)

    run = await read_run(factory, owner, run_id)
    assert run["status"] == "CANCELLED"
    assert steps_by_node(run)["wait"]["status"] == "CANCELLED"


async def test_cancel_of_a_finished_run_is_a_user_error(factory: Factory, worker: None) -> None:
    owner = await factory.owner()
    run = await run_graph(factory, owner, TRIGGER_ONLY)

    payload = await cancel_run(factory, owner, run["id"])

    assert payload == {
        "run": None,
        "userErrors": [user_error(("id",), "INVALID", "The run already ended (SUCCEEDED).")],
    }


async def test_retry_from_the_failed_step_reuses_what_succeeded(
    factory: Factory, worker: None, server: LocalHTTP, gate: dict[str, bool]
) -> None:
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"),
        node("first", "http.request", url=server.url("/status")),
        node("second", "http.request", url=server.url("/gate")),
        node("out", "output", value="{{ input.body }}"),
        handle="out",
    )
    failed = await run_graph(factory, owner, graph, {"n": 1})
    assert failed["status"] == "FAILED"
    assert failed["errorNodeId"] == "second"
    gate["open"] = True

    body = await factory.gql(
        """mutation($i: RunRetryInput!) { runRetry(input: $i) {
             run { id status trigger retryOf { id } } userErrors { code } } }""",
        {"i": {"runId": failed["id"], "fromFailedStep": True}},
        token=owner.token,
    )
    retried = body["data"]["runRetry"]["run"]
    run = await wait_for(factory, owner, retried["id"])

    assert retried["trigger"] == "RETRY"
    assert retried["retryOf"] == {"id": failed["id"]}
    assert run["status"] == "SUCCEEDED"
    assert run["input"] == {"n": 1}
    assert run["output"] == {"open": True}
    steps = steps_by_node(run)
    assert (steps["first"]["reused"], steps["first"]["status"]) == (True, "SUCCEEDED")
    assert steps["first"]["output"] == steps_by_node(failed)["first"]["output"]
    assert steps["second"]["reused"] is False
    assert server.count("/status") == 1  # the first call was not made again
    assert server.count("/gate") == 2


async def test_idempotency_key_makes_one_run_and_refuses_another_input(
    factory: Factory, worker: None
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, TRIGGER_ONLY)

    results = await asyncio.gather(
        *(
            execute(factory, owner, workflow_id, {"a": 1}, idempotencyKey="order-42")
            for _ in range(10)
        )
    )
    conflict = await execute(factory, owner, workflow_id, {"a": 2}, idempotencyKey="order-42")

    assert {r["run"]["id"] for r in results} == {results[0]["run"]["id"]}
    assert await factory.scalar("SELECT count(*) FROM runs") == 1
    assert conflict == {
        "run": None,
        "userErrors": [
            user_error(
                ("input", "idempotencyKey"),
                "IDEMPOTENCY_CONFLICT",
                "This idempotency key was used for a run with a different input or version.",
            )
        ],
    }


async def test_a_version_with_warnings_is_refused_and_nothing_is_queued(factory: Factory) -> None:
    owner = await factory.owner()
    body = await factory.gql(
        """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) { workflow { id } } }""",
        {
            "i": {
                "workspaceId": owner.workspace_id,
                "name": "Loose",
                "graph": {"nodes": [node("t", "trigger"), node("x", "no.such.type")], "edges": []},
            }
        },
        token=owner.token,
    )
    workflow_id = body["data"]["workflowCreate"]["workflow"]["id"]

    payload = await execute(factory, owner, workflow_id)

    assert payload["run"] is None
    assert [e["code"] for e in payload["userErrors"]] == ["GRAPH_INVALID", "GRAPH_INVALID"]
    assert await factory.scalar("SELECT count(*) FROM runs") == 0
    assert await factory.scalar("SELECT count(*) FROM procrastinate_jobs") == 0


async def test_viewers_cannot_run_and_other_workspaces_see_nothing(factory: Factory) -> None:
    owner = await factory.owner()
    viewer = await factory.member(owner, Role.VIEWER)
    stranger = await factory.owner("Elsewhere")
    workflow_id = await create_workflow(factory, owner, TRIGGER_ONLY)
    run_id = (await execute(factory, owner, workflow_id))["run"]["id"]
    before = await factory.snapshot()

    denied = await factory.gql(
        "mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) { run { id } } }",
        {"i": {"workflowId": workflow_id}},
        token=viewer.token,
    )
    hidden = await factory.gql(
        "query($id: ID!) { run(id: $id) { id } }", {"id": run_id}, token=stranger.token
    )
    cancel = await factory.gql(
        "mutation($id: ID!) { runCancel(id: $id) { run { id } } }",
        {"id": run_id},
        token=stranger.token,
    )

    assert denied["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    assert hidden["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert hidden["errors"][0]["message"] == "Run not found."
    assert cancel["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert await factory.snapshot() == before
    assert await factory.scalar("SELECT count(*) FROM runs") == 1


async def test_runs_list_newest_first_with_status_filter_and_pages(factory: Factory) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, TRIGGER_ONLY)
    ids = [(await execute(factory, owner, workflow_id, i))["run"]["id"] for i in range(5)]
    # No worker runs here: every run stays QUEUED until one is cancelled through the API.
    await cancel_run(factory, owner, ids[1])
    query = """query($id: ID!, $first: Int!, $after: String, $status: RunStatus) { workflow(id: $id) {
        runs(first: $first, after: $after, status: $status) { totalCount pageInfo { hasNextPage endCursor }
          edges { node { id status } } } } }"""

    page1 = (await factory.gql(query, {"id": workflow_id, "first": 3}, token=owner.token))["data"][
        "workflow"
    ]["runs"]
    page2 = (
        await factory.gql(
            query,
            {"id": workflow_id, "first": 3, "after": page1["pageInfo"]["endCursor"]},
            token=owner.token,
        )
    )["data"]["workflow"]["runs"]
    cancelled = (
        await factory.gql(
            query, {"id": workflow_id, "first": 3, "status": "CANCELLED"}, token=owner.token
        )
    )["data"]["workflow"]["runs"]

    assert [e["node"]["id"] for e in page1["edges"] + page2["edges"]] == list(reversed(ids))
    assert page1["totalCount"] == 5
    assert page2["pageInfo"]["hasNextPage"] is False
    assert [e["node"]["id"] for e in cancelled["edges"]] == [ids[1]]
    assert cancelled["totalCount"] == 1


async def test_node_types_describe_every_type_with_its_form(factory: Factory) -> None:
    owner = await factory.owner()

    body = await factory.gql(
        "{ nodeTypes { type category label description configSchema inputs outputs } }",
        token=owner.token,
    )

    types = {t["type"]: t for t in body["data"]["nodeTypes"]}
    assert set(types) >= NODE_TYPES
    assert types["logic.if"]["outputs"] == ["true", "false"]
    assert types["trigger"]["inputs"] == []
    assert types["http.request"]["configSchema"]["properties"]["url"]["type"] == "string"
    assert "retry" in types["http.request"]["configSchema"]["properties"]


async def _wait_no_running(factory: Factory, owner, run_id: str, timeout: float) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        run = await read_run(factory, owner, run_id)
        if all(s["status"] != "RUNNING" for s in run["steps"]):
            return run
        assert loop.time() < deadline, run
        await asyncio.sleep(0.02)


async def test_a_failure_beside_a_running_branch_fails_the_run(
    factory: Factory, worker: None
) -> None:
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"),
        node("stop", "flow.fail", message="No"),
        node("slow", "flow.delay", seconds=1.5),
        node("out", "output", value="{{ input }}"),
        edges="t->stop, t->slow, slow->out",
        handle="out",
    )

    run = await run_graph(factory, owner, graph)
    await asyncio.sleep(2.5)  # long enough for a wrongly retried job to have resumed the run
    again = await read_run(factory, owner, run["id"])

    assert run["status"] == "FAILED"
    assert run["error"] == 'Node "stop" (flow.fail) failed: No'
    assert {n: s["status"] for n, s in steps_by_node(run).items()} == {
        "t": "SUCCEEDED",
        "stop": "FAILED",
        "slow": "CANCELLED",
        "out": "CANCELLED",
    }
    assert again == run


async def test_a_switch_takes_the_first_matching_case(factory: Factory, worker: None) -> None:
    owner = await factory.owner()
    cases = [
        {"handle": "urgent", "condition": "{{ trigger.p > 8 }}"},
        {"handle": "high", "condition": "{{ trigger.p > 5 }}"},
    ]
    graph = flow(
        node("t", "trigger"),
        node("route", "logic.switch", cases=cases),
        node("u", "output", value="urgent"),
        node("h", "output", value="high"),
        node("d", "output", value="default"),
        edges="t.out->route, route.urgent->u, route.high->h, route.default->d",
    )
    workflow_id = await create_workflow(factory, owner, graph)

    nine = await wait_for(
        factory, owner, (await execute(factory, owner, workflow_id, {"p": 9}))["run"]["id"]
    )
    one = await wait_for(
        factory, owner, (await execute(factory, owner, workflow_id, {"p": 1}))["run"]["id"]
    )

    assert (nine["status"], nine["output"]) == ("SUCCEEDED", "urgent")
    assert {n: s["status"] for n, s in steps_by_node(nine).items()}["h"] == "SKIPPED"
    assert (one["status"], one["output"]) == ("SUCCEEDED", "default")


async def test_a_failed_branching_node_with_continue_on_fail_takes_no_branch(
    factory: Factory, worker: None
) -> None:
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"),
        node("check", "logic.if", condition="{{ trigger.missing.deeper }}", continueOnFail=True),
        node("yes", "output", value="yes"),
        node("no", "output", value="no"),
        edges="t.out->check, check.true->yes, check.false->no",
    )

    run = await run_graph(factory, owner, graph, {})

    steps = steps_by_node(run)
    assert run["status"] == "SUCCEEDED"
    assert steps["check"]["status"] == "FAILED"
    assert (steps["yes"]["status"], steps["no"]["status"]) == ("SKIPPED", "SKIPPED")


async def test_retry_from_the_failed_step_runs_again_what_follows_it(
    factory: Factory, worker: None, server: LocalHTTP, gate: dict[str, bool]
) -> None:
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"),
        node("call", "http.request", url=server.url("/gate"), continueOnFail=True),
        node("out", "output", value="{{ input }}"),
        handle="out",
    )
    first = await run_graph(factory, owner, graph)
    assert first["status"] == "SUCCEEDED"
    assert steps_by_node(first)["call"]["status"] == "FAILED"
    gate["open"] = True

    body = await factory.gql(
        "mutation($i: RunRetryInput!) { runRetry(input: $i) { run { id } } }",
        {"i": {"runId": first["id"], "fromFailedStep": True}},
        token=owner.token,
    )
    run = await wait_for(factory, owner, body["data"]["runRetry"]["run"]["id"])

    steps = steps_by_node(run)
    assert (steps["t"]["reused"], steps["call"]["reused"], steps["out"]["reused"]) == (
        True,
        False,
        False,
    )
    assert run["output"]["body"] == {"open": True}


@pytest.fixture
async def impatient_worker(app: Starlette, settings) -> AsyncIterator[None]:
    """A worker whose runs time out after one second."""
    from app.runtime import Runtime

    runtime = app.state.runtime
    impatient = Runtime.build(
        settings.model_copy(update={"run_timeout_seconds": 1}),
        runtime.engine,
        str(settings.database_url.get_secret_value()),
    )
    async with impatient.opened():
        task = asyncio.create_task(run_worker(impatient, install_signal_handlers=False))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_run_past_its_timeout_fails(factory: Factory, impatient_worker: None) -> None:
    owner = await factory.owner()

    run = await run_graph(factory, owner, waiting(5))

    assert run["status"] == "FAILED"
    assert run["error"] == "The run timed out after 1 seconds."
    assert {n: s["status"] for n, s in steps_by_node(run).items()} == {
        "t": "SUCCEEDED",
        "wait": "CANCELLED",
        "out": "CANCELLED",
    }


async def test_run_list_statement_count_does_not_grow_with_page_size(
    factory: Factory, wire: Wire
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, TRIGGER_ONLY)
    for i in range(50):
        await execute(factory, owner, workflow_id, i)
    query = """query($id: ID!, $first: Int!) { workflow(id: $id) { runs(first: $first) {
        totalCount edges { node { id status trigger queuedAt startedAt finishedAt durationMs
        error version { number } } } } } }"""

    async def measure(first: int) -> int:
        variables = {"id": workflow_id, "first": first}
        count, body = await wire.statements(query, variables, token=owner.token)
        assert len(body["data"]["workflow"]["runs"]["edges"]) == first
        return count

    await measure(1)  # warm: the token's principal kept, a new connection set up

    # workflow, page, count, versions (one loader query), counted on the wire whichever
    # library sends them; the token signs in from the process's principal cache.
    assert {first: await measure(first) for first in (1, 10, 50)} == {1: 4, 10: 4, 50: 4}
