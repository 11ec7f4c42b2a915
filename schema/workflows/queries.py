"""Workflow queries: one workflow, and graph validation without saving."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from app.services import reads
from app.services.graphs import check_graph
from schema.context import Info
from schema.ids import decode_id
from schema.selection import selected_names
from schema.workflows.types import (
    Diagnostic,
    Workflow,
    current_version_columns,
    workflow_columns,
)


@strawberry.type
class WorkflowQueries:
    @strawberry.field(description="A workflow of one of your workspaces.")
    async def workflow(self, info: Info, id: strawberry.ID) -> Workflow | None:
        ctx = info.context
        principal = await ctx.principal()
        # The editor's newest version (its graph included when asked) comes in the same
        # statement as the workflow, and waits in the loader for currentVersion.
        # So does the user who saved it, when that version's createdBy is asked.
        version_columns = None
        creator = False
        if "currentVersion" in selected_names(info):
            version_columns = current_version_columns(info)
            creator = "createdBy" in selected_names(info, ("currentVersion",))
        async with ctx.runtime.pool.connection() as conn:
            row, version, user = await reads.read_workflow(
                conn,
                principal=principal,
                workflow_id=decode_id("Workflow", id),
                columns=workflow_columns(info),
                current_version=version_columns,
                version_creator=creator,
            )
        if version is not None and version_columns is not None:
            key = (row.id, row.current_version, version_columns)
            ctx.loaders.version_by_key.prime(key, version)
        if user is not None:
            ctx.loaders.user_by_id.prime(user.id, user)
        return Workflow.from_model(row)

    @strawberry.field(description="The save-time checks of a graph, without saving it.")
    async def validate_graph(self, info: Info, graph: JSON) -> list[Diagnostic]:
        ctx = info.context
        await ctx.principal()
        diagnostics, _ = check_graph(graph, ctx.runtime.graph_policy)
        return [Diagnostic.from_model(d) for d in diagnostics]
