"""The ``text.format`` node: render a text template, optionally read as JSON."""

from __future__ import annotations

from typing import Any, Literal

import orjson
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


class TextFormatConfig(NodeConfig):
    """The configuration of a ``text.format`` node."""

    template: str = Field(
        max_length=1_000_000,
        description="The text, with {{ expressions }} rendered in place, e.g. "
        "'Hello {{ input.name }}'.",
    )
    format: Literal["text", "json"] = Field(
        "text", description="text: output the text; json: output the JSON value the text holds."
    )

    @field_validator("template", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # A template that is one expression renders to that value's type: write it as text.
        return value if isinstance(value, str) else to_text(value)


async def run(ctx: NodeContext, config: TextFormatConfig, input: Any) -> NodeOutcome:
    """Output the rendered text, or the JSON value it holds."""
    if config.format == "text":
        return NodeOutcome(config.template)
    try:
        return NodeOutcome(orjson.loads(config.template))
    except orjson.JSONDecodeError as exc:
        raise NodeFailure(f"The formatted text is not valid JSON: {exc}.") from None


NODE_TYPE = register(
    NodeType(
        type="text.format",
        category="Data",
        label="Format text",
        description="Render a text template with expressions; output the text, or parse it "
        "as JSON.",
        config_model=TextFormatConfig,
        run=run,
        pure=True,
    )
)
