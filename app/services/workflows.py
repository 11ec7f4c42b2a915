"""Workflows: create, list, save (a new version each time), roll back, delete, flag as template."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.errors import ErrorCode, FieldError, InputErrors, NotFound
from app.models import AuditAction, AuditObjectType, Role, Workflow, WorkflowVersion
from app.services import audit
from app.services.graphs import EMPTY_GRAPH, GraphPolicy, prepare_graph, warn_missing_secrets
from app.services.text import check_text, clean_name
from app.services.versions import insert_version, save_summary

MAX_DESCRIPTION = 10_000
MAX_MESSAGE = 2_000
MAX_SEARCH = 200
NAME_INDEX = "uq_workflows_workspace_id_lower_name"


async def get_workflow(
    session: AsyncSession,
    *,
    principal: Principal,
    workflow_id: uuid.UUID,
    role: Role = Role.VIEWER,
    for_update: bool = False,
) -> Workflow:
    """A workflow the caller may act on with ``role``; NotFound outside their workspaces."""
    query = select(Workflow).where(col(Workflow.id) == workflow_id)
    if for_update:
        query = query.with_for_update()
    workflow = (
        await session.execute(query.execution_options(populate_existing=True))
    ).scalar_one_or_none()
    if workflow is None or principal.role_in(workflow.workspace_id) is None:
        raise NotFound("Workflow")
    principal.require(workflow.workspace_id, role, "Workflow")
    return workflow


def like_escape(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern whose escape character is a backslash."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _details_errors(
    name: str | None, description: str | None, message: str | None
) -> tuple[str | None, list[FieldError]]:
    errors: list[FieldError] = []
    clean: str | None = None
    if name is not None:
        clean, errors = clean_name(name, ("input", "name"))
    if description is not None:
        errors += check_text(description, ("input", "description"), max_length=MAX_DESCRIPTION)
    if message is not None:
        errors += check_text(message, ("input", "message"), max_length=MAX_MESSAGE)
    return clean, errors


def _not_unique(name: str) -> InputErrors:
    return InputErrors.single(
        ("input", "name"),
        ErrorCode.NOT_UNIQUE,
        f'A workflow named "{name}" already exists in this workspace.',
    )


async def create_workflow(
    session: AsyncSession,
    *,
    principal: Principal,
    workspace_id: uuid.UUID,
    name: str,
    description: str | None,
    graph: Any | None,
    policy: GraphPolicy,
) -> tuple[Workflow, WorkflowVersion]:
    """A new workflow at version 1 (an empty canvas when no graph is given)."""
    principal.require(workspace_id, Role.EDITOR)
    clean, errors = _details_errors(name, description, None)
    prepared = None
    try:
        prepared = prepare_graph(
            EMPTY_GRAPH if graph is None else graph, policy, ("input", "graph")
        )
    except InputErrors as graph_errors:
        errors += graph_errors.errors
    if errors:
        raise InputErrors(errors)
    assert clean is not None
    assert prepared is not None
    prepared = await warn_missing_secrets(session, workspace_id=workspace_id, prepared=prepared)
    workflow = Workflow(
        workspace_id=workspace_id,
        name=clean,
        description=description or "",
        current_version=1,
        created_by_id=principal.user_id,
    )
    try:
        async with session.begin_nested():
            session.add(workflow)
            await session.flush()
    except IntegrityError as error:
        if NAME_INDEX in str(error.orig):
            raise _not_unique(clean) from error
        raise
    version = await insert_version(
        session,
        workflow=workflow,
        number=1,
        graph=prepared,
        message=None,
        created_by_id=principal.user_id,
    )
    await _record(session, principal, workflow, AuditAction.WORKFLOW_CREATE, {"name": clean})
    return workflow, version


async def _record(
    session: AsyncSession,
    principal: Principal,
    workflow: Workflow,
    action: AuditAction,
    summary: dict[str, Any],
) -> None:
    await audit.record(
        session,
        principal=principal,
        workspace_id=workflow.workspace_id,
        action=action,
        object_type=AuditObjectType.WORKFLOW,
        object_id=workflow.id,
        summary=summary,
    )


async def save_workflow(
    session: AsyncSession,
    *,
    principal: Principal,
    workflow_id: uuid.UUID,
    graph: Any,
    base_version: int,
    message: str | None,
    name: str | None,
    description: str | None,
    policy: GraphPolicy,
) -> tuple[Workflow, WorkflowVersion]:
    """Save the graph as version current+1, if ``base_version`` is still the current one."""
    workflow = await get_workflow(
        session, principal=principal, workflow_id=workflow_id, role=Role.EDITOR
    )
    clean, errors = _details_errors(name, description, message)
    try:
        prepared = prepare_graph(graph, policy, ("input", "graph"))
    except InputErrors as graph_errors:
        errors += graph_errors.errors
    if errors:
        raise InputErrors(errors)
    prepared = await warn_missing_secrets(
        session, workspace_id=workflow.workspace_id, prepared=prepared
    )
    changes: dict[str, Any] = {}
    if clean is not None:
        changes["name"] = clean
    if description is not None:
        changes["description"] = description
    number = await _bump_version(session, workflow, base_version, changes)
    summary = await save_summary(session, workflow=workflow, number=number, graph=prepared.graph)
    if "name" in changes:
        summary["name"] = changes["name"]
    version = await insert_version(
        session,
        workflow=workflow,
        number=number,
        graph=prepared,
        message=message,
        created_by_id=principal.user_id,
    )
    await _record(session, principal, workflow, AuditAction.WORKFLOW_SAVE, summary)
    return workflow, version


async def _bump_version(
    session: AsyncSession, workflow: Workflow, base_version: int | None, changes: dict[str, Any]
) -> int:
    """Advance current_version by one; the row lock makes racing saves queue, then conflict."""
    condition = col(Workflow.id) == workflow.id
    if base_version is not None:
        condition = condition & (col(Workflow.current_version) == base_version)
    statement = (
        update(Workflow)
        .where(condition)
        .values(current_version=col(Workflow.current_version) + 1, updated_at=func.now(), **changes)
        .returning(col(Workflow.current_version), col(Workflow.updated_at))
    )
    try:
        async with session.begin_nested():
            row = (await session.execute(statement)).one_or_none()
    except IntegrityError as error:
        if NAME_INDEX in str(error.orig):
            raise _not_unique(changes.get("name", "")) from error
        raise
    if row is None:
        current = await session.scalar(
            select(col(Workflow.current_version)).where(col(Workflow.id) == workflow.id)
        )
        raise InputErrors.single(
            ("input", "baseVersion"),
            ErrorCode.VERSION_CONFLICT,
            f"Version {current} was saved after version {base_version}; "
            "reload the workflow and apply your change again.",
        )
    workflow.current_version, workflow.updated_at = row
    for key, value in changes.items():
        setattr(workflow, key, value)
    return int(row[0])


async def rollback_workflow(
    session: AsyncSession,
    *,
    principal: Principal,
    workflow_id: uuid.UUID,
    to_version: int,
    base_version: int | None,
    policy: GraphPolicy,
) -> tuple[Workflow, WorkflowVersion]:
    """A new version whose graph equals version ``to_version``; history is never rewritten."""
    workflow = await get_workflow(
        session, principal=principal, workflow_id=workflow_id, role=Role.EDITOR
    )
    graph = await session.scalar(
        select(col(WorkflowVersion.graph)).where(
            col(WorkflowVersion.workflow_id) == workflow.id,
            col(WorkflowVersion.number) == to_version,
        )
    )
    if graph is None:
        raise InputErrors.single(
            ("input", "toVersion"), ErrorCode.NOT_FOUND, f"Version {to_version} does not exist."
        )
    # Re-checked with today's rules: the copy gets current diagnostics.
    prepared = prepare_graph(graph, policy, ("input", "toVersion"))
    prepared = await warn_missing_secrets(
        session, workspace_id=workflow.workspace_id, prepared=prepared
    )
    number = await _bump_version(session, workflow, base_version, {})
    version = await insert_version(
        session,
        workflow=workflow,
        number=number,
        graph=prepared,
        message=f"Rollback to version {to_version}",
        created_by_id=principal.user_id,
        restored_from=to_version,
    )
    await _record(
        session,
        principal,
        workflow,
        AuditAction.WORKFLOW_ROLLBACK,
        {"version": number, "restoredFrom": to_version},
    )
    return workflow, version


async def delete_workflow(
    session: AsyncSession, *, principal: Principal, workflow_id: uuid.UUID
) -> uuid.UUID:
    """Delete a workflow and all its versions; owners only."""
    workflow = await get_workflow(
        session, principal=principal, workflow_id=workflow_id, role=Role.OWNER
    )
    await session.execute(delete(Workflow).where(col(Workflow.id) == workflow.id))
    # The audit row has no foreign key to the workflow: the delete stays findable.
    await _record(
        session,
        principal,
        workflow,
        AuditAction.WORKFLOW_DELETE,
        {"name": workflow.name, "versions": workflow.current_version},
    )
    return workflow.id


async def set_template(
    session: AsyncSession,
    *,
    principal: Principal,
    workflow_id: uuid.UUID,
    is_template: bool,
    category: str | None,
) -> Workflow:
    """Flag a workflow as one of its workspace's templates (or not), with a category."""
    workflow = await get_workflow(
        session, principal=principal, workflow_id=workflow_id, role=Role.EDITOR
    )
    clean: str | None = None
    if category is not None:
        clean, errors = clean_name(category, ("input", "category"), max_length=100)
        if errors:
            raise InputErrors(errors)
    await session.execute(
        update(Workflow)
        .where(col(Workflow.id) == workflow.id)
        .values(is_template=is_template, template_category=clean if is_template else None)
    )
    workflow.is_template = is_template
    workflow.template_category = clean if is_template else None
    await _record(
        session,
        principal,
        workflow,
        AuditAction.WORKFLOW_TEMPLATE,
        {"isTemplate": is_template, "category": workflow.template_category},
    )
    return workflow
