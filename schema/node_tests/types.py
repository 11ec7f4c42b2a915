"""GraphQL type of a node test's outcome."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from app.engine.node_tests import NodeTestResult as NodeTestResultModel
from schema.runs.types import StepStatus


@strawberry.type(description="How a node's one test attempt ended; no run was recorded.")
class NodeTestResult:
    status: StepStatus = strawberry.field(description="SUCCEEDED or FAILED.")
    output: JSON | None = strawberry.field(
        description="What the node produced, redacted like a step's output."
    )
    error: str | None = strawberry.field(description="Why it failed, redacted like a step's.")
    duration_ms: int = strawberry.field(description="How long the attempt took.")
    active_handles: list[str] | None = strawberry.field(
        description="The output handles that would carry on (null: all of them)."
    )

    @classmethod
    def from_model(cls, result: NodeTestResultModel) -> NodeTestResult:
        """The type of an engine result."""
        return cls(
            status=result.status,
            output=result.output,
            error=result.error,
            duration_ms=result.duration_ms,
            active_handles=result.active_handles,
        )
