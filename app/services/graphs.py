"""Checking and encoding a workflow graph once, before it is stored."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.engine.graph import Diagnostic, GraphLimits, Severity, has_errors
from app.engine.validation import missing_secrets, secret_uses, validate_workflow_graph
from app.errors import ErrorCode, FieldError, InputErrors
from app.models import Secret
from app.settings import Settings

EMPTY_GRAPH: dict[str, Any] = {"nodes": [], "edges": []}


@dataclass(frozen=True, slots=True)
class GraphPolicy:
    """The size limits a stored graph must keep."""

    limits: GraphLimits
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> GraphPolicy:
        """The policy configured by the FLOWDECK_MAX_GRAPH_* settings."""
        return cls(
            limits=GraphLimits(
                max_nodes=settings.max_graph_nodes,
                max_edges=settings.max_graph_edges,
                max_depth=settings.max_graph_depth,
                max_string_length=settings.max_string_length,
            ),
            max_bytes=settings.max_graph_bytes,
        )


@dataclass(frozen=True, slots=True)
class PreparedGraph:
    """A graph that may be stored: its compact JSON text and its warnings."""

    graph: Any
    encoded: str
    diagnostics: list[Diagnostic]


def check_graph(graph: Any, policy: GraphPolicy) -> tuple[list[Diagnostic], str | None]:
    """Every save-time diagnostic, and the graph's compact JSON when it has no ERROR."""
    diagnostics = validate_workflow_graph(graph, policy.limits)
    if has_errors(diagnostics):
        return diagnostics, None
    # Encoded once here and handed to PostgreSQL as text: no second encode on the way in.
    encoded = json.dumps(graph, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    size = len(encoded.encode("utf-8"))
    if size > policy.max_bytes:
        too_large = Diagnostic(
            severity=Severity.ERROR,
            code="GRAPH_TOO_LARGE",
            message=f"The graph is {size} bytes; the limit is {policy.max_bytes}.",
            path=(),
        )
        return [too_large], None
    return diagnostics, encoded


def prepare_graph(graph: Any, policy: GraphPolicy, field: tuple[str, ...]) -> PreparedGraph:
    """Validate and encode a graph; ERROR diagnostics raise GRAPH_INVALID user errors."""
    diagnostics, encoded = check_graph(graph, policy)
    if encoded is None:
        raise InputErrors(
            [
                FieldError(field + d.path, ErrorCode.GRAPH_INVALID, d.message)
                for d in diagnostics
                if d.severity is Severity.ERROR
            ]
        )
    return PreparedGraph(graph=graph, encoded=encoded, diagnostics=diagnostics)


async def warn_missing_secrets(
    session: AsyncSession, *, workspace_id: uuid.UUID, prepared: PreparedGraph
) -> PreparedGraph:
    """The graph with a MISSING_SECRET warning for each secret it reads by name that the
    workspace (this one only) does not have."""
    uses = secret_uses(prepared.graph)
    if not uses:
        return prepared
    # All the workspace's names (at most MAX_SECRETS): a graph may name any number.
    present = set(
        await session.scalars(
            select(col(Secret.name)).where(col(Secret.workspace_id) == workspace_id)
        )
    )
    warnings = missing_secrets(uses, present)
    return replace(prepared, diagnostics=[*prepared.diagnostics, *warnings])


def diagnostics_to_json(diagnostics: list[Diagnostic]) -> list[dict[str, Any]]:
    """Diagnostics as stored in a version's ``diagnostics`` column."""
    return [
        {
            "severity": d.severity.value,
            "code": d.code,
            "message": d.message,
            "path": list(d.path),
            "nodeId": d.node_id,
            "edgeId": d.edge_id,
        }
        for d in diagnostics
    ]
