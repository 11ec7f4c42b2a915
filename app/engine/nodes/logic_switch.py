"""The ``logic.switch`` node: route the input to the first case whose condition holds.

Conditions are evaluated lazily, in order, so a later case's expression never runs (nor
fails) once an earlier one matched. The executor leaves ``cases`` unrendered and puts the
expression environment in ``ctx.extras["env"]``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from app.engine.expressions import ExpressionError, evaluate_template
from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeFailure,
    NodeOutcome,
    NodeType,
    register,
)
from app.engine.nodes.logic_if import require_bool

DEFAULT_HANDLE = "default"


class SwitchCase(BaseModel):
    """One case: its output handle and the condition that selects it."""

    model_config = ConfigDict(extra="ignore")

    handle: str = Field(
        min_length=1, max_length=100, description="The output handle this case sends to."
    )
    condition: JsonValue = Field(
        description="An expression that gives true or false, e.g. {{ input.priority == 'high' }}."
    )


class LogicSwitchConfig(NodeConfig):
    """The configuration of a ``logic.switch`` node."""

    cases: list[SwitchCase] = Field(
        min_length=1,
        max_length=100,
        description="The cases, tried in order; the first whose condition is true wins, and "
        "when none is, the input goes to 'default'.",
    )

    @field_validator("cases")
    @classmethod
    def _distinct_handles(cls, cases: list[SwitchCase]) -> list[SwitchCase]:
        seen: set[str] = set()
        for case in cases:
            if case.handle == DEFAULT_HANDLE or case.handle in seen:
                why = "is reserved" if case.handle == DEFAULT_HANDLE else "is used twice"
                raise ValueError(f"the case handle {case.handle!r} {why}")
            seen.add(case.handle)
        return cases


def output_handles(data: dict[str, Any]) -> tuple[str, ...]:
    """The output handles of a switch with this (raw, possibly malformed) config."""
    cases = data.get("cases")
    handles = [
        case["handle"]
        for case in (cases if isinstance(cases, list) else [])
        if isinstance(case, dict) and isinstance(case.get("handle"), str) and case["handle"]
    ]
    return (*dict.fromkeys(handles), DEFAULT_HANDLE)


async def run(ctx: NodeContext, config: LogicSwitchConfig, input: Any) -> NodeOutcome:
    """Pass the input on through the first matching case's handle, or ``default``."""
    env: dict[str, Any] = ctx.extras["env"]
    for case in config.cases:
        what = f"The condition of case {case.handle!r}"
        try:
            value: object = case.condition
            if isinstance(value, str):
                value = await evaluate_template(value, env)
        except ExpressionError as exc:
            raise NodeFailure(f"{what}: {exc}") from None
        if require_bool(value, what):
            return NodeOutcome(input, frozenset({case.handle}))
    return NodeOutcome(input, frozenset({DEFAULT_HANDLE}))


NODE_TYPE = register(
    NodeType(
        type="logic.switch",
        category="Logic",
        label="Switch",
        description="Send the input on through the first case whose condition is true, or "
        "through 'default'; the other branches are skipped.",
        config_model=LogicSwitchConfig,
        run=run,
        pure=True,
        outputs=(DEFAULT_HANDLE,),
        dynamic_outputs=output_handles,
        lazy_fields=("cases",),
    )
)
