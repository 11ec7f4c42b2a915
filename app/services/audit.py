"""The audit trail: one helper every service calls in the transaction of its change, and the
owners' view of it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.errors import ErrorCode, FieldError, InputErrors
from app.models import AuditAction, AuditEvent, AuditObjectType, Role
from app.services.pagination import (
    Page,
    check_page_size,
    check_period,
    decode_time_cursor,
    make_page,
)


async def record(
    session: AsyncSession,
    *,
    principal: Principal | None,
    workspace_id: uuid.UUID,
    action: AuditAction,
    object_type: AuditObjectType,
    object_id: uuid.UUID | str,
    summary: dict[str, Any] | None = None,
    user_id: uuid.UUID | None = None,
) -> None:
    """Append one audit event in the session's transaction (it commits or rolls back with
    the change it records). ``user_id`` names the actor when there is no principal (CLI)."""
    await session.execute(
        insert(AuditEvent).values(
            id=uuid.uuid4(),
            workspace_id=workspace_id,
            actor_user_id=principal.user_id if principal is not None else user_id,
            actor_token_id=principal.token_id if principal is not None else None,
            action=action,
            object_type=object_type,
            object_id=str(object_id),
            summary=summary or {},
        )
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit events to list; every given condition must hold."""

    action: AuditAction | None = None
    actor_id: uuid.UUID | None = None
    object_id: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def _conditions(workspace_id: uuid.UUID, where: AuditFilter) -> list[Any]:
    conditions: list[Any] = [col(AuditEvent.workspace_id) == workspace_id]
    if where.action is not None:
        conditions.append(col(AuditEvent.action) == where.action)
    if where.actor_id is not None:
        conditions.append(col(AuditEvent.actor_user_id) == where.actor_id)
    if where.object_id is not None:
        conditions.append(col(AuditEvent.object_id) == where.object_id)
    if where.since is not None:
        conditions.append(col(AuditEvent.at) >= where.since)
    if where.until is not None:
        conditions.append(col(AuditEvent.at) < where.until)
    return conditions


async def list_audit_events(
    session: AsyncSession,
    *,
    principal: Principal,
    workspace_id: uuid.UUID,
    first: int,
    after: str | None,
    where: AuditFilter,
) -> Page[AuditEvent]:
    """A page of a workspace's audit trail, newest first (owners only)."""
    principal.require(workspace_id, Role.OWNER, "Workspace")
    check_page_size(first)
    errors = check_period(where.since, where.until, ("filter",))
    if where.object_id is not None and len(where.object_id) > 200:
        errors.append(FieldError(("filter", "objectId"), ErrorCode.INVALID, "Not an id."))
    if errors:
        raise InputErrors(errors)
    query = (
        select(AuditEvent)
        .where(*_conditions(workspace_id, where))
        .order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc())
        .limit(first + 1)
    )
    if after is not None:
        query = query.where(
            func.row(col(AuditEvent.at), col(AuditEvent.id)) < func.row(*decode_time_cursor(after))
        )
    rows = list((await session.execute(query)).scalars())
    return make_page(rows, first, lambda e: [e.at.isoformat(), str(e.id)])


async def count_audit_events(
    session: AsyncSession, *, workspace_id: uuid.UUID, where: AuditFilter
) -> int:
    """How many audit events of a workspace match."""
    query = select(func.count()).select_from(AuditEvent).where(*_conditions(workspace_id, where))
    return int(await session.scalar(query) or 0)
