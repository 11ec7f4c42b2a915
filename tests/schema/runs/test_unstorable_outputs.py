"""Values JSONB cannot store, produced by nodes, are stored cleaned: the step's fate is its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.responses import Response

from app.engine.redact import storable
from tests.factories import Factory
from tests.runs import create_workflow, edge, execute, node, steps_by_node, wait_for
from tests.servers import LocalHTTP


@pytest.fixture
def upstream() -> Iterator[LocalHTTP]:
    async def nul(request: Request) -> Response:
        return Response(
            b'{"a": "x\\u0000y", "\\u0000k": [1, "\\ud800"]}', media_type="application/json"
        )

    server = LocalHTTP(routes={"/nul": nul}).start()
    yield server
    server.stop()


def test_storable_replaces_what_jsonb_refuses() -> None:
    assert storable(
        {"a": "x\x00y", "b\x00": ["\ud800", float("nan"), float("inf")], "n": 10**30}
    ) == {
        "a": "x\ufffdy",
        "b\ufffd": ["\ufffd", None, None],
        "n": 10**30,
    }
    kept = {"a": [1, 2.5, None, True, "ok"]}
    assert storable(kept) == kept


async def test_an_upstream_body_with_nul_characters_is_stored_cleaned(
    factory: Factory, worker: None, upstream: LocalHTTP
) -> None:
    # Given an upstream whose JSON carries NUL characters and a lone surrogate
    owner = await factory.owner()
    graph = {
        "nodes": [
            node("start", "trigger"),
            node("call", "http.request", url=upstream.url("/nul")),
            node("fail", "flow.fail", message="Got {{ input.body.a }}"),
        ],
        "edges": [edge("start", "call"), edge("call", "fail")],
    }
    workflow_id = await create_workflow(factory, owner, graph)
    # When it runs
    run = await wait_for(factory, owner, (await execute(factory, owner, workflow_id))["run"]["id"])
    # Then the call ran once and its step SUCCEEDED with the values cleaned, and the error
    # quoting the value is stored too: nothing looks like a crashing worker
    assert upstream.count("/nul") == 1
    steps = steps_by_node(run)
    assert steps["call"]["status"] == "SUCCEEDED"
    assert steps["call"]["attempt"] == 1
    assert steps["call"]["output"]["body"] == {"a": "x\ufffdy", "\ufffdk": [1, "\ufffd"]}
    assert steps["fail"]["error"] == "Got x\ufffdy"
    assert run["error"] == 'Node "fail" (flow.fail) failed: Got x\ufffdy'
