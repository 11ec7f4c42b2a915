"""Run mutations: execute, cancel, retry."""

from __future__ import annotations

import strawberry

from app.services import runs as run_service
from schema.context import Info, Outcome
from schema.errors import UserError
from schema.ids import decode_id
from schema.runs.inputs import RunRetryInput, WorkflowExecuteInput
from schema.runs.types import Run


@strawberry.type(description="The run a mutation created or changed, or why not.")
class RunPayload:
    run: Run | None = strawberry.field(description="Null when there are user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


def run_payload(outcome: Outcome) -> RunPayload:
    """The payload of a run mutation's outcome."""
    run = Run.from_model(outcome.value) if outcome.value is not None else None
    return RunPayload(run=run, user_errors=outcome.user_errors)


@strawberry.type
class RunMutations:
    @strawberry.mutation(description="Queue a run; returns once the run is durable.")
    async def workflow_execute(self, info: Info, input: WorkflowExecuteInput) -> RunPayload:
        ctx = info.context
        workflow_id = decode_id("Workflow", input.workflow_id)
        return run_payload(
            await ctx.transact(
                lambda session, principal: run_service.execute_workflow(
                    session,
                    principal=principal,
                    queue=ctx.runtime.queue,
                    workflow_id=workflow_id,
                    input=input.input,
                    version=input.version,
                    idempotency_key=input.idempotency_key,
                    policy=ctx.runtime.graph_policy,
                    max_input_bytes=ctx.runtime.settings.max_run_input_bytes,
                )
            )
        )

    @strawberry.mutation(description="Cancel a queued or running run.")
    async def run_cancel(self, info: Info, id: strawberry.ID) -> RunPayload:
        ctx = info.context
        run_id = decode_id("Run", id)
        return run_payload(
            await ctx.transact(
                lambda session, principal: run_service.cancel_run(
                    session, principal=principal, queue=ctx.runtime.queue, run_id=run_id
                )
            )
        )

    @strawberry.mutation(description="A new run of the same version and input (trigger RETRY).")
    async def run_retry(self, info: Info, input: RunRetryInput) -> RunPayload:
        ctx = info.context
        run_id = decode_id("Run", input.run_id)
        return run_payload(
            await ctx.transact(
                lambda session, principal: run_service.retry_run(
                    session,
                    principal=principal,
                    queue=ctx.runtime.queue,
                    run_id=run_id,
                    from_failed_step=input.from_failed_step,
                )
            )
        )
