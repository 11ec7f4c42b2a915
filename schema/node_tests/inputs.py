"""Input of nodeTest."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON


@strawberry.input(description="Which node to test, and with what input.")
class NodeTestInput:
    workflow_id: strawberry.ID = strawberry.field(description="The workflow.")
    node_id: str = strawberry.field(description="The node's id in the graph.")
    version: int | None = strawberry.field(
        default=None, description="The version whose node to run; the newest when null."
    )
    input: JSON | None = strawberry.field(
        default=strawberry.UNSET,
        description="The node's input (for a trigger: the run input). Give this or fromRunId; "
        "with neither, the input is null.",
    )
    from_run_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A run of this workflow: the node gets the input it received there, and "
        "expressions see that run's trigger and node outputs (as stored: redacted).",
    )
