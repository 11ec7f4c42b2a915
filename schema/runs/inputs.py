"""Inputs of the run mutations."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from app.services.run_search import RunFilter as RunFilterModel
from schema.ids import decode_id
from schema.runs.types import RunStatus, RunTrigger


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


@strawberry.input(description="Which runs to list; every given condition must hold.")
class RunFilter:
    status: RunStatus | None = strawberry.field(
        default=None, description="Only runs in this status."
    )
    workflow_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only runs of this workflow (of this workspace)."
    )
    trigger: RunTrigger | None = strawberry.field(
        default=None, description="Only runs started this way."
    )
    from_: datetime | None = strawberry.field(
        default=None, name="from", description="Queued at or after this time (with a time zone)."
    )
    to: datetime | None = strawberry.field(
        default=None, description="Queued before this time (with a time zone)."
    )


def run_filter(given: RunFilter | None) -> RunFilterModel:
    """The service's filter; another workspace's workflow id reads as NOT_FOUND."""
    if given is None:
        return RunFilterModel()
    return RunFilterModel(
        status=given.status,
        workflow_id=decode_id("Workflow", given.workflow_id) if given.workflow_id else None,
        trigger=given.trigger,
        since=given.from_,
        until=given.to,
    )
