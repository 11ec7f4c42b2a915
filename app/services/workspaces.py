"""Workspaces and their members."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.cache import note_access_change
from app.auth.principal import Principal
from app.errors import ErrorCode, FieldError, InputErrors, NotFound
from app.models import AuditAction, AuditObjectType, Membership, Role, User, Workspace
from app.services import audit
from app.services.text import clean_name
from app.services.users import clean_email, get_or_create_user

# A run is kept at least a day (a run list of the day is always complete) and at most ten
# years.
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 3650


async def create_workspace(session: AsyncSession, *, principal: Principal, name: str) -> Workspace:
    """A new workspace whose owner is the caller."""
    clean, errors = clean_name(name, ("input", "name"))
    if errors:
        raise InputErrors(errors)
    workspace = Workspace(name=clean)
    session.add(workspace)
    await session.flush()
    session.add(Membership(workspace_id=workspace.id, user_id=principal.user_id, role=Role.OWNER))
    await session.flush()
    principal.roles[workspace.id] = Role.OWNER
    note_access_change(session.info, principal.user_id)
    await audit.record(
        session,
        principal=principal,
        workspace_id=workspace.id,
        action=AuditAction.WORKSPACE_CREATE,
        object_type=AuditObjectType.WORKSPACE,
        object_id=workspace.id,
        summary={"name": clean},
    )
    return workspace


async def set_member(
    session: AsyncSession,
    *,
    principal: Principal,
    workspace_id: uuid.UUID,
    email: str,
    role: Role,
) -> tuple[Membership, User]:
    """Give a user (created when unknown) a role in a workspace; owners only."""
    principal.require(workspace_id, Role.OWNER)
    clean, errors = clean_email(email, ("input", "email"))
    if errors:
        raise InputErrors(errors)
    user = await get_or_create_user(session, email=clean)
    previous = await _lock_members(session, workspace_id, user.id)
    if role is not Role.OWNER:
        await _keep_an_owner(session, workspace_id, user.id, ("input", "role"))
    await session.execute(
        insert(Membership)
        .values(workspace_id=workspace_id, user_id=user.id, role=role.value)
        .on_conflict_do_update(
            index_elements=[col(Membership.workspace_id), col(Membership.user_id)],
            set_={"role": role.value},
        )
    )
    membership = (
        await session.execute(
            select(Membership)
            .where(col(Membership.workspace_id) == workspace_id, col(Membership.user_id) == user.id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    note_access_change(session.info, user.id)
    if user.id == principal.user_id:
        principal.roles[workspace_id] = role
    await audit.record(
        session,
        principal=principal,
        workspace_id=workspace_id,
        action=AuditAction.MEMBER_SET,
        object_type=AuditObjectType.MEMBER,
        object_id=user.id,
        summary={
            "email": user.email,
            "role": role.value,
            "previousRole": previous.value if previous else None,
        },
    )
    return membership, user


async def _lock_members(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID
) -> Role | None:
    """Lock the workspace's memberships (two demotions or removals cannot both pass the
    last-owner check); the user's role before the change."""
    await session.execute(
        select(col(Workspace.id)).where(col(Workspace.id) == workspace_id).with_for_update()
    )
    return await session.scalar(
        select(col(Membership.role)).where(
            col(Membership.workspace_id) == workspace_id,
            col(Membership.user_id) == user_id,
        )
    )


async def _keep_an_owner(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID, field: tuple[str, ...]
) -> None:
    """LAST_OWNER unless someone other than ``user_id`` owns the workspace."""
    owners = await session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(
            col(Membership.workspace_id) == workspace_id,
            col(Membership.role) == Role.OWNER,
            col(Membership.user_id) != user_id,
        )
    )
    if owners == 0:
        raise InputErrors(
            [
                FieldError(
                    field,
                    ErrorCode.LAST_OWNER,
                    "A workspace keeps at least one owner; make someone else owner first.",
                )
            ]
        )


async def remove_member(
    session: AsyncSession, *, principal: Principal, workspace_id: uuid.UUID, user_id: uuid.UUID
) -> uuid.UUID:
    """Take a person out of a workspace (owners only); its last owner stays."""
    principal.require(workspace_id, Role.OWNER)
    previous = await _lock_members(session, workspace_id, user_id)
    if previous is None:
        raise NotFound("Member")
    if previous is Role.OWNER:
        await _keep_an_owner(session, workspace_id, user_id, ("input", "userId"))
    email = await session.scalar(select(col(User.email)).where(col(User.id) == user_id))
    await session.execute(
        delete(Membership).where(
            col(Membership.workspace_id) == workspace_id,
            col(Membership.user_id) == user_id,
        )
    )
    note_access_change(session.info, user_id)
    if user_id == principal.user_id:
        principal.roles.pop(workspace_id, None)
    await audit.record(
        session,
        principal=principal,
        workspace_id=workspace_id,
        action=AuditAction.MEMBER_REMOVE,
        object_type=AuditObjectType.MEMBER,
        object_id=user_id,
        summary={"email": email, "role": previous.value},
    )
    return user_id


async def update_workspace(
    session: AsyncSession,
    *,
    principal: Principal,
    workspace_id: uuid.UUID,
    name: str | None,
    run_retention_days: int | None,
) -> Workspace:
    """Rename a workspace or change how long its finished runs are kept (owners only)."""
    principal.require(workspace_id, Role.OWNER)
    errors: list[FieldError] = []
    values: dict[str, object] = {}
    if name is not None:
        clean, errors = clean_name(name, ("input", "name"))
        values["name"] = clean
    if run_retention_days is not None:
        if not MIN_RETENTION_DAYS <= run_retention_days <= MAX_RETENTION_DAYS:
            errors.append(
                FieldError(
                    ("input", "runRetentionDays"),
                    ErrorCode.INVALID,
                    f"Keep runs {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days.",
                )
            )
        values["run_retention_days"] = run_retention_days
    if not values:
        errors.append(FieldError(("input",), ErrorCode.INVALID, "Nothing to change."))
    if errors:
        raise InputErrors(errors)
    workspace = (
        await session.execute(
            select(Workspace).where(col(Workspace.id) == workspace_id).with_for_update()
        )
    ).scalar_one()
    summary = {key: {"from": getattr(workspace, key), "to": value} for key, value in values.items()}
    for key, value in values.items():
        setattr(workspace, key, value)
    await session.flush()
    await audit.record(
        session,
        principal=principal,
        workspace_id=workspace_id,
        action=AuditAction.WORKSPACE_UPDATE,
        object_type=AuditObjectType.WORKSPACE,
        object_id=workspace_id,
        summary={_camel(key): change for key, change in summary.items()},
    )
    return workspace


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def list_memberships(session: AsyncSession, *, user_id: uuid.UUID) -> list[Membership]:
    """Every membership of a user, oldest first."""
    rows = await session.execute(
        select(Membership)
        .where(col(Membership.user_id) == user_id)
        .order_by(col(Membership.created_at), col(Membership.workspace_id))
    )
    return list(rows.scalars())
