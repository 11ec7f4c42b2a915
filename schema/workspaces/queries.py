"""Who am I, and one workspace."""

from __future__ import annotations

import strawberry

from app.services import reads
from schema.context import Info
from schema.ids import decode_id
from schema.workspaces.types import Viewer, Workspace, workspace_columns


@strawberry.type
class WorkspaceQueries:
    @strawberry.field(description="The signed-in user.")
    async def viewer(self, info: Info) -> Viewer:
        principal = await info.context.principal()
        return Viewer.from_model(principal.user)

    @strawberry.field(description="One of your workspaces.")
    async def workspace(self, info: Info, id: strawberry.ID) -> Workspace | None:
        ctx = info.context
        principal = await ctx.principal()
        async with ctx.runtime.pool.connection() as conn:
            row = await reads.read_workspace(
                conn,
                principal=principal,
                workspace_id=decode_id("Workspace", id),
                columns=workspace_columns(info),
            )
        return Workspace.from_model(row)
