"""Schedule mutations: set a workflow's schedule."""

from __future__ import annotations

import strawberry

from app.services import schedules as schedule_service
from schema.context import Info
from schema.errors import UserError
from schema.ids import decode_id
from schema.payloads import mutate
from schema.schedules.inputs import WorkflowScheduleUpdateInput
from schema.workflows.types import Workflow


@strawberry.type(description="The workflow whose schedule changed, or why not.")
class WorkflowScheduleUpdatePayload:
    workflow: Workflow | None = strawberry.field(description="Null when there are user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type
class ScheduleMutations:
    @strawberry.mutation(
        description="Set a workflow's cron schedule and time zone, or turn it off (editors)."
    )
    async def workflow_schedule_update(
        self, info: Info, input: WorkflowScheduleUpdateInput
    ) -> WorkflowScheduleUpdatePayload:
        workflow_id = decode_id("Workflow", input.workflow_id)
        return await mutate(
            info,
            WorkflowScheduleUpdatePayload,
            lambda session, principal: schedule_service.update_schedule(
                session,
                principal=principal,
                workflow_id=workflow_id,
                cron=input.cron,
                timezone=input.timezone,
                enabled=input.enabled,
                overlap=input.overlap,
            ),
            lambda workflow: {"workflow": Workflow.from_model(workflow)},
        )
