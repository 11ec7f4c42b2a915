"""Tests for the node types in app/engine/nodes: each one's happy and failure paths."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from app.engine.nodes import (
    ai_generate,
    flow_delay,
    flow_fail,
    logic_if,
    logic_merge,
    logic_switch,
    output,
    pdf_extract_text,
    text_format,
    transform_set,
    trigger,
)
from app.engine.nodes import http_request as http
from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeFailure,
    NodeOutcome,
    NodeType,
    ReleaseUntil,
    load_catalogue,
)

MINE = {
    "trigger": ("Triggers", (), ("out",), ()),
    "transform.set": ("Data", ("in",), ("out",), ()),
    "text.format": ("Data", ("in",), ("out",), ()),
    "logic.if": ("Logic", ("in",), ("true", "false"), ()),
    "logic.switch": ("Logic", ("in",), ("default",), ("cases",)),
    "logic.merge": ("Logic", ("in",), ("out",), ()),
    "flow.delay": ("Flow", ("in",), ("out",), ()),
    "flow.fail": ("Flow", ("in",), (), ()),
    "output": ("Flow", ("in",), (), ()),
}


def context(started: datetime | None = None, **extras: Any) -> NodeContext:
    return NodeContext(
        run_id=uuid.UUID(int=1),
        workspace_id=uuid.UUID(int=2),
        node_id="node-1",
        attempt=1,
        step_started_at=started or datetime.now(UTC),
        settings=None,
        extras=extras,
    )


async def run_node(node_type: NodeType, data: dict[str, Any], input: Any, **extras: Any) -> Any:
    config_model: type[NodeConfig] = node_type.config_model
    config = config_model.model_validate(data)
    return await node_type.run(context(**extras), config, input)


def test_each_node_type_is_registered_with_its_handles() -> None:
    # Given the catalogue
    catalogue = load_catalogue()

    # When the node types of this package are looked at
    shapes = {
        name: (kind.category, kind.inputs, kind.outputs, kind.lazy_fields)
        for name, kind in catalogue.items()
        if name in MINE
    }

    # Then each has its category, handles and lazy fields, and every config field is described
    assert shapes == MINE
    for name in MINE:
        kind = catalogue[name]
        assert kind.label
        assert kind.description
        config_model: type[NodeConfig] = kind.config_model
        undescribed = [f for f, info in config_model.model_fields.items() if not info.description]
        assert undescribed == [], name
        assert kind.config_schema()["type"] == "object"


# The integrations: (node type, category, label, config model, config fields, required fields).
INTEGRATIONS = [
    pytest.param(
        ai_generate.NODE_TYPE,
        ("ai.generate", "AI", "Generate text with AI"),
        ai_generate.AiGenerateConfig,
        ai_generate.run,
        "apiKeySecret baseUrl continueOnFail maxTokens model prompt retry system temperature"
        " timeoutSeconds",
        ["baseUrl", "model", "prompt"],
        id="ai.generate",
    ),
    pytest.param(
        http.NODE_TYPE,
        ("http.request", "Integrations", "HTTP request"),
        http.HttpRequestConfig,
        http.run,
        "body continueOnFail expectStatus followRedirects headers method query retry"
        " timeoutSeconds url",
        ["url"],
        id="http.request",
    ),
    pytest.param(
        pdf_extract_text.NODE_TYPE,
        ("pdf.extract_text", "Documents", "Extract text from PDF"),
        pdf_extract_text.PdfExtractTextConfig,
        pdf_extract_text.run,
        "base64 continueOnFail retry timeoutSeconds url",
        None,
        id="pdf.extract_text",
    ),
]


@pytest.mark.parametrize(
    ("node_type", "names", "config_model", "run", "fields", "required"), INTEGRATIONS
)
def test_each_integration_is_registered_with_a_described_form(
    node_type: NodeType,
    names: tuple[str, str, str],
    config_model: type[NodeConfig],
    run: Any,
    fields: str,
    required: list[str] | None,
) -> None:
    schema = node_type.config_schema()

    assert (node_type.type, node_type.category, node_type.label) == names
    assert (node_type.config_model, node_type.run) == (config_model, run)
    assert (node_type.inputs, node_type.outputs) == (("in",), ("out",))
    assert sorted(schema["properties"]) == fields.split()
    assert [
        name for name, field in schema["properties"].items() if not field.get("description")
    ] == []
    assert schema.get("required", "absent") == (required or "absent")


def test_http_request_offers_the_methods_it_sends() -> None:
    methods = http.NODE_TYPE.config_schema()["properties"]["method"]["enum"]

    assert methods == ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


async def test_trigger_passes_the_run_input_on() -> None:
    outcome = await run_node(trigger.NODE_TYPE, {}, {"name": "Ada"})
    assert outcome == NodeOutcome({"name": "Ada"})


async def test_trigger_accepts_input_matching_its_schema() -> None:
    schema = {"type": "object", "required": ["name"], "properties": {"age": {"type": "integer"}}}
    outcome = await run_node(trigger.NODE_TYPE, {"inputSchema": schema}, {"name": "Ada", "age": 36})
    assert outcome == NodeOutcome({"name": "Ada", "age": 36})


async def test_trigger_refuses_input_not_matching_its_schema() -> None:
    # Given a trigger whose schema wants an integer age
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}

    # When the input has a string age, then the node fails saying where and why
    with pytest.raises(NodeFailure) as caught:
        await run_node(trigger.NODE_TYPE, {"inputSchema": schema}, {"age": "old"})
    assert str(caught.value) == (
        "The run input does not match the trigger's input schema at $.age: "
        "'old' is not of type 'integer'"
    )


async def test_trigger_fails_on_a_schema_that_cannot_be_applied() -> None:
    # A schema can pass check_schema and still not apply: it refers to itself without end
    endless = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    with pytest.raises(NodeFailure) as caught:
        await run_node(trigger.NODE_TYPE, {"inputSchema": endless}, {"age": 1})
    assert str(caught.value) == (
        "The trigger's input schema cannot be applied: it refers to itself without end"
    )


def test_an_input_check_stops_at_its_budget() -> None:
    # Given a schema costly per item and a long list (minutes to check in full)
    costly = {"anyOf": [{"type": "string", "minLength": k} for k in range(20)] + [{}]}
    graph = {"nodes": [{"id": "t", "type": "trigger", "data": {"inputSchema": {"items": costly}}}]}
    (check,) = trigger.input_checks(graph)
    started = time.monotonic()
    problems = trigger.input_problems(check.validator, [0] * 200_000, seconds=0.2)
    took = time.monotonic() - started
    assert problems == [
        trigger.InputProblem(
            path=(), json_path="$", reason="checking it took over 0.2 s; send a smaller input"
        )
    ]
    assert took < 1, took


async def test_trigger_checks_a_large_input_off_the_event_loop() -> None:
    # Given a schema costly per item and an input that takes the check its whole budget
    costly = {"anyOf": [{"type": "string", "minLength": k} for k in range(20)] + [{}]}
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    # When the trigger checks it, then it fails at the budget ...
    with pytest.raises(NodeFailure) as caught:
        await run_node(trigger.NODE_TYPE, {"inputSchema": {"items": costly}}, [0] * 200_000)
    took = time.monotonic() - started
    ticker.cancel()
    assert str(caught.value) == (
        "The run input does not match the trigger's input schema at $: "
        "checking it took over 1 s; send a smaller input"
    )
    # ... and the event loop ran meanwhile (a check on the loop would let it tick ~once)
    assert took >= 1
    assert ticks >= took / 0.02 / 4, (ticks, took)


def test_trigger_refuses_an_invalid_schema() -> None:
    with pytest.raises(ValidationError) as caught:
        trigger.TriggerConfig.model_validate({"inputSchema": {"type": 5}})
    assert caught.value.errors()[0]["loc"] == ("inputSchema",)
    assert caught.value.errors()[0]["msg"].startswith("Value error, not a valid JSON Schema: 5")


async def test_transform_set_outputs_its_fields() -> None:
    fields = {"email": "ada@example.com", "count": 3, "tags": ["a"]}
    outcome = await run_node(transform_set.NODE_TYPE, {"fields": fields}, {"ignored": True})
    assert outcome == NodeOutcome({"email": "ada@example.com", "count": 3, "tags": ["a"]})


def test_transform_set_needs_an_object_of_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        transform_set.TransformSetConfig.model_validate({"fields": ["a"]})
    assert [error["loc"] for error in caught.value.errors()] == [("fields",)]


async def test_text_format_outputs_the_text() -> None:
    outcome = await run_node(text_format.NODE_TYPE, {"template": "Hello Ada"}, None)
    assert outcome == NodeOutcome("Hello Ada")


async def test_text_format_writes_a_typed_template_as_text() -> None:
    outcome = await run_node(text_format.NODE_TYPE, {"template": {"a": [1, None]}}, None)
    assert outcome == NodeOutcome('{"a":[1,null]}')


async def test_text_format_parses_json() -> None:
    data = {"template": '{"total": 12, "items": ["a"]}', "format": "json"}
    outcome = await run_node(text_format.NODE_TYPE, data, None)
    assert outcome == NodeOutcome({"total": 12, "items": ["a"]})


async def test_text_format_fails_on_text_that_is_not_json() -> None:
    with pytest.raises(NodeFailure) as caught:
        await run_node(text_format.NODE_TYPE, {"template": '{"a": 1,}', "format": "json"}, None)
    assert str(caught.value) == (
        "The formatted text is not valid JSON: trailing comma is not allowed: "
        "line 1 column 8 (char 7)."
    )


@pytest.mark.parametrize(("condition", "handle"), [(True, "true"), (False, "false")])
async def test_logic_if_routes_by_its_condition(condition: bool, handle: str) -> None:
    outcome = await run_node(logic_if.NODE_TYPE, {"condition": condition}, {"id": 1})
    assert outcome == NodeOutcome({"id": 1}, frozenset({handle}))


@pytest.mark.parametrize(
    ("condition", "shown"), [("yes", '"yes"'), (1, "1"), (None, "null"), ([True], "[true]")]
)
async def test_logic_if_fails_on_a_condition_that_is_not_a_boolean(
    condition: Any, shown: str
) -> None:
    with pytest.raises(NodeFailure) as caught:
        await run_node(logic_if.NODE_TYPE, {"condition": condition}, {"id": 1})
    assert str(caught.value) == f"The condition must be true or false, got {shown}."


def switch_data(*conditions: Any) -> dict[str, Any]:
    handles = ("high", "low", "other")[: len(conditions)]
    pairs = zip(handles, conditions, strict=True)
    return {"cases": [{"handle": h, "condition": c} for h, c in pairs]}


async def test_logic_switch_takes_the_first_true_case_and_evaluates_no_further() -> None:
    # Given a switch whose second case is true and whose third would fail if evaluated
    data = switch_data("{{ input.p == 'high' }}", "{{ input.p == 'low' }}", "{{ nope }}")
    env = {"input": {"p": "low"}}

    # When it runs
    outcome = await run_node(logic_switch.NODE_TYPE, data, {"p": "low"}, env=env)

    # Then the input goes on through the second case's handle
    assert outcome == NodeOutcome({"p": "low"}, frozenset({"low"}))


async def test_logic_switch_falls_back_to_default() -> None:
    data = switch_data("{{ input.p == 'high' }}", False)
    outcome = await run_node(
        logic_switch.NODE_TYPE, data, {"p": "mid"}, env={"input": {"p": "mid"}}
    )
    assert outcome == NodeOutcome({"p": "mid"}, frozenset({"default"}))


async def test_logic_switch_fails_on_a_condition_that_is_not_a_boolean() -> None:
    with pytest.raises(NodeFailure) as caught:
        await run_node(
            logic_switch.NODE_TYPE, switch_data("{{ input.p }}"), {}, env={"input": {"p": 2}}
        )
    assert str(caught.value) == "The condition of case 'high' must be true or false, got 2."


async def test_logic_switch_fails_on_a_failing_expression() -> None:
    with pytest.raises(NodeFailure) as caught:
        await run_node(logic_switch.NODE_TYPE, switch_data("{{ input.q }}"), {}, env={"input": {}})
    assert (
        str(caught.value) == "The condition of case 'high': {{ input.q }} failed: no such key 'q'"
    )


def test_logic_switch_refuses_duplicate_and_reserved_handles() -> None:
    duplicate = {"cases": [{"handle": "a", "condition": True}, {"handle": "a", "condition": True}]}
    reserved = {"cases": [{"handle": "default", "condition": True}]}
    with pytest.raises(ValidationError) as twice:
        logic_switch.LogicSwitchConfig.model_validate(duplicate)
    with pytest.raises(ValidationError) as default:
        logic_switch.LogicSwitchConfig.model_validate(reserved)
    assert twice.value.errors()[0]["msg"] == "Value error, the case handle 'a' is used twice"
    assert default.value.errors()[0]["msg"] == "Value error, the case handle 'default' is reserved"


def test_logic_switch_handles_come_from_its_cases_even_when_malformed() -> None:
    kind = logic_switch.NODE_TYPE
    assert kind.output_handles(switch_data(True, True)) == ("high", "low", "default")
    malformed = {"cases": [{"handle": "a"}, "x", {"handle": 3}, {"handle": ""}, {"handle": "a"}]}
    assert kind.output_handles(malformed) == ("a", "default")
    assert kind.output_handles({"cases": "nope"}) == ("default",)
    assert kind.output_handles({}) == ("default",)


async def test_logic_merge_keys_the_active_parents_outputs_by_id() -> None:
    parents = {"left": {"a": 1}, "right": [2]}
    outcome = await run_node(logic_merge.NODE_TYPE, {}, parents, parents=parents)
    assert outcome == NodeOutcome({"left": {"a": 1}, "right": [2]})


async def test_logic_merge_wraps_a_single_active_parent() -> None:
    outcome = await run_node(logic_merge.NODE_TYPE, {}, {"a": 1}, parents={"left": {"a": 1}})
    assert outcome == NodeOutcome({"left": {"a": 1}})


async def test_logic_merge_lists_the_outputs_in_the_parents_order() -> None:
    parents = {"second": "b", "first": "a"}
    outcome = await run_node(logic_merge.NODE_TYPE, {"mode": "list"}, parents, parents=parents)
    assert outcome == NodeOutcome(["b", "a"])


def test_logic_merge_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValidationError) as caught:
        logic_merge.LogicMergeConfig.model_validate({"mode": "zip"})
    assert [error["loc"] for error in caught.value.errors()] == [("mode",)]


async def test_flow_delay_waits_a_short_delay_in_the_worker() -> None:
    config = flow_delay.FlowDelayConfig(seconds=0.01)
    outcome = await flow_delay.run(context(), config, {"id": 1})
    assert outcome == NodeOutcome({"id": 1})


async def test_flow_delay_is_done_when_resumed_after_its_wake_up_time() -> None:
    started = datetime.now(UTC) - timedelta(hours=2)
    config = flow_delay.FlowDelayConfig(seconds=3600)
    outcome = await flow_delay.run(context(started), config, {"id": 1})
    assert outcome == NodeOutcome({"id": 1})


async def test_flow_delay_releases_the_worker_for_a_long_delay() -> None:
    # Given a step that started now and waits an hour
    started = datetime.now(UTC)
    config = flow_delay.FlowDelayConfig(seconds=3600)

    # When it runs, then it asks to be resumed an hour after it started
    with pytest.raises(ReleaseUntil) as caught:
        await flow_delay.run(context(started), config, None)
    assert caught.value.wake_at == started + timedelta(hours=1)


async def test_flow_delay_can_be_cancelled_while_it_sleeps() -> None:
    # Given a delay sleeping in the worker
    config = flow_delay.FlowDelayConfig(seconds=flow_delay.RELEASE_AFTER_SECONDS)
    waiting = asyncio.create_task(flow_delay.run(context(), config, None))
    await asyncio.sleep(0)

    # When it is cancelled, then the cancellation goes through
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 10)
    assert waiting.cancelled() is True


@pytest.mark.parametrize("seconds", [0, -1, 30 * 24 * 3600 + 1])
def test_flow_delay_refuses_a_delay_out_of_range(seconds: float) -> None:
    with pytest.raises(ValidationError) as caught:
        flow_delay.FlowDelayConfig.model_validate({"seconds": seconds})
    assert [error["loc"] for error in caught.value.errors()] == [("seconds",)]


async def test_flow_fail_fails_with_its_message() -> None:
    with pytest.raises(NodeFailure) as caught:
        await run_node(flow_fail.NODE_TYPE, {"message": "Order 7 has no customer"}, None)
    assert str(caught.value) == "Order 7 has no customer"


async def test_flow_fail_writes_a_typed_message_as_text() -> None:
    with pytest.raises(NodeFailure) as caught:
        await run_node(flow_fail.NODE_TYPE, {"message": {"code": 7}}, None)
    assert str(caught.value) == '{"code":7}'


@pytest.mark.parametrize("message", ["", None])
async def test_flow_fail_without_a_message_fails_with_the_default_one(message: Any) -> None:
    with pytest.raises(NodeFailure) as caught:
        await run_node(flow_fail.NODE_TYPE, {"message": message}, None)
    assert str(caught.value) == "The run was stopped by a Fail node."


async def test_output_outputs_its_value() -> None:
    outcome = await run_node(output.NODE_TYPE, {"value": {"total": 3}}, {"ignored": True})
    assert outcome == NodeOutcome({"total": 3})


def test_output_needs_a_value() -> None:
    with pytest.raises(ValidationError) as caught:
        output.OutputConfig.model_validate({})
    assert [error["loc"] for error in caught.value.errors()] == [("value",)]
