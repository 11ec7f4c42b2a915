"""The ``trigger`` node: where a run starts; its output is the run input.

The run input is what started the run: the manual input, a webhook's body or the schedule's
time. An optional JSON Schema (draft 2020-12) checks it before anything is queued (the
services check every run's input with :func:`input_checks` and :func:`input_problems`) and
again when the node runs. The schema's own references are resolved within it; nothing is
fetched. A check gets a time budget: jsonschema is pure Python (a schema with a 20-way
``anyOf`` over a 2,000-item array takes seconds), so a check that overruns it stops and
says so instead of holding a process.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from jsonschema import Draft202012Validator, SchemaError, ValidationError, validators
from jsonschema.protocols import Validator
from pydantic import Field, field_validator
from referencing.exceptions import Unresolvable

from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeFailure,
    NodeOutcome,
    NodeType,
    register,
)

#: How long one check of an input against a schema may take.
INPUT_CHECK_SECONDS = 1.0
#: A check reports at most this many problems.
MAX_INPUT_PROBLEMS = 10
#: Inputs over this many bytes of JSON are checked in the input-check threads, not on the
#: event loop (a large input can take a check up to its budget).
INLINE_CHECK_BYTES = 4096
# Their own small pool: checks that wait for a thread delay only other large checks, never
# the default executor's work (DNS lookups of http.request, say).
_CHECK_THREADS = ThreadPoolExecutor(2, thread_name_prefix="input-check")
T = TypeVar("T")
_REASON_CHARS = 300

_deadline: ContextVar[float] = ContextVar("input_check_deadline", default=float("inf"))


class _OverBudget(Exception):
    """The check ran past its deadline."""


class InputSchemaUnusable(Exception):
    """The schema cannot be applied: a reference it cannot resolve, or one without end."""


class TriggerConfig(NodeConfig):
    """The configuration of a ``trigger`` node."""

    input_schema: dict[str, Any] | None = Field(
        None,
        description="A JSON Schema (draft 2020-12) the run input must match; "
        "without one, any input is accepted.",
    )

    @field_validator("input_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return schema


Keyword = Callable[[Any, Any, Any, Any], Iterator[ValidationError] | None]


def _budgeted(keyword: Keyword) -> Keyword:
    """A keyword of the validator that first checks the running check's deadline."""

    def checked(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if time.monotonic() > _deadline.get():
            raise _OverBudget
        return keyword(validator, value, instance, schema)

    return checked


_BudgetedValidator = validators.extend(
    Draft202012Validator,
    {name: _budgeted(keyword) for name, keyword in Draft202012Validator.VALIDATORS.items()},
)


@dataclass(frozen=True, slots=True)
class InputProblem:
    """Where an input does not match its schema, and why."""

    path: tuple[str, ...]  # keys and (as strings) list positions into the input
    json_path: str  # the same as a JSONPath: $.items[0].quantity
    reason: str

    @property
    def message(self) -> str:
        """The problem as a sentence."""
        return f"The run input does not match the trigger's input schema at {self.json_path}: " + (
            self.reason
        )


@dataclass(frozen=True, slots=True)
class InputCheck:
    """A trigger's input schema, compiled once per version."""

    node_id: str
    validator: Validator


def input_checks(graph: Any) -> tuple[InputCheck, ...]:
    """The compiled input schema of each trigger of a runnable graph that has one."""
    checks = []
    for node in graph.get("nodes", []):
        schema = (node.get("data") or {}).get("inputSchema")
        if node.get("type") == "trigger" and isinstance(schema, dict):
            checks.append(InputCheck(node_id=node["id"], validator=_BudgetedValidator(schema)))
    return tuple(checks)


def _position(error: ValidationError) -> tuple[list[tuple[int, int, str]], str]:
    """Sorts problems in document order: by path (list positions as numbers), then reason."""
    path = [(0, part, "") if isinstance(part, int) else (1, 0, str(part)) for part in error.path]
    return path, str(error.message)


def _reason(error: ValidationError) -> str:
    # jsonschema quotes the offending value: a 1 MiB string would make a 1 MiB message.
    text: str = error.message
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "…"


def input_problems(
    validator: Validator, value: Any, *, seconds: float = INPUT_CHECK_SECONDS
) -> list[InputProblem]:
    """How ``value`` does not match the schema (at most MAX_INPUT_PROBLEMS); [] when it does.

    InputSchemaUnusable when the schema cannot be applied. Over ``seconds``, one problem says
    the input could not be checked in time.
    """
    token = _deadline.set(time.monotonic() + seconds)
    try:
        found = itertools.islice(validator.iter_errors(value), MAX_INPUT_PROBLEMS)
        errors = sorted(found, key=_position)
    except _OverBudget:
        reason = f"checking it took over {seconds:g} s; send a smaller input"
        return [InputProblem(path=(), json_path="$", reason=reason)]
    except Unresolvable as error:
        ref = getattr(error, "ref", None) or str(error)
        raise InputSchemaUnusable(f"it refers to {ref!r}, which it does not define") from None
    except RecursionError:
        raise InputSchemaUnusable("it refers to itself without end") from None
    finally:
        _deadline.reset(token)
    return [
        InputProblem(
            path=tuple(str(part) for part in error.absolute_path),
            json_path=error.json_path,
            reason=_reason(error),
        )
        for error in errors
    ]


async def off_the_loop(size: int, check: Callable[[], T]) -> T:
    """``check()`` here when the input is small (``size`` bytes of JSON), else in a thread."""
    if size <= INLINE_CHECK_BYTES:
        return check()
    return await asyncio.get_running_loop().run_in_executor(_CHECK_THREADS, check)


async def run(ctx: NodeContext, config: TriggerConfig, input: Any) -> NodeOutcome:
    """Pass the run input on, once it matches the input schema if there is one."""
    if config.input_schema is not None:
        validator = _BudgetedValidator(config.input_schema)
        try:
            size = len(orjson.dumps(input))
        except TypeError:  # not plain JSON (ints past 64 bits): take it as large
            size = INLINE_CHECK_BYTES + 1
        try:
            problems = await off_the_loop(size, lambda: input_problems(validator, input))
        except InputSchemaUnusable as error:
            raise NodeFailure(f"The trigger's input schema cannot be applied: {error}") from None
        if problems:
            raise NodeFailure(problems[0].message)
    return NodeOutcome(input)


NODE_TYPE = register(
    NodeType(
        type="trigger",
        category="Triggers",
        label="Trigger",
        description="Where the workflow starts: passes on the run input (manual input, webhook "
        "body or schedule time), optionally checked against a JSON Schema.",
        config_model=TriggerConfig,
        run=run,
        pure=True,
        inputs=(),
    )
)
