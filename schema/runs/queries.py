"""Run queries: one run, and the node catalogue."""

from __future__ import annotations

import strawberry

from app.engine.nodes.base import load_catalogue
from app.services import runs as run_service
from schema.context import Info
from schema.ids import decode_id
from schema.runs.types import NodeType, Run


@strawberry.type
class RunQueries:
    @strawberry.field(description="A run of one of your workspaces.")
    async def run(self, info: Info, id: strawberry.ID) -> Run | None:
        ctx = info.context
        row = await run_service.get_run(
            ctx.session, principal=await ctx.principal(), run_id=decode_id("Run", id)
        )
        return Run.from_model(row)

    @strawberry.field(description="Every node type, with its config's JSON Schema and handles.")
    async def node_types(self, info: Info) -> list[NodeType]:
        await info.context.principal()
        return [
            NodeType.from_model(t)
            for t in sorted(load_catalogue().values(), key=lambda t: (t.category, t.type))
        ]
