"""The ``flow.fail`` node: end the run as FAILED with a message."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from app.engine.expressions import to_text
from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeFailure,
    NodeOutcome,
    NodeType,
    register,
)

DEFAULT_MESSAGE = "The run was stopped by a Fail node."


class FlowFailConfig(NodeConfig):
    """The configuration of a ``flow.fail`` node."""

    message: str = Field(
        DEFAULT_MESSAGE,
        max_length=10_000,
        description="Why the run failed, e.g. 'Order {{ input.id }} has no customer'.",
    )

    @field_validator("message", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # A message that is one expression renders to that value's type: write it as text.
        return value if isinstance(value, str) else to_text(value)


async def run(ctx: NodeContext, config: FlowFailConfig, input: Any) -> NodeOutcome:
    """Fail the step, and so the run, with the message."""
    raise NodeFailure(config.message or DEFAULT_MESSAGE)


NODE_TYPE = register(
    NodeType(
        type="flow.fail",
        category="Flow",
        label="Fail",
        description="End the run as failed, with a message.",
        config_model=FlowFailConfig,
        run=run,
        pure=True,
        outputs=(),
    )
)
