"""Workflow mutations: create, save, rollback, delete, set template, publish, unpublish."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import strawberry

from app import models
from app.services import publishing as publishing_service
from app.services import workflows as workflow_service
from schema.context import Info
from schema.errors import UserError
from schema.ids import decode_id, encode_id
from schema.payloads import mutate
from schema.workflows.inputs import (
    WorkflowCreateInput,
    WorkflowPublishInput,
    WorkflowRollbackInput,
    WorkflowSaveInput,
    WorkflowSetTemplateInput,
)
from schema.workflows.types import Workflow


@strawberry.type(description="The workflow a mutation created or changed, or why not.")
class WorkflowPayload:
    workflow: Workflow | None = strawberry.field(description="Null when there are user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type(description="The id of the deleted workflow, or why not.")
class WorkflowDeletePayload:
    deleted_id: strawberry.ID | None = strawberry.field(description="The id it had.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


def present_workflow(
    info: Info,
) -> Callable[[models.Workflow | tuple[models.Workflow, models.WorkflowVersion]], dict[str, Any]]:
    """The payload fields of a changed workflow; a new version is primed for its readers."""

    def present(
        value: models.Workflow | tuple[models.Workflow, models.WorkflowVersion],
    ) -> dict[str, Any]:
        workflow, version = value if isinstance(value, tuple) else (value, None)
        if version is not None:
            loaders = info.context.loaders
            loaders.graph_text_by_version_id.prime(version.id, orjson.dumps(version.graph).decode())
        return {"workflow": Workflow.from_model(workflow, version)}

    return present


@strawberry.type
class WorkflowMutations:
    @strawberry.mutation(description="A new workflow at version 1 (an empty canvas by default).")
    async def workflow_create(self, info: Info, input: WorkflowCreateInput) -> WorkflowPayload:
        workspace_id = decode_id("Workspace", input.workspace_id)
        return await mutate(
            info,
            WorkflowPayload,
            lambda session, principal: workflow_service.create_workflow(
                session,
                principal=principal,
                workspace_id=workspace_id,
                name=input.name,
                description=input.description,
                graph=input.graph,
                policy=info.context.runtime.graph_policy,
            ),
            present_workflow(info),
        )

    @strawberry.mutation(
        description="Save the graph as the next version (baseVersion must be current)."
    )
    async def workflow_save(self, info: Info, input: WorkflowSaveInput) -> WorkflowPayload:
        workflow_id = decode_id("Workflow", input.workflow_id)
        return await mutate(
            info,
            WorkflowPayload,
            lambda session, principal: workflow_service.save_workflow(
                session,
                principal=principal,
                workflow_id=workflow_id,
                graph=input.graph,
                base_version=input.base_version,
                message=input.message,
                name=input.name,
                description=input.description,
                policy=info.context.runtime.graph_policy,
            ),
            present_workflow(info),
        )

    @strawberry.mutation(description="A new version whose graph equals an older one.")
    async def workflow_rollback(self, info: Info, input: WorkflowRollbackInput) -> WorkflowPayload:
        workflow_id = decode_id("Workflow", input.workflow_id)
        return await mutate(
            info,
            WorkflowPayload,
            lambda session, principal: workflow_service.rollback_workflow(
                session,
                principal=principal,
                workflow_id=workflow_id,
                to_version=input.to_version,
                base_version=input.base_version,
                policy=info.context.runtime.graph_policy,
            ),
            present_workflow(info),
        )

    @strawberry.mutation(description="Delete a workflow and its history (owners only).")
    async def workflow_delete(self, info: Info, id: strawberry.ID) -> WorkflowDeletePayload:
        workflow_id = decode_id("Workflow", id)
        return await mutate(
            info,
            WorkflowDeletePayload,
            lambda session, principal: workflow_service.delete_workflow(
                session, principal=principal, workflow_id=workflow_id
            ),
            lambda deleted: {"deleted_id": strawberry.ID(encode_id("Workflow", deleted))},
        )

    @strawberry.mutation(description="Offer a workflow as a workspace template, or stop.")
    async def workflow_set_template(
        self, info: Info, input: WorkflowSetTemplateInput
    ) -> WorkflowPayload:
        workflow_id = decode_id("Workflow", input.workflow_id)
        return await mutate(
            info,
            WorkflowPayload,
            lambda session, principal: workflow_service.set_template(
                session,
                principal=principal,
                workflow_id=workflow_id,
                is_template=input.is_template,
                category=input.category,
            ),
            present_workflow(info),
        )

    @strawberry.mutation(
        description="Publish a version: schedules and webhooks run it from now on (editors)."
    )
    async def workflow_publish(self, info: Info, input: WorkflowPublishInput) -> WorkflowPayload:
        workflow_id = decode_id("Workflow", input.workflow_id)
        return await mutate(
            info,
            WorkflowPayload,
            lambda session, principal: publishing_service.publish_workflow(
                session,
                principal=principal,
                workflow_id=workflow_id,
                version=input.version,
                base_version=input.base_version,
                policy=info.context.runtime.graph_policy,
            ),
            present_workflow(info),
        )

    @strawberry.mutation(
        description="Take back the published version: schedules skip their fires and webhooks "
        "answer 409 WORKFLOW_NOT_PUBLISHED until another is published (editors)."
    )
    async def workflow_unpublish(self, info: Info, id: strawberry.ID) -> WorkflowPayload:
        workflow_id = decode_id("Workflow", id)
        return await mutate(
            info,
            WorkflowPayload,
            lambda session, principal: publishing_service.unpublish_workflow(
                session, principal=principal, workflow_id=workflow_id
            ),
            present_workflow(info),
        )
