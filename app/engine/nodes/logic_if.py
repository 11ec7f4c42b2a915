"""The ``logic.if`` node: route the input to ``true`` or ``false``; the other branch is skipped."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import Field, JsonValue

from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeFailure,
    NodeOutcome,
    NodeType,
    register,
)

_SHOWN_CHARS = 80


class LogicIfConfig(NodeConfig):
    """The configuration of a ``logic.if`` node."""

    condition: JsonValue = Field(
        description="An expression that gives true or false, e.g. {{ input.total > 100 }}.",
    )


def require_bool(value: object, what: str) -> bool:
    """The value when it is true or false; else a NodeFailure showing what it is, as JSON."""
    if isinstance(value, bool):
        return value
    shown = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    if len(shown) > _SHOWN_CHARS:
        shown = shown[:_SHOWN_CHARS] + "..."
    raise NodeFailure(f"{what} must be true or false, got {shown}.")


async def run(ctx: NodeContext, config: LogicIfConfig, input: Any) -> NodeOutcome:
    """Pass the input on through the handle the condition names."""
    handle = "true" if require_bool(config.condition, "The condition") else "false"
    return NodeOutcome(input, frozenset({handle}))


NODE_TYPE = register(
    NodeType(
        type="logic.if",
        category="Logic",
        label="If",
        description="Send the input on through 'true' or 'false' depending on a condition; "
        "the branch not taken is skipped.",
        config_model=LogicIfConfig,
        run=run,
        pure=True,
        outputs=("true", "false"),
    )
)
