"""workflowExecute checks the input against the trigger's input schema before anything is
queued: INPUT_INVALID with the path into the input, and nothing written."""

from __future__ import annotations

import time
from typing import Any

from tests.factories import Factory
from tests.runs import create_workflow, execute, flow, node, wait_for

PERSON = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "additionalProperties": False,
}
GREETING = flow(
    node("t", "trigger", inputSchema=PERSON),
    node("out", "output", value="Hello, {{ trigger.name }}"),
    handle="out",
)
PREFIX = "The run input does not match the trigger's input schema at "


def refusal(field: list[str], where: str, reason: str) -> dict[str, Any]:
    return {
        "field": ["input", "input", *field],
        "code": "INPUT_INVALID",
        "message": PREFIX + f"{where}: {reason}",
    }


async def test_an_input_of_the_wrong_types_is_refused_with_each_path_and_nothing_is_written(
    factory: Factory,
) -> None:
    # Given a workflow whose trigger wants {name: string, age?: integer >= 0} and nothing else
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GREETING)
    before = await factory.snapshot()

    # When inputs that do not match are executed
    wrong = await execute(factory, owner, workflow_id, {"name": 42, "age": "old", "x": 1})
    missing = await execute(factory, owner, workflow_id, {"age": -1})
    not_object = await execute(factory, owner, workflow_id, ["Ada"])
    nothing = await execute(factory, owner, workflow_id, None)

    # Then each is refused, every problem named by its path, and nothing was written: no run,
    # step, event or job
    assert wrong == {
        "run": None,
        "userErrors": [
            refusal([], "$", "Additional properties are not allowed ('x' was unexpected)"),
            refusal(["age"], "$.age", "'old' is not of type 'integer'"),
            refusal(["name"], "$.name", "42 is not of type 'string'"),
        ],
    }
    assert missing["userErrors"] == [
        refusal([], "$", "'name' is a required property"),
        refusal(["age"], "$.age", "-1 is less than the minimum of 0"),
    ]
    assert not_object["userErrors"] == [refusal([], "$", "['Ada'] is not of type 'object'")]
    assert nothing["userErrors"] == [refusal([], "$", "None is not of type 'object'")]
    assert await factory.snapshot() == before


async def test_an_input_that_matches_is_queued_and_runs(factory: Factory, worker: None) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GREETING)

    queued = await execute(factory, owner, workflow_id, {"name": "Ada", "age": 36})
    run = await wait_for(factory, owner, queued["run"]["id"])

    assert queued["userErrors"] == []
    assert (run["status"], run["output"]) == ("SUCCEEDED", "Hello, Ada")


async def test_a_deeply_nested_input_is_refused_at_its_deepest_path(factory: Factory) -> None:
    # Given a recursive schema: every "a" holds an object
    owner = await factory.owner()
    tree = {"$defs": {"n": {"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}}}}
    graph = flow(node("t", "trigger", inputSchema={**tree, "$ref": "#/$defs/n"}))
    workflow_id = await create_workflow(factory, owner, graph)
    value: Any = 5
    for _ in range(31):  # 31 objects deep (the input depth limit is 32)
        value = {"a": value}
    before = await factory.snapshot()

    # When the innermost "a" is a number
    result = await execute(factory, owner, workflow_id, value)

    # Then the error points at it, 31 keys down
    assert result["userErrors"] == [
        refusal(["a"] * 31, "$" + ".a" * 31, "5 is not of type 'object'")
    ]
    assert await factory.snapshot() == before


async def test_a_huge_input_is_checked_within_a_second_and_refused_when_it_takes_longer(
    factory: Factory,
) -> None:
    # Given a schema that is costly per item: each of 340,000 items tried against 21 schemas
    owner = await factory.owner()
    costly = {
        "anyOf": [{"type": "string", "minLength": k} for k in range(20)] + [{"type": "integer"}]
    }
    workflow_id = await create_workflow(
        factory, owner, flow(node("t", "trigger", inputSchema={"type": "array", "items": costly}))
    )
    cheap_id = await create_workflow(
        factory,
        owner,
        flow(node("t", "trigger", inputSchema={"type": "array", "items": {"type": "integer"}})),
        "Cheap",
    )
    huge = [0] * 340_000  # 1,020,000 bytes as the size is counted: under the 1 MiB limit
    before = await factory.snapshot()

    # When it is executed (which would take minutes to check in full)
    started = time.monotonic()
    result = await execute(factory, owner, workflow_id, huge)
    took = time.monotonic() - started
    wrong_last = await execute(factory, owner, cheap_id, [*huge[:10_000], "x"])

    # Then the check stops at its budget and says so; nothing is written. A cheap schema is
    # checked over the whole of a large input: its wrong last item is found
    assert result["userErrors"] == [
        refusal([], "$", "checking it took over 1 s; send a smaller input")
    ]
    assert took < 5, took
    assert wrong_last["userErrors"] == [
        refusal(["10000"], "$[10000]", "'x' is not of type 'integer'")
    ]
    assert await factory.snapshot() == before


async def test_a_schema_that_cannot_be_applied_makes_the_version_unable_to_run(
    factory: Factory,
) -> None:
    owner = await factory.owner()
    endless = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    elsewhere = {"$ref": "https://schemas.example.com/order.json"}
    endless_id = await create_workflow(
        factory, owner, flow(node("t", "trigger", inputSchema=endless)), "Endless"
    )
    elsewhere_id = await create_workflow(
        factory, owner, flow(node("t", "trigger", inputSchema=elsewhere)), "Elsewhere"
    )
    before = await factory.snapshot()

    loops = await execute(factory, owner, endless_id, {"name": "Ada"})
    fetches = await execute(factory, owner, elsewhere_id, {"name": "Ada"})

    cannot = 'Version 1 cannot run: the input schema of trigger "t" cannot be applied: '
    assert loops["userErrors"] == [
        {
            "field": ["input", "version"],
            "code": "GRAPH_INVALID",
            "message": cannot + "it refers to itself without end",
        }
    ]
    assert fetches["userErrors"] == [
        {
            "field": ["input", "version"],
            "code": "GRAPH_INVALID",
            "message": cannot
            + "it refers to 'https://schemas.example.com/order.json', which it does not define",
        }
    ]
    assert await factory.snapshot() == before
