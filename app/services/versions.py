"""Workflow versions: immutable saves, their history, and diffs between them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Text, bindparam, cast, insert, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.engine.diff import GraphDiff, diff_graphs
from app.errors import NotFound
from app.models import Workflow, WorkflowVersion
from app.services.graphs import PreparedGraph, diagnostics_to_json


async def insert_version(
    session: AsyncSession,
    *,
    workflow: Workflow,
    number: int,
    graph: PreparedGraph,
    message: str | None,
    created_by_id: uuid.UUID | None,
    restored_from: int | None = None,
) -> WorkflowVersion:
    """Store version ``number`` of a workflow from an already encoded graph."""
    version_id = uuid.uuid4()
    row = (
        await session.execute(
            insert(WorkflowVersion)
            .values(
                id=version_id,
                workspace_id=workflow.workspace_id,
                workflow_id=workflow.id,
                number=number,
                graph=cast(bindparam("graph_text", graph.encoded, type_=Text), JSONB),
                diagnostics=diagnostics_to_json(graph.diagnostics),
                message=message,
                restored_from=restored_from,
                created_by_id=created_by_id,
            )
            .returning(col(WorkflowVersion.created_at))
        )
    ).one()
    return WorkflowVersion(
        id=version_id,
        workspace_id=workflow.workspace_id,
        workflow_id=workflow.id,
        number=number,
        graph=graph.graph,
        diagnostics=diagnostics_to_json(graph.diagnostics),
        message=message,
        restored_from=restored_from,
        created_by_id=created_by_id,
        created_at=row.created_at,
    )


async def diff_versions(
    session: AsyncSession, *, workflow_id: uuid.UUID, from_number: int, to_number: int
) -> GraphDiff:
    """What changed between two versions of a workflow, by node and edge id."""
    rows = await session.execute(
        select(col(WorkflowVersion.number), col(WorkflowVersion.graph)).where(
            col(WorkflowVersion.workflow_id) == workflow_id,
            col(WorkflowVersion.number).in_([from_number, to_number]),
        )
    )
    graphs: dict[int, Any] = dict(rows.all())
    for number in (from_number, to_number):
        if number not in graphs:
            raise NotFound(f"Version {number}")
    return diff_graphs(graphs[from_number], graphs[to_number])


async def save_summary(
    session: AsyncSession, *, workflow: Workflow, number: int, graph: Any
) -> dict[str, Any]:
    """What saving ``graph`` as version ``number`` changed since the version before, in
    counts (the audit trail's summary of a save)."""
    previous = await session.scalar(
        select(WorkflowVersion.graph).where(
            col(WorkflowVersion.workflow_id) == workflow.id,
            col(WorkflowVersion.number) == number - 1,
        )
    )
    diff = diff_graphs(previous, graph)
    return {
        "version": number,
        "nodesAdded": len(diff.nodes_added),
        "nodesRemoved": len(diff.nodes_removed),
        "nodesChanged": len(diff.nodes_changed),
        "edgesAdded": len(diff.edges_added),
        "edgesRemoved": len(diff.edges_removed),
        "edgesChanged": len(diff.edges_changed),
    }
