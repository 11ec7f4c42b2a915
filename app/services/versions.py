"""Workflow versions: immutable saves, their history, and diffs between them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Text, bindparam, cast, insert, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer
from sqlmodel import col

from app.engine.diff import GraphDiff, diff_graphs
from app.errors import ErrorCode, InputErrors, NotFound
from app.models import Workflow, WorkflowVersion
from app.services.graphs import PreparedGraph, diagnostics_to_json
from app.services.pagination import Page, check_page_size, decode_cursor, make_page

VersionKey = tuple[uuid.UUID, int]


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


async def load_version_heads(
    session: AsyncSession, *, keys: list[VersionKey]
) -> dict[VersionKey, WorkflowVersion]:
    """Versions by (workflow id, number), without their graphs (loaded on demand)."""
    if not keys:
        return {}
    rows = await session.execute(
        select(WorkflowVersion)
        .options(defer(WorkflowVersion.graph))
        .where(tuple_(col(WorkflowVersion.workflow_id), col(WorkflowVersion.number)).in_(keys))
    )
    return {(v.workflow_id, v.number): v for v in rows.scalars()}


async def load_graph_texts(
    session: AsyncSession, *, version_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The graphs of versions as JSON text, by version id (never decoded on the way out)."""
    if not version_ids:
        return {}
    rows = await session.execute(
        select(col(WorkflowVersion.id), cast(col(WorkflowVersion.graph), Text)).where(
            col(WorkflowVersion.id).in_(version_ids)
        )
    )
    return dict(rows.all())


async def get_version(
    session: AsyncSession, *, workflow: Workflow, number: int
) -> WorkflowVersion | None:
    """Version ``number`` of a workflow (graph deferred), or None."""
    heads = await load_version_heads(session, keys=[(workflow.id, number)])
    return heads.get((workflow.id, number))


async def list_versions(
    session: AsyncSession, *, workflow: Workflow, first: int, after: str | None
) -> Page[WorkflowVersion]:
    """A page of a workflow's versions, newest first."""
    check_page_size(first)
    query = (
        select(WorkflowVersion)
        .options(defer(WorkflowVersion.graph))
        .where(col(WorkflowVersion.workflow_id) == workflow.id)
        .order_by(col(WorkflowVersion.number).desc())
        .limit(first + 1)
    )
    if after is not None:
        (number,) = decode_cursor(after, 1)
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 2**31 - 1:
            raise InputErrors.single(["after"], ErrorCode.INVALID, "Invalid cursor.")
        query = query.where(col(WorkflowVersion.number) < number)
    rows = list((await session.execute(query)).scalars())
    return make_page(rows, first, lambda v: [v.number])


async def diff_versions(
    session: AsyncSession, *, workflow: Workflow, from_number: int, to_number: int
) -> GraphDiff:
    """What changed between two versions of a workflow, by node and edge id."""
    rows = await session.execute(
        select(col(WorkflowVersion.number), col(WorkflowVersion.graph)).where(
            col(WorkflowVersion.workflow_id) == workflow.id,
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
