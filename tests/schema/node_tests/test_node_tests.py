"""nodeTest: one node's real implementation, once, as a run runs it; nothing is recorded."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.models import Role
from app.settings import Settings
from tests.factories import Account, Factory, gid
from tests.runs import create_workflow, edge, execute, node, steps_by_node, wait_for
from tests.secrets import set_secret
from tests.servers import LocalHTTP, slow

NODE_TEST = """mutation($i: NodeTestInput!) { nodeTest(input: $i) {
  result { status output error durationMs activeHandles }
  userErrors { field code message } } }"""
KEY = "tok-4f9c2e7a1b3d5e8f"


@pytest.fixture
def upstream() -> Iterator[LocalHTTP]:
    """An upstream that echoes what it got, and one that answers after 2 seconds."""

    async def echo(request: Request) -> Response:
        return JSONResponse(
            {
                "method": request.method,
                "key": request.headers.get("x-key"),
                "body": (await request.body()).decode(),
            }
        )

    async def slow_answer(request: Request) -> Response:
        return await slow(2.0, {"late": True})

    async def big(request: Request) -> Response:
        return JSONResponse({"rows": ["x" * 1000] * 3000})  # 3 MB, within the HTTP cap

    server = LocalHTTP(routes={"/echo": echo, "/slow": slow_answer, "/big": big}).start()
    yield server
    server.stop()


async def node_test(factory: Factory, account: Account, **given: Any) -> dict[str, Any]:
    """The nodeTest payload (no top-level errors allowed)."""
    body = await factory.gql(NODE_TEST, {"i": given}, token=account.token)
    assert "errors" not in body, body
    return body["data"]["nodeTest"]


def graph_of(*nodes: dict[str, Any]) -> dict[str, Any]:
    """A trigger followed by ``nodes`` in a chain."""
    chain = [node("start", "trigger"), *nodes]
    return {
        "nodes": chain,
        "edges": [edge(a["id"], b["id"]) for a, b in itertools.pairwise(chain)],
    }


# --- it runs the node as a run would --------------------------------------------------------


async def test_a_node_runs_with_the_given_input_and_nothing_is_recorded(factory: Factory) -> None:
    owner = await factory.owner()
    member = await factory.member(owner, Role.MEMBER)
    graph = graph_of(
        node(
            "build",
            "transform.set",
            fields={"total": "{{ input.price * input.qty }}", "who": "{{ input.name }}"},
        )
    )
    workflow_id = await create_workflow(factory, owner, graph)
    before = await factory.snapshot()

    payload = await node_test(
        factory,
        member,
        workflowId=workflow_id,
        nodeId="build",
        input={"price": 3, "qty": 4, "name": "Ada"},
    )

    result = payload["result"]
    assert payload["userErrors"] == []
    assert {k: v for k, v in result.items() if k != "durationMs"} == {
        "status": "SUCCEEDED",
        "output": {"total": 12, "who": "Ada"},
        "error": None,
        "activeHandles": None,
    }
    assert 0 <= result["durationMs"] < 5000
    assert await factory.snapshot() == before  # no run, step, event, job or audit row


async def test_a_branch_says_which_handle_carries_on(factory: Factory) -> None:
    owner = await factory.owner()
    graph = graph_of(node("check", "logic.if", condition="{{ input.n > 2 }}"))
    workflow_id = await create_workflow(factory, owner, graph)

    high = await node_test(factory, owner, workflowId=workflow_id, nodeId="check", input={"n": 3})
    low = await node_test(factory, owner, workflowId=workflow_id, nodeId="check", input={"n": 1})

    assert (high["result"]["status"], high["result"]["activeHandles"]) == ("SUCCEEDED", ["true"])
    assert (low["result"]["status"], low["result"]["activeHandles"]) == ("SUCCEEDED", ["false"])


async def test_secrets_are_used_and_the_answer_is_redacted_like_a_step(
    factory: Factory, upstream: LocalHTTP
) -> None:
    owner = await factory.owner()
    await set_secret(factory, owner, "KEY", KEY)
    graph = graph_of(
        node(
            "call",
            "http.request",
            method="POST",
            url=upstream.url("/echo"),
            headers={"x-key": "{{ secrets.KEY }}"},
            body={"sent": "{{ secrets.KEY }}"},
        )
    )
    workflow_id = await create_workflow(factory, owner, graph)

    payload = await node_test(factory, owner, workflowId=workflow_id, nodeId="call", input={})

    # The upstream got the real key; the answer shows the placeholder only
    assert upstream.hits[-1].headers["x-key"] == KEY
    output = payload["result"]["output"]
    assert output["status"] == 200
    assert output["body"] == {
        "method": "POST",
        "key": "[secret:KEY]",
        "body": '{"sent":"[secret:KEY]"}',
    }
    assert KEY not in json.dumps(payload)


async def test_a_failing_node_answers_as_its_step_would_in_a_run(
    factory: Factory, worker: None
) -> None:
    # Given a node that fails quoting a secret and its input
    owner = await factory.owner()
    await set_secret(factory, owner, "KEY", KEY)
    graph = graph_of(
        node("stop", "flow.fail", message="no {{ input.name }} with {{ secrets.KEY }}")
    )
    workflow_id = await create_workflow(factory, owner, graph)

    # When it is tested, and when it runs for real
    tested = await node_test(
        factory, owner, workflowId=workflow_id, nodeId="stop", input={"name": "Bob"}
    )
    run_id = (await execute(factory, owner, workflow_id, {"name": "Bob"}))["run"]["id"]
    step = steps_by_node(await wait_for(factory, owner, run_id))["stop"]

    # Then the answer and the step say the same, redacted
    assert tested["result"]["status"] == step["status"] == "FAILED"
    assert tested["result"]["error"] == step["error"] == "no Bob with [secret:KEY]"
    assert tested["result"]["output"] is None


async def test_the_input_a_past_run_recorded_for_the_node(factory: Factory, worker: None) -> None:
    # Given a run where "double" got {"n": 21} from "add"
    owner = await factory.owner()
    graph = graph_of(
        node("add", "transform.set", fields={"n": "{{ input.n + 1 }}"}),
        node(
            "double",
            "transform.set",
            fields={
                "n": "{{ input.n * 2 }}",
                "first": "{{ nodes.add.output.n }}",
                "from": "{{ trigger.n }}",
            },
        ),
    )
    workflow_id = await create_workflow(factory, owner, graph)
    run_id = (await execute(factory, owner, workflow_id, {"n": 20}))["run"]["id"]
    assert (await wait_for(factory, owner, run_id))["status"] == "SUCCEEDED"
    before = await factory.snapshot()

    # When the node is tested with that run's input for it
    payload = await node_test(
        factory, owner, workflowId=workflow_id, nodeId="double", fromRunId=run_id
    )

    # Then it got what it got in the run, with the run's trigger and node outputs
    assert payload["result"]["output"] == {"n": 42, "first": 21, "from": 20}
    assert await factory.snapshot() == before


async def test_a_draft_version_can_be_tested_node_by_node(factory: Factory) -> None:
    # A half-drawn save cannot run, but its nodes can be tried one by one
    owner = await factory.owner()
    workflow_id = await create_workflow(
        factory, owner, graph_of(node("a", "text.format", template="v1"))
    )
    draft = {
        "nodes": [
            node("start", "trigger"),
            node("a", "text.format", template="v2 {{ input.x }}"),
            node("loose", "flow.fail"),
        ],
        "edges": [edge("start", "a")],
    }
    saved = await factory.gql(
        """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }""",
        {"i": {"workflowId": workflow_id, "graph": draft, "baseVersion": 1}},
        token=owner.token,
    )
    assert saved["data"]["workflowSave"]["userErrors"] == []

    newest = await node_test(factory, owner, workflowId=workflow_id, nodeId="a", input={"x": 1})
    first = await node_test(factory, owner, workflowId=workflow_id, nodeId="a", version=1, input={})

    assert newest["result"]["output"] == "v2 1"
    assert first["result"]["output"] == "v1"


# --- the same guards as a run ---------------------------------------------------------------


async def test_the_outbound_guard_refuses_private_addresses(factory: Factory) -> None:
    owner = await factory.owner()
    graph = graph_of(
        node("call", "http.request", method="GET", url="http://169.254.169.254/latest/meta-data")
    )
    workflow_id = await create_workflow(factory, owner, graph)

    payload = await node_test(factory, owner, workflowId=workflow_id, nodeId="call", input={})

    assert payload["result"]["status"] == "FAILED"
    assert payload["result"]["error"] == (
        "Refused to connect to 169.254.169.254: cloud metadata address is not allowed."
    )


async def test_a_runaway_expression_is_stopped_by_the_sandbox(factory: Factory) -> None:
    owner = await factory.owner()
    ten = "[0,1,2,3,4,5,6,7,8,9]"
    runaway = "{{ " + f"{ten}.map(a, {ten}.map(b, {ten}.map(c, {ten}.map(d, {ten}.map(e, "
    runaway += f"{ten}.map(f, {ten}.map(g, a))))))) }}}}"
    workflow_id = await create_workflow(
        factory, owner, graph_of(node("spin", "text.format", template=runaway))
    )

    payload = await node_test(factory, owner, workflowId=workflow_id, nodeId="spin", input={})

    assert payload["result"]["status"] == "FAILED"
    assert payload["result"]["error"].endswith("took longer than 1.0 s and was stopped.")


async def test_the_node_timeout_bounds_the_test(factory: Factory, upstream: LocalHTTP) -> None:
    owner = await factory.owner()
    graph = graph_of(
        node("call", "http.request", method="GET", url=upstream.url("/slow"), timeoutSeconds=0.3)
    )
    workflow_id = await create_workflow(factory, owner, graph)

    payload = await node_test(factory, owner, workflowId=workflow_id, nodeId="call", input={})

    result = payload["result"]
    assert result["status"] == "FAILED"
    assert result["error"] in {
        "Timed out after 0.3 seconds.",
        "No complete response from 127.0.0.1 within 0.3 seconds.",
    }
    assert 250 <= result["durationMs"] < 1500


async def test_a_large_output_is_cut_to_the_step_cap_as_a_step_stores_it(
    factory: Factory, upstream: LocalHTTP, settings: Settings
) -> None:
    owner = await factory.owner()
    graph = graph_of(node("call", "http.request", method="GET", url=upstream.url("/big")))
    workflow_id = await create_workflow(factory, owner, graph)

    body = await factory.client.post(
        "/graphql",
        json={
            "query": NODE_TEST,
            "variables": {"i": {"workflowId": workflow_id, "nodeId": "call"}},
        },
        headers={"authorization": f"Bearer {owner.token}"},
    )

    result = body.json()["data"]["nodeTest"]["result"]
    rows = result["output"]["body"]["rows"]
    assert result["status"] == "SUCCEEDED"
    compact = json.dumps(result["output"], separators=(",", ":"), ensure_ascii=False)
    assert len(compact.encode()) <= settings.max_step_io_bytes
    assert rows[-1].startswith("[truncated: ")
    assert rows[-1].endswith(" more items]")
    assert rows[0] == "x" * 1000


async def test_a_long_delay_is_not_waited_for(factory: Factory) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(
        factory, owner, graph_of(node("wait", "flow.delay", seconds=3600))
    )

    payload = await node_test(factory, owner, workflowId=workflow_id, nodeId="wait", input={"a": 1})

    assert payload["result"]["status"] == "FAILED"
    assert payload["result"]["error"].startswith("The node would wait until ")
    assert payload["result"]["error"].endswith("; a test does not wait that long.")


async def test_the_api_answers_others_while_a_test_waits_on_a_slow_upstream(
    factory: Factory, upstream: LocalHTTP
) -> None:
    # Given a node test waiting two seconds on its upstream
    owner = await factory.owner()
    graph = graph_of(
        node("call", "http.request", method="GET", url=upstream.url("/slow"), timeoutSeconds=10)
    )
    workflow_id = await create_workflow(factory, owner, graph)
    waiting = asyncio.create_task(
        node_test(factory, owner, workflowId=workflow_id, nodeId="call", input={})
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while upstream.count("/slow") == 0:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)

    # When others use the API meanwhile
    timings = []
    for _ in range(10):
        started = loop.time()
        body = await factory.gql("{ viewer { email } }", token=owner.token)
        timings.append(loop.time() - started)
        assert body["data"]["viewer"]["email"] == owner.user.email
    held = await factory.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%'"
    )

    # Then they were answered at once, the test holds no database connection, and it ends
    assert not waiting.done()
    assert max(timings) < 0.5, timings
    assert held == 0
    result = (await waiting)["result"]
    assert (result["status"], result["output"]["body"]) == ("SUCCEEDED", {"late": True})
    assert result["durationMs"] >= 1900


# --- who may, and what is refused ----------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.VIEWER, False), (Role.MEMBER, True), (Role.EDITOR, True), (Role.OWNER, True)],
)
async def test_members_and_above_may_test_a_node(
    factory: Factory, role: Role, allowed: bool
) -> None:
    owner = await factory.owner()
    caller = owner if role is Role.OWNER else await factory.member(owner, role)
    workflow_id = await create_workflow(
        factory, owner, graph_of(node("a", "text.format", template="hi"))
    )
    before = await factory.snapshot()

    body = await factory.gql(
        NODE_TEST, {"i": {"workflowId": workflow_id, "nodeId": "a"}}, token=caller.token
    )

    if allowed:
        assert body["data"]["nodeTest"]["result"]["output"] == "hi"
    else:
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert await factory.snapshot() == before


async def test_another_workspaces_workflow_and_run_read_as_not_found(
    factory: Factory, worker: None
) -> None:
    owner = await factory.owner()
    stranger = await factory.owner("Elsewhere")
    graph = graph_of(node("a", "text.format", template="hi"))
    workflow_id = await create_workflow(factory, owner, graph)
    theirs = await create_workflow(factory, stranger, graph)
    their_run = (await execute(factory, stranger, theirs, {}))["run"]["id"]
    await wait_for(factory, stranger, their_run)
    before = await factory.snapshot()

    # Their token on our workflow, and our token with their run
    as_stranger = await factory.gql(
        NODE_TEST, {"i": {"workflowId": workflow_id, "nodeId": "a"}}, token=stranger.token
    )
    with_their_run = await factory.gql(
        NODE_TEST,
        {"i": {"workflowId": workflow_id, "nodeId": "a", "fromRunId": their_run}},
        token=owner.token,
    )

    assert [(e["extensions"]["code"], e["message"]) for e in as_stranger["errors"]] == [
        ("NOT_FOUND", "Workflow not found.")
    ]
    assert [(e["extensions"]["code"], e["message"]) for e in with_their_run["errors"]] == [
        ("NOT_FOUND", "Run not found.")
    ]
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"nodeId": "nope"}, (["input", "nodeId"], "NOT_FOUND", 'The version has no node "nope".')),
        (
            {"nodeId": "n" * 100_000},
            (["input", "nodeId"], "NOT_FOUND", f'The version has no node "{"n" * 100_000}".'),
        ),
        (
            {"nodeId": "a", "version": 9},
            (["input", "version"], "NOT_FOUND", "Version 9 does not exist."),
        ),
        (
            {"nodeId": "a", "version": -1},
            (["input", "version"], "NOT_FOUND", "Version -1 does not exist."),
        ),
        (
            {"nodeId": "a", "input": "x\u0000y"},
            (
                ["input", "input"],
                "INVALID",
                "String contains a NUL character, which JSONB cannot store.",
            ),
        ),
        (
            {"nodeId": "a", "input": {"big": "x" * 1_100_000}},
            (
                ["input", "input", "big"],
                "INVALID",
                "String is 1100000 characters long; the maximum is 100000.",
            ),
        ),
        (
            {"nodeId": "a", "input": {"items": ["x" * 90_000] * 13}},
            (["input", "input"], "INVALID", "The input is 1170063 bytes; the limit is 1048576."),
        ),
        (
            {"nodeId": "a", "input": {}, "fromRunId": "RUN"},
            (["input"], "INVALID", "Give either `input` or `fromRunId`, not both."),
        ),
        (
            {"nodeId": "a", "fromRunId": "OTHER"},
            (["input", "fromRunId"], "INVALID", "That run is of another workflow."),
        ),
        (
            {"nodeId": "loose", "fromRunId": "RUN"},
            (
                ["input", "fromRunId"],
                "INVALID",
                'Node "loose" did not run in that run: it recorded no input for it.',
            ),
        ),
        (
            {"nodeId": "odd"},
            (
                ["input", "nodeId"],
                "INVALID",
                'Node "odd" has type "no.such.type", which is not a known node type.',
            ),
        ),
    ],
)
async def test_wrong_hostile_and_oversized_input_is_a_user_error(
    factory: Factory, worker: None, given: dict[str, Any], error: tuple[list[str], str, str]
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(
        factory, owner, graph_of(node("a", "text.format", template="hi"))
    )
    other_id = await create_workflow(
        factory, owner, graph_of(node("a", "text.format", template="hi")), "Other"
    )
    branchy = {
        "nodes": [
            node("start", "trigger"),
            node("a", "logic.if", condition="{{ false }}"),
            node("loose", "text.format", template="x"),
        ],
        "edges": [edge("start", "a"), edge("a", "loose", "true")],
    }
    saved = await factory.gql(
        """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }""",
        {"i": {"workflowId": workflow_id, "graph": branchy, "baseVersion": 1}},
        token=owner.token,
    )
    assert saved["data"]["workflowSave"]["userErrors"] == []
    odd = {"nodes": [*branchy["nodes"], node("odd", "no.such.type")], "edges": branchy["edges"]}
    # Version 3 holds a node of an unknown type (saved: unknown types are warnings)
    await factory.gql(
        """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }""",
        {"i": {"workflowId": workflow_id, "graph": odd, "baseVersion": 2}},
        token=owner.token,
    )
    run_id = (await execute(factory, owner, workflow_id, {}, version=2))["run"]["id"]
    other_run = (await execute(factory, owner, other_id, {}))["run"]["id"]
    await wait_for(factory, owner, run_id)
    await wait_for(factory, owner, other_run)
    if given.get("fromRunId") == "RUN":
        given = {**given, "fromRunId": run_id}
    if given.get("fromRunId") == "OTHER":
        given = {**given, "fromRunId": other_run}
    before = await factory.snapshot()

    payload = await node_test(factory, owner, workflowId=workflow_id, **given)

    field, code, message = error
    assert payload == {
        "result": None,
        "userErrors": [{"field": field, "code": code, "message": message}],
    }
    assert await factory.snapshot() == before


async def test_hostile_ids_read_as_not_found(factory: Factory) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(
        factory, owner, graph_of(node("a", "text.format", template="hi"))
    )
    before = await factory.snapshot()
    for given in (
        {"workflowId": "W" * 100_000, "nodeId": "a"},
        {"workflowId": gid("Run", owner.user.id), "nodeId": "a"},
        {"workflowId": workflow_id, "nodeId": "a", "fromRunId": "\u0000"},
        {"workflowId": workflow_id, "nodeId": "a", "fromRunId": gid("Run", owner.user.id)},
    ):
        body = await factory.gql(NODE_TEST, {"i": given}, token=owner.token)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    assert await factory.snapshot() == before
