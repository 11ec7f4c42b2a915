"""The ``trigger`` node: where a run starts; its output is the run input.

The run input is what started the run: the manual input, a webhook's body or the schedule's
time. An optional JSON Schema (draft 2020-12) checks it before anything else runs. The
schema's own references are resolved within it; nothing is fetched.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.exceptions import best_match
from pydantic import Field, field_validator

from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeFailure,
    NodeOutcome,
    NodeType,
    register,
)


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


async def run(ctx: NodeContext, config: TriggerConfig, input: Any) -> NodeOutcome:
    """Pass the run input on, once it matches the input schema if there is one."""
    if config.input_schema is not None:
        error = best_match(Draft202012Validator(config.input_schema).iter_errors(input))
        if error is not None:
            raise NodeFailure(
                f"The run input does not match the trigger's input schema at "
                f"{error.json_path}: {error.message}"
            )
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
