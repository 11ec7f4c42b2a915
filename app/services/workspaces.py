"""Workspaces and their members."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.errors import ErrorCode, FieldError, InputErrors, NotFound
from app.models import Membership, Role, User, Workspace
from app.services.text import clean_name
from app.services.users import clean_email, get_or_create_user


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
    return workspace


async def get_workspace(
    session: AsyncSession, *, principal: Principal, workspace_id: uuid.UUID
) -> Workspace:
    """A workspace the caller belongs to (NotFound otherwise)."""
    principal.require(workspace_id, Role.VIEWER)
    workspace = await session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound("Workspace")
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
    # Lock the workspace's memberships so two demotions cannot both pass the last-owner check.
    await session.execute(
        select(col(Workspace.id)).where(col(Workspace.id) == workspace_id).with_for_update()
    )
    if role is not Role.OWNER:
        owners = await session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(
                col(Membership.workspace_id) == workspace_id,
                col(Membership.role) == Role.OWNER,
                col(Membership.user_id) != user.id,
            )
        )
        if owners == 0:
            raise InputErrors(
                [
                    FieldError(
                        ("input", "role"),
                        ErrorCode.LAST_OWNER,
                        "A workspace keeps at least one owner; make someone else owner first.",
                    )
                ]
            )
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
    if user.id == principal.user_id:
        principal.roles[workspace_id] = role
    return membership, user


async def list_memberships(session: AsyncSession, *, user_id: uuid.UUID) -> list[Membership]:
    """Every membership of a user, oldest first."""
    rows = await session.execute(
        select(Membership)
        .where(col(Membership.user_id) == user_id)
        .order_by(col(Membership.created_at), col(Membership.workspace_id))
    )
    return list(rows.scalars())
