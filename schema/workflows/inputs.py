"""Inputs of the workflow mutations."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON


@strawberry.input(description="A new workflow.")
class WorkflowCreateInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace to create it in.")
    name: str = strawberry.field(description="Unique in the workspace, case-insensitive.")
    description: str | None = strawberry.field(default=None, description="Free text.")
    graph: JSON | None = strawberry.field(
        default=None, description='Initial graph; default {"nodes": [], "edges": []}.'
    )


@strawberry.input(description="A save: the next version of a workflow.")
class WorkflowSaveInput:
    workflow_id: strawberry.ID = strawberry.field(description="The workflow.")
    graph: JSON = strawberry.field(description="React Flow toObject(): nodes, edges, viewport.")
    base_version: int = strawberry.field(
        description="The version the editor started from; VERSION_CONFLICT when it is stale."
    )
    message: str | None = strawberry.field(default=None, description="What changed.")
    name: str | None = strawberry.field(default=None, description="A new name, if renamed.")
    description: str | None = strawberry.field(default=None, description="A new description.")


@strawberry.input(description="Copy an old version into a new one.")
class WorkflowRollbackInput:
    workflow_id: strawberry.ID = strawberry.field(description="The workflow.")
    to_version: int = strawberry.field(description="The version whose graph to restore.")
    base_version: int | None = strawberry.field(
        default=None, description="When given, VERSION_CONFLICT unless it is still current."
    )


@strawberry.input(description="Offer a workflow as a workspace template, or stop offering it.")
class WorkflowSetTemplateInput:
    workflow_id: strawberry.ID = strawberry.field(description="The workflow.")
    is_template: bool = strawberry.field(description="Whether it is offered as a template.")
    category: str | None = strawberry.field(default=None, description="Gallery category.")


@strawberry.input(description="Make a version the one schedules and webhooks run.")
class WorkflowPublishInput:
    workflow_id: strawberry.ID = strawberry.field(description="The workflow.")
    version: int = strawberry.field(
        description="The version to publish; it must run cleanly (no diagnostics)."
    )
    base_version: int | None = strawberry.field(
        default=None,
        description="The version you saw published (0: none was); when given, VERSION_CONFLICT "
        "unless it is still the published one, so two racing publishes make one winner.",
    )
