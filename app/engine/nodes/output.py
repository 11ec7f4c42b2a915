"""The ``output`` node: set the run's output."""

from __future__ import annotations

from typing import Any

from pydantic import Field, JsonValue

from app.engine.nodes.base import NodeConfig, NodeContext, NodeOutcome, NodeType, register


class OutputConfig(NodeConfig):
    """The configuration of an ``output`` node."""

    value: JsonValue = Field(
        description="The run's output, usually an expression such as {{ input }} or "
        "{{ nodes.summary.output.text }}.",
    )


async def run(ctx: NodeContext, config: OutputConfig, input: Any) -> NodeOutcome:
    """Output the rendered value, which becomes the run's output."""
    return NodeOutcome(config.value)


NODE_TYPE = register(
    NodeType(
        type="output",
        category="Flow",
        label="Output",
        description="Set the run's output (what a webhook set to wait for the run returns).",
        config_model=OutputConfig,
        run=run,
        pure=True,
        outputs=(),
    )
)
