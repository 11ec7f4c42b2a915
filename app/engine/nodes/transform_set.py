"""The ``transform.set`` node: build an object from named values, usually expressions."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.engine.nodes.base import NodeConfig, NodeContext, NodeOutcome, NodeType, register


class TransformSetConfig(NodeConfig):
    """The configuration of a ``transform.set`` node."""

    fields: dict[str, Any] = Field(
        description="The object to build: each name maps to a value, usually an expression "
        "such as {{ input.email }}; the values are rendered before the node runs.",
    )


async def run(ctx: NodeContext, config: TransformSetConfig, input: Any) -> NodeOutcome:
    """Output the rendered fields as one object."""
    return NodeOutcome(dict(config.fields))


NODE_TYPE = register(
    NodeType(
        type="transform.set",
        category="Data",
        label="Set fields",
        description="Build an object from named values, usually expressions over the input "
        "and earlier nodes' outputs.",
        config_model=TransformSetConfig,
        run=run,
        pure=True,
    )
)
