"""Cloning a template into a new workflow."""

from __future__ import annotations

import strawberry

from app.errors import NotFound
from app.services import templates as template_service
from app.services.templates import TemplateSource
from schema.context import Info
from schema.ids import decode_id, decode_key
from schema.payloads import mutate
from schema.templates.inputs import TemplateCloneInput
from schema.workflows.mutations import WorkflowPayload, present_workflow


def _template_ref(template_id: str) -> tuple[TemplateSource, str]:
    try:
        return TemplateSource.BUILTIN, decode_key("Template", template_id)
    except NotFound:
        return TemplateSource.WORKSPACE, str(decode_id("Workflow", template_id, "Template"))


@strawberry.type
class TemplateMutations:
    @strawberry.mutation(description="A new workflow at version 1 with a template's graph.")
    async def template_clone(self, info: Info, input: TemplateCloneInput) -> WorkflowPayload:
        source, key = _template_ref(input.template_id)
        workspace_id = decode_id("Workspace", input.workspace_id)
        return await mutate(
            info,
            WorkflowPayload,
            lambda session, principal: template_service.clone_template(
                session,
                principal=principal,
                source=source,
                key=key,
                workspace_id=workspace_id,
                name=input.name,
                policy=info.context.runtime.graph_policy,
            ),
            present_workflow(info),
        )
