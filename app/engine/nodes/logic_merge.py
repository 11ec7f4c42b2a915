"""The ``logic.merge`` node: wait for every active input and combine them.

The executor runs it once all incoming edges are settled and passes the outputs of the
active parents, in the graph's order of those parents, in ``ctx.extras["parents"]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.engine.nodes.base import NodeConfig, NodeContext, NodeOutcome, NodeType, register


class LogicMergeConfig(NodeConfig):
    """The configuration of a ``logic.merge`` node."""

    mode: Literal["object", "list"] = Field(
        "object",
        description="object: one object keyed by the parent node's id; list: the parents' "
        "outputs in order.",
    )


async def run(ctx: NodeContext, config: LogicMergeConfig, input: Any) -> NodeOutcome:
    """Output the active parents' outputs, keyed by parent id or as a list."""
    parents: dict[str, Any] = ctx.extras["parents"]
    return NodeOutcome(dict(parents) if config.mode == "object" else list(parents.values()))


NODE_TYPE = register(
    NodeType(
        type="logic.merge",
        category="Logic",
        label="Merge",
        description="Wait for every active incoming branch, then output their results "
        "together: an object keyed by node id, or a list.",
        config_model=LogicMergeConfig,
        run=run,
        pure=True,
    )
)
