"""Templates: the built-in gallery shipped with the package, and workspace templates."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.errors import ErrorCode, InputErrors, NotFound
from app.models import Role, Workflow, WorkflowVersion
from app.services.graphs import GraphPolicy
from app.services.workflows import create_workflow, get_workflow, like_escape

MAX_CLONE_SUFFIX = 50


class TemplateSource(StrEnum):
    """Where a template comes from."""

    BUILTIN = "BUILTIN"
    WORKSPACE = "WORKSPACE"


@dataclass(frozen=True, slots=True)
class Template:
    """A graph to start from: a gallery entry or a workflow flagged as template."""

    key: str  # gallery slug, or the workflow id for workspace templates
    name: str
    description: str
    category: str | None
    source: TemplateSource
    graph: Any


@cache
def builtin_templates() -> tuple[Template, ...]:
    """The gallery, read once from the package's ``app/gallery/*.json`` files."""
    gallery = resources.files("app") / "gallery"
    templates = []
    for entry in sorted(gallery.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        templates.append(
            Template(
                key=data["slug"],
                name=data["name"],
                description=data["description"],
                category=data["category"],
                source=TemplateSource.BUILTIN,
                graph=data["graph"],
            )
        )
    return tuple(templates)


def builtin_template(slug: str) -> Template | None:
    """The gallery entry with this slug."""
    return next((t for t in builtin_templates() if t.key == slug), None)


async def list_templates(
    session: AsyncSession, *, principal: Principal, workspace_id: uuid.UUID
) -> list[Template]:
    """The built-in gallery followed by the workspace's own templates (by name)."""
    principal.require(workspace_id, Role.VIEWER)
    rows = await session.execute(
        select(Workflow, col(WorkflowVersion.graph))
        .join(
            WorkflowVersion,
            (col(WorkflowVersion.workflow_id) == col(Workflow.id))
            & (col(WorkflowVersion.number) == col(Workflow.current_version)),
        )
        .where(col(Workflow.workspace_id) == workspace_id, col(Workflow.is_template))
        .order_by(col(Workflow.name), col(Workflow.id))
    )
    own = [
        Template(
            key=str(workflow.id),
            name=workflow.name,
            description=workflow.description,
            category=workflow.template_category,
            source=TemplateSource.WORKSPACE,
            graph=graph,
        )
        for workflow, graph in rows.all()
    ]
    return [*builtin_templates(), *own]


async def _template_graph(
    session: AsyncSession, *, principal: Principal, source: TemplateSource, key: str
) -> tuple[str, str, Any]:
    if source is TemplateSource.BUILTIN:
        template = builtin_template(key)
        if template is None:
            raise NotFound("Template")
        return template.name, template.description, template.graph
    try:
        workflow = await get_workflow(session, principal=principal, workflow_id=uuid.UUID(key))
    except NotFound as error:
        raise NotFound("Template") from error
    if not workflow.is_template:
        raise NotFound("Template")
    graph = await session.scalar(
        select(col(WorkflowVersion.graph)).where(
            col(WorkflowVersion.workflow_id) == workflow.id,
            col(WorkflowVersion.number) == workflow.current_version,
        )
    )
    return workflow.name, workflow.description, graph


async def _free_name(session: AsyncSession, workspace_id: uuid.UUID, base: str) -> str:
    taken = set(
        (
            await session.execute(
                select(col(Workflow.name)).where(
                    col(Workflow.workspace_id) == workspace_id,
                    col(Workflow.name).ilike(like_escape(base) + "%", escape="\\"),
                )
            )
        ).scalars()
    )
    lowered = {name.lower() for name in taken}
    for n in range(1, MAX_CLONE_SUFFIX + 1):
        candidate = base if n == 1 else f"{base} ({n})"
        if candidate.lower() not in lowered:
            return candidate
    return f"{base} ({uuid.uuid4().hex[:8]})"


async def clone_template(
    session: AsyncSession,
    *,
    principal: Principal,
    source: TemplateSource,
    key: str,
    workspace_id: uuid.UUID,
    name: str | None,
    policy: GraphPolicy,
) -> tuple[Workflow, WorkflowVersion]:
    """A new workflow at version 1 with the template's graph; the template is unchanged."""
    principal.require(workspace_id, Role.EDITOR)
    template_name, description, graph = await _template_graph(
        session, principal=principal, source=source, key=key
    )
    if name is None:
        name = await _free_name(session, workspace_id, template_name[:190])
    elif not name.strip():
        raise InputErrors.single(("input", "name"), ErrorCode.INVALID, "Must not be blank.")
    return await create_workflow(
        session,
        principal=principal,
        workspace_id=workspace_id,
        name=name,
        description=description,
        graph=graph,
        policy=policy,
    )
