"""Drafts and published versions: what a workflow's schedule and webhook run.

Saving writes a new version and changes nothing that triggers run; publishing names the
version they run. A version can be published only when it can run (no diagnostics at all).
``baseVersion`` makes publishing a compare-and-set: the caller names the version it saw
published (0 for none), and a publish that raced it gets VERSION_CONFLICT.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.engine.validation import validate_workflow_graph
from app.errors import ErrorCode, FieldError, InputErrors
from app.models import AuditAction, AuditObjectType, Role, Workflow, WorkflowVersion
from app.services import audit
from app.services.graphs import GraphPolicy
from app.services.workflows import get_workflow

MAX_VERSION = 2**31 - 1


def _published_text(number: int | None) -> str:
    return f"version {number} is published" if number is not None else "no version is published"


async def publish_workflow(
    session: AsyncSession,
    *,
    principal: Principal,
    workflow_id: uuid.UUID,
    version: int,
    base_version: int | None,
    policy: GraphPolicy,
) -> Workflow:
    """Make ``version`` the one schedules and webhooks run (editors); it must run cleanly."""
    workflow = await get_workflow(
        session, principal=principal, workflow_id=workflow_id, role=Role.EDITOR
    )
    if base_version is not None and not 0 <= base_version <= MAX_VERSION:
        raise InputErrors.single(
            ("input", "baseVersion"),
            ErrorCode.INVALID,
            "baseVersion is the published version you saw (0 when none was).",
        )
    graph = None
    if 1 <= version <= MAX_VERSION:
        graph = await session.scalar(
            select(WorkflowVersion.graph).where(
                col(WorkflowVersion.workflow_id) == workflow.id,
                col(WorkflowVersion.number) == version,
            )
        )
    if graph is None:
        raise InputErrors.single(
            ("input", "version"), ErrorCode.NOT_FOUND, f"Version {version} does not exist."
        )
    # Today's rules, as when a run is queued: a version saved before a rule existed is
    # checked again, not trusted on its stored diagnostics.
    problems = validate_workflow_graph(graph, policy.limits)
    if problems:
        raise InputErrors(
            [
                FieldError(
                    ("input", "version"),
                    ErrorCode.GRAPH_INVALID,
                    f"Version {version} cannot be published: {problem.message}",
                )
                for problem in problems
            ]
        )
    previous = workflow.published_version  # the UPDATE below refreshes the loaded row
    condition = col(Workflow.id) == workflow.id
    if base_version is not None:
        expected = None if base_version == 0 else base_version
        condition &= col(Workflow.published_version).is_not_distinct_from(expected)
    # Racing publishes queue on the row lock; the loser re-reads published_version and its
    # condition no longer holds: exactly one of two publishes from one baseVersion wins.
    row = (
        await session.execute(
            update(Workflow)
            .where(condition)
            .values(
                published_version=version,
                published_at=func.clock_timestamp(),
                published_by_id=principal.user_id,
            )
            .returning(col(Workflow.published_at))
        )
    ).one_or_none()
    if row is None:
        current = await session.scalar(
            select(col(Workflow.published_version)).where(col(Workflow.id) == workflow.id)
        )
        raise InputErrors.single(
            ("input", "baseVersion"),
            ErrorCode.VERSION_CONFLICT,
            f"Since you loaded the workflow, {_published_text(current)} "
            f"(you expected {_published_text(base_version or None)}); reload and try again.",
        )
    workflow.published_version = version
    workflow.published_at = row[0]
    workflow.published_by_id = principal.user_id
    await audit.record(
        session,
        principal=principal,
        workspace_id=workflow.workspace_id,
        action=AuditAction.WORKFLOW_PUBLISH,
        object_type=AuditObjectType.WORKFLOW,
        object_id=workflow.id,
        summary={"version": version, "previousVersion": previous},
    )
    return workflow


async def unpublish_workflow(
    session: AsyncSession, *, principal: Principal, workflow_id: uuid.UUID
) -> Workflow:
    """Take back the published version (editors): schedules skip, webhooks answer 409."""
    workflow = await get_workflow(
        session, principal=principal, workflow_id=workflow_id, role=Role.EDITOR, for_update=True
    )
    previous = workflow.published_version
    if previous is None:
        raise InputErrors.single(
            ("id",), ErrorCode.WORKFLOW_NOT_PUBLISHED, "No version of this workflow is published."
        )
    await session.execute(
        update(Workflow)
        .where(col(Workflow.id) == workflow.id)
        .values(published_version=None, published_at=None, published_by_id=None)
    )
    workflow.published_version = workflow.published_at = workflow.published_by_id = None
    await audit.record(
        session,
        principal=principal,
        workspace_id=workflow.workspace_id,
        action=AuditAction.WORKFLOW_UNPUBLISH,
        object_type=AuditObjectType.WORKFLOW,
        object_id=workflow.id,
        summary={"version": previous},
    )
    return workflow
