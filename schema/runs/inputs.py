"""Inputs of the run mutations."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON


@strawberry.input(description="Run a workflow.")
class WorkflowExecuteInput:
    workflow_id: strawberry.ID = strawberry.field(description="The workflow.")
    input: JSON | None = strawberry.field(default=None, description="The run's input.")
    version: int | None = strawberry.field(
        default=None, description="The version to run; the current one when null."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="The same key returns the same run; with another input it is "
        "IDEMPOTENCY_CONFLICT.",
    )


@strawberry.input(description="Run a finished run again.")
class RunRetryInput:
    run_id: strawberry.ID = strawberry.field(description="The run to retry.")
    from_failed_step: bool = strawberry.field(
        default=False,
        description="Keep the outputs of the steps that succeeded; run only the rest.",
    )
