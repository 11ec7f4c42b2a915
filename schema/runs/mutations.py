"""Run mutations: execute, cancel, retry."""

from __future__ import annotations

import strawberry

from app import models
from app.services import runs as run_service
from schema.context import Info
from schema.errors import UserError
from schema.ids import decode_id
from schema.payloads import mutate
from schema.runs.inputs import RunRetryInput, WorkflowExecuteInput
from schema.runs.types import Run


@strawberry.type(description="The run a mutation created or changed, or why not.")
class RunPayload:
    run: Run | None = strawberry.field(description="Null when there are user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


def present_run(run: models.Run) -> dict[str, Run]:
    """The payload fields of a changed run."""
    return {"run": Run.from_model(run)}


@strawberry.type
class RunMutations:
    @strawberry.mutation(description="Queue a run; returns once the run is durable.")
    async def workflow_execute(self, info: Info, input: WorkflowExecuteInput) -> RunPayload:
        runtime = info.context.runtime
        workflow_id = decode_id("Workflow", input.workflow_id)
        return await mutate(
            info,
            RunPayload,
            lambda session, principal: run_service.execute_workflow(
                session,
                principal=principal,
                queue=runtime.queue,
                workflow_id=workflow_id,
                input=input.input,
                version=input.version,
                idempotency_key=input.idempotency_key,
                policy=runtime.graph_policy,
                max_input_bytes=runtime.settings.max_run_input_bytes,
            ),
            present_run,
        )

    @strawberry.mutation(description="Cancel a queued or running run.")
    async def run_cancel(self, info: Info, id: strawberry.ID) -> RunPayload:
        run_id = decode_id("Run", id)
        return await mutate(
            info,
            RunPayload,
            lambda session, principal: run_service.cancel_run(
                session, principal=principal, queue=info.context.runtime.queue, run_id=run_id
            ),
            present_run,
        )

    @strawberry.mutation(description="A new run of the same version and input (trigger RETRY).")
    async def run_retry(self, info: Info, input: RunRetryInput) -> RunPayload:
        run_id = decode_id("Run", input.run_id)
        return await mutate(
            info,
            RunPayload,
            lambda session, principal: run_service.retry_run(
                session,
                principal=principal,
                queue=info.context.runtime.queue,
                run_id=run_id,
                from_failed_step=input.from_failed_step,
            ),
            present_run,
        )
