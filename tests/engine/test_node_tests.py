"""The engine's node test: the cap on its wait, and the parents a merge is given."""

from __future__ import annotations

import uuid

from app.engine.node_tests import NodeTestCase, parents_of, run_node_test
from app.engine.nodes.base import get_node_type
from app.models import StepStatus
from app.settings import Settings


def case(node: dict, value: object, sources: tuple[str, ...] = ("start",)) -> NodeTestCase:
    node_type = get_node_type(node["type"])
    assert node_type is not None
    return NodeTestCase(
        node=node,
        node_type=node_type,
        sources=sources,
        input=value,
        nodes={},
        trigger=value,
        run={"id": str(uuid.uuid4()), "workflowId": str(uuid.uuid4()), "version": 1},
        workspace_id=uuid.uuid4(),
        secrets={},
    )


async def test_a_node_without_a_timeout_is_stopped_at_the_cap() -> None:
    # Given a five-second delay (slept, not released) and a cap of 0.3 s
    delay = {"id": "wait", "type": "flow.delay", "data": {"seconds": 5}}

    result = await run_node_test(case(delay, {"a": 1}), settings=Settings(), cap_seconds=0.3)

    assert (result.status, result.error, result.output) == (
        StepStatus.FAILED,
        "Timed out after 0.3 seconds.",
        None,
    )
    assert 250 <= result.duration_ms < 1500


async def test_the_nodes_own_shorter_timeout_wins() -> None:
    delay = {"id": "wait", "type": "flow.delay", "data": {"seconds": 5, "timeoutSeconds": 0.2}}

    result = await run_node_test(case(delay, None), settings=Settings(), cap_seconds=60)

    assert result.error == "Timed out after 0.2 seconds."


async def test_an_invalid_config_is_the_answer_not_an_exception() -> None:
    broken = {"id": "x", "type": "text.format", "data": {"template": "{{ 1 + }}"}}
    invalid = {"id": "y", "type": "flow.delay", "data": {"seconds": -1}}

    syntax = await run_node_test(case(broken, None), settings=Settings(), cap_seconds=5)
    config = await run_node_test(case(invalid, None), settings=Settings(), cap_seconds=5)

    assert syntax.status is StepStatus.FAILED
    assert syntax.error is not None
    assert syntax.error.startswith("template: Syntax error in {{ 1 + }}")
    assert (config.status, config.error) == (
        StepStatus.FAILED,
        "Invalid configuration: seconds: Input should be greater than 0",
    )


def test_parents_are_given_as_a_run_gives_them() -> None:
    assert parents_of({"n": 1}, ("a",)) == {"a": {"n": 1}}
    assert parents_of({"a": 1, "b": 2, "c": 3}, ("a", "b")) == {"a": 1, "b": 2}
    assert parents_of({"a": 1}, ("a", "b")) == {"a": 1}
    assert parents_of([1, 2], ("a", "b")) == {}
    assert parents_of(None, ()) == {}
