"""The template gallery."""

from __future__ import annotations

import strawberry

from app.services import templates as template_service
from schema.context import Info
from schema.ids import decode_id
from schema.templates.types import Template


@strawberry.type
class TemplateQueries:
    @strawberry.field(description="The built-in gallery and the workspace's own templates.")
    async def templates(self, info: Info, workspace_id: strawberry.ID) -> list[Template]:
        ctx = info.context
        rows = await template_service.list_templates(
            ctx.session,
            principal=await ctx.principal(),
            workspace_id=decode_id("Workspace", workspace_id),
        )
        return [Template(row=row) for row in rows]
