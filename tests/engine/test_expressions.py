"""Tests for app.engine.expressions: templates, typed values, errors, caps and hostile input."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from app.engine.expressions import (
    ExpressionError,
    compile_config,
    compile_template,
    evaluate_template,
    render_config,
    syntax_errors,
    to_text,
)

TEN = "[1,2,3,4,5,6,7,8,9,10]"


def make_env(**input_values: Any) -> dict[str, Any]:
    return {
        "input": {"name": "Ada", "count": 2, "tags": ["a", "b"], "ok": True, **input_values},
        "nodes": {"fetch": {"output": {"status": 200, "body": {"id": 7}}}},
        "trigger": {"email": "ada@example.com"},
        "run": {"id": "run-1", "workflowId": "wf-1", "startedAt": "2026-11-22T10:00:00+00:00"},
        "secrets": {},
    }


async def test_a_lone_expression_keeps_its_type() -> None:
    # Given an environment
    env = make_env()

    # When strings that are exactly one expression are evaluated
    count = await evaluate_template("{{ input.count + 1 }}", env)
    flag = await evaluate_template("  {{input.ok}}\n", env)
    tags = await evaluate_template("{{ input.tags }}", env)
    nothing = await evaluate_template("{{ null }}", env)

    # Then each keeps the value's type
    assert count == 3
    assert flag is True
    assert tags == ["a", "b"]
    assert nothing is None


async def test_mixed_text_renders_to_a_string() -> None:
    # Given a template mixing text and expressions of several types
    text = "Hi {{ input.name }}: {{ input.count }} {{ input.tags }}{{ null }} {{ input.ok }}!"

    # When it is evaluated
    rendered = await evaluate_template(text, make_env())

    # Then strings are written as they are, null as nothing, others as compact JSON
    assert rendered == 'Hi Ada: 2 ["a","b"] true!'


async def test_a_string_without_expressions_is_left_as_it_is() -> None:
    assert await evaluate_template("just {text} }}", make_env()) == "just {text} }}"


async def test_every_variable_of_the_environment_is_reachable() -> None:
    # Given a config reading input, nodes, trigger and run
    compiled = compile_config(
        {
            "input": "{{ input.name }}",
            "node": "{{ nodes.fetch.output.body.id }}",
            "trigger": "{{ trigger.email }}",
            "run": "{{ run.id }} of {{ run.workflowId }}",
        }
    )

    # When it is rendered
    rendered = await render_config(compiled, make_env())

    # Then each expression read its variable
    assert rendered == {
        "input": "Ada",
        "node": 7,
        "trigger": "ada@example.com",
        "run": "run-1 of wf-1",
    }


async def test_only_the_nodes_an_expression_names_are_read() -> None:
    # Given an environment where another node's output is over the data cap
    env = make_env()
    env["nodes"]["big"] = {"output": "x" * 16_000_000}

    # When expressions name the node they read, then the big one is not read
    assert await evaluate_template("{{ nodes.fetch.output.status }}", env) == 200
    assert await evaluate_template("{{ nodes['fetch'].output.body.id + 1 }}", env) == 8

    # But when one may read any node, all of them count
    size = len(orjson.dumps(env["nodes"]["fetch"])) + len(orjson.dumps(env["nodes"]["big"]))
    with pytest.raises(ExpressionError) as caught:
        await evaluate_template("{{ size(nodes) }}", env)
    assert str(caught.value) == (
        f"{{{{ size(nodes) }}}} reads {size:,} bytes of data; the maximum is 16,000,000."
    )


async def test_a_nested_config_is_rendered_and_its_literals_kept() -> None:
    # Given a config with expressions at several depths beside literal values
    data = {
        "url": "https://api.example.com/users/{{ input.name }}",
        "body": {"items": ["{{ input.tags }}", 5, True, None], "n": "{{ input.count * 10 }}"},
        "label": "plain {text}",
        "retry": {"maxAttempts": 3},
    }
    compiled = compile_config(data)

    # When it is rendered twice, against different inputs
    first = await render_config(compiled, make_env())
    second = await render_config(compiled, make_env(name="Grace", count=4))

    # Then both renders follow their own input, and the source config is unchanged
    assert first == {
        "url": "https://api.example.com/users/Ada",
        "body": {"items": [["a", "b"], 5, True, None], "n": 20},
        "label": "plain {text}",
        "retry": {"maxAttempts": 3},
    }
    assert second == {
        "url": "https://api.example.com/users/Grace",
        "body": {"items": [["a", "b"], 5, True, None], "n": 40},
        "label": "plain {text}",
        "retry": {"maxAttempts": 3},
    }
    assert data["url"] == "https://api.example.com/users/{{ input.name }}"


async def test_skipped_top_level_keys_stay_raw() -> None:
    # Given a config whose "cases" a node evaluates itself
    compiled = compile_config(
        {"cases": [{"condition": "{{ input.ok }}"}], "x": "{{ input.count }}"}
    )

    # When it is rendered with "cases" skipped
    rendered = await render_config(compiled, make_env(), skip=("cases",))

    # Then "cases" is the raw value and the rest is rendered
    assert rendered == {"cases": [{"condition": "{{ input.ok }}"}], "x": 2}


async def test_comprehensions_evaluate_in_the_sandbox() -> None:
    # Given expressions with macros (which never run inline)
    env = make_env(items=[{"price": 3}, {"price": 5}])

    # When they are evaluated
    doubled = await evaluate_template("{{ input.items.map(i, i.price * 2) }}", env)
    cheap = await evaluate_template("{{ input.items.filter(i, i.price < 4).size() }}", env)

    # Then their values come back as from an inline evaluation
    assert doubled == [6, 10]
    assert cheap == 1


async def test_cel_values_are_made_json() -> None:
    # Given expressions giving timestamps, durations, bytes, non-string keys and infinity
    env = make_env()

    # When they are evaluated
    stamp = await evaluate_template("{{ timestamp('2026-01-02T03:04:05Z') }}", env)
    duration = await evaluate_template("{{ duration('90s') }}", env)
    data = await evaluate_template("{{ b'ab' }}", env)
    keyed = await evaluate_template("{{ {1: 'one'} }}", env)
    infinite = await evaluate_template("{{ 1.0 / 0.0 }}", env)

    # Then each is the JSON a database can store
    assert stamp == "2026-01-02T03:04:05+00:00"
    assert duration == "90s"
    assert data == "YWI="
    assert keyed == {"1": "one"}
    assert infinite is None


async def test_an_unknown_variable_fails_with_cels_message() -> None:
    with pytest.raises(ExpressionError) as caught:
        await evaluate_template("{{ missing + 1 }}", make_env())
    assert str(caught.value) == (
        "{{ missing + 1 }} failed: Undefined variable or function: 'missing'. Check that the "
        "variable is defined in the context or that the function name is spelled correctly."
    )


async def test_an_unknown_field_fails_naming_the_key() -> None:
    with pytest.raises(ExpressionError) as caught:
        await evaluate_template("{{ input.nope }}", make_env())
    assert str(caught.value) == "{{ input.nope }} failed: no such key 'nope'"


async def test_an_evaluation_error_fails_with_cels_message() -> None:
    with pytest.raises(ExpressionError) as caught:
        await evaluate_template("Total: {{ input.count / 0 }}", make_env())
    assert str(caught.value) == "{{ input.count / 0 }} failed: division by zero in CEL expression"


def test_a_syntax_error_names_the_expression() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_template("Hi {{ input.name + }}")
    assert str(caught.value).startswith(
        "Syntax error in {{ input.name + }}: ERROR: <input>:1:13: Syntax error: mismatched input"
    )


def test_unbalanced_and_empty_braces_are_syntax_errors() -> None:
    with pytest.raises(ExpressionError) as unbalanced:
        compile_template("Hi {{ input.name")
    with pytest.raises(ExpressionError) as empty:
        compile_template("Hi {{ }}")
    assert str(unbalanced.value) == "'{{' at character 3 has no closing '}}'."
    assert str(empty.value) == "Empty expression {{ }}: write an expression between the braces."


def test_compile_config_names_the_field_with_the_syntax_error() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_config({"body": {"items": ["ok", "{{ }}"]}})
    assert str(caught.value) == (
        "body.items.1: Empty expression {{ }}: write an expression between the braces."
    )


def test_syntax_errors_lists_every_bad_string_with_its_path() -> None:
    # Given a config with two bad strings among good ones
    data = {
        "a": "{{ input.name }}",
        "b": ["{{ 1 + }}", "fine", {"c": "x {{ input"}],
        "d": 5,
    }

    # When it is checked
    found = syntax_errors(data)

    # Then each bad string is reported at its path, in document order
    assert [path for path, _ in found] == [("b", "0"), ("b", "2", "c")]
    assert found[0][1].startswith("Syntax error in {{ 1 + }}: ERROR: <input>:1:4:")
    assert found[1][1] == "'{{' at character 2 has no closing '}}'."
    assert syntax_errors({"ok": "{{ input.a }}", "n": [1, None]}) == []


def test_an_expression_over_4000_characters_is_refused() -> None:
    # Given an expression one character too long, and one nested 100,000 deep
    too_long = "1" + "+1" * 2000
    nested = "(" * 100_000 + "1" + ")" * 100_000

    # When they are compiled, then both are refused by length
    with pytest.raises(ExpressionError) as long_error:
        compile_template("{{ " + too_long + " }}")
    with pytest.raises(ExpressionError) as nested_error:
        compile_template("{{" + nested + "}}")
    assert str(long_error.value) == (
        "{{ " + too_long[:80] + "... }} is 4,001 characters long; the maximum is 4,000."
    )
    assert str(nested_error.value) == (
        "{{ " + nested[:80] + "... }} is 200,001 characters long; the maximum is 4,000."
    )


async def test_a_list_literal_up_to_the_length_cap_is_evaluated() -> None:
    # Given a list literal of 3,999 characters
    literal = "[" + ",".join(["1"] * 1999) + "]"

    # When it is evaluated, then it gives the list
    assert await evaluate_template("{{ " + literal + " }}", make_env()) == [1] * 1999


async def test_a_value_over_1_mb_of_json_is_refused() -> None:
    # Given an input string of 600,000 characters
    env = make_env(text="x" * 600_000)

    # When an expression doubles it, then its 1,200,002 bytes of JSON are refused
    with pytest.raises(ExpressionError) as caught:
        await evaluate_template("{{ input.text + input.text }}", env)
    assert str(caught.value) == (
        "{{ input.text + input.text }} gave 1,200,002 bytes of JSON; the maximum is 1,000,000."
    )


async def test_text_over_1_mb_is_refused() -> None:
    env = make_env(text="x" * 600_000)
    with pytest.raises(ExpressionError) as caught:
        await evaluate_template("{{ input.text }} and {{ input.text }}", env)
    assert str(caught.value) == (
        "The text rendered from '{{ input.text }} and {{ input.text }}' is longer than "
        "1,000,000 bytes."
    )


async def test_copies_of_a_big_input_made_in_a_loop_are_refused() -> None:
    # Given a 20,000-character input and a loop that makes 100 copies of it
    env = make_env(text="x" * 20_000)
    expression = f"{{{{ {TEN}.map(a, {TEN}.map(b, input.text)) }}}}"

    # When it is evaluated, then the 2,000,321 bytes of JSON are refused
    with pytest.raises(ExpressionError) as caught:
        await evaluate_template(expression, env)
    assert str(caught.value).endswith(" gave 2,000,321 bytes of JSON; the maximum is 1,000,000.")


async def test_a_runaway_loop_is_stopped_while_the_event_loop_keeps_running() -> None:
    # Given six nested loops over ten items (a million evaluations, and more memory)
    inner = "a + b + c + d + e + f"
    for name in "fedcba":
        inner = f"{TEN}.map({name}, {inner})"
    evaluation = asyncio.create_task(evaluate_template("{{ " + inner + " }}", make_env()))

    # When the event loop is used meanwhile: ten sleeps of 10 ms complete
    for _ in range(10):
        await asyncio.sleep(0.01)
    still_running = not evaluation.done()

    # Then they completed while the evaluation ran, and the evaluation is stopped
    assert still_running is True
    with pytest.raises(ExpressionError) as caught:
        await asyncio.wait_for(evaluation, 10)
    assert (
        str(caught.value)
        == "Evaluating {{ " + inner[:80] + "... }} took longer than 1.0 s and was stopped."
    )


async def test_repeated_concatenation_of_a_big_input_is_stopped() -> None:
    # Given a 500,000-character input concatenated 300 times (75 GB of copying)
    env = make_env(text="x" * 500_000)
    expression = "{{ " + " + ".join(["input.text"] * 300) + " }}"

    # When it is evaluated, then it is stopped (by time or memory, whichever comes first)
    with pytest.raises(ExpressionError) as caught:
        await asyncio.wait_for(evaluate_template(expression, env), 10)
    stopped = "Evaluating {{ " + expression[3:83] + "... }}"
    assert str(caught.value) in {
        f"{stopped} took longer than 1.1 s and was stopped.",
        f"{stopped} used more than 1024 MB and was stopped.",
    }


async def test_the_sandbox_recovers_after_stopping_an_expression() -> None:
    # Given an expression that was stopped
    runaway = "{{ " + f"{TEN}.map(a, {TEN}.map(b, {TEN}.map(c, {TEN}.map(d, {TEN}.map(e, "
    runaway += f"{TEN}.map(f, {TEN}.map(g, a))))))) }}}}"
    with pytest.raises(ExpressionError):
        await asyncio.wait_for(evaluate_template(runaway, make_env()), 10)

    # When another loop is evaluated, then it gets its value
    assert await evaluate_template("{{ [1, 2].map(x, x + input.count) }}", make_env()) == [3, 4]


def test_to_text_writes_values_as_text() -> None:
    assert [to_text(value) for value in ("a", None, 1, 1.5, True, [1, "b"], {"k": None})] == [
        "a",
        "",
        "1",
        "1.5",
        "true",
        '[1,"b"]',
        '{"k":null}',
    ]
