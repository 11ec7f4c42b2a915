"""Issuing tokens from the command line: the first user on first start, `flowdeck token
create` afterwards, without ever adding someone to a workspace unasked."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.errors import ErrorCode, InputErrors
from app.models import Membership, Role, User, Workspace
from app.services.api_tokens import CreatedToken, create_api_token
from app.services.text import clean_name
from app.services.users import clean_email, get_or_create_user
from app.services.workspaces import create_workspace


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token, whose user it is, and what had to be created for it."""

    user: User
    workspace: Workspace
    role: Role
    created: CreatedToken
    new_workspace: bool
    new_member: bool


async def has_users(session: AsyncSession) -> bool:
    """True when anyone has ever been created."""
    return bool(await session.scalar(select(func.count()).select_from(User)))


async def first_owner(session: AsyncSession) -> tuple[str, str] | None:
    """The email and workspace name of the oldest owner membership (the first start's)."""
    row = (
        await session.execute(
            select(col(User.email), col(Workspace.name))
            .select_from(Membership)
            .join(User, col(User.id) == col(Membership.user_id))
            .join(Workspace, col(Workspace.id) == col(Membership.workspace_id))
            .where(col(Membership.role) == Role.OWNER)
            .order_by(col(Workspace.created_at), col(User.created_at))
            .limit(1)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def issue_token(
    session: AsyncSession,
    *,
    email: str,
    workspace_name: str,
    token_name: str,
    role: Role | None = None,
    add_member: bool = False,
) -> IssuedToken:
    """A new API token for ``email`` in the workspace named ``workspace_name``.

    A missing workspace is created with the user (created when unknown) as its owner. In an
    existing one the user keeps the role they have; someone who is not a member is added
    (with ``role``, default MEMBER) only with ``add_member``. Refusals write nothing.
    """
    clean_email_, errors = clean_email(email, ("email",))
    name, name_errors = clean_name(workspace_name, ("workspace",))
    _, token_errors = clean_name(token_name, ("name",))
    errors += name_errors + token_errors
    if errors:
        raise InputErrors(errors)
    user = (
        await session.execute(select(User).where(func.lower(col(User.email)) == clean_email_))
    ).scalar_one_or_none()
    named = (
        (
            await session.execute(
                select(Workspace)
                .where(func.lower(col(Workspace.name)) == name.lower())
                .order_by(col(Workspace.created_at))
            )
        )
        .scalars()
        .all()
    )
    if len(named) > 1:
        raise InputErrors.single(
            ("workspace",),
            ErrorCode.NOT_UNIQUE,
            f'{len(named)} workspaces are named "{name}"; rename all but one first.',
        )
    if not named:
        if role not in (None, Role.OWNER):
            raise InputErrors.single(
                ("role",),
                ErrorCode.INVALID,
                f'No workspace is named "{name}"; a new one starts with its owner, not a '
                f"{role.value}.",
            )
        user = user or await get_or_create_user(session, email=clean_email_)
        workspace = await create_workspace(session, principal=Principal(user=user), name=name)
        return await _issue(session, user, workspace, Role.OWNER, token_name, new_workspace=True)
    workspace = named[0]
    current = None if user is None else await _role_of(session, user, workspace)
    if user is not None and current is not None:
        if role is not None and role is not current:
            raise InputErrors.single(
                ("role",),
                ErrorCode.INVALID,
                f'{clean_email_} is {current.value} in "{workspace.name}"; change roles '
                "through the workspace's members, not with a token.",
            )
        return await _issue(session, user, workspace, current, token_name, new_member=False)
    if not add_member:
        raise InputErrors.single(
            ("add_member",),
            ErrorCode.INVALID,
            f'{clean_email_} is not a member of the existing workspace "{workspace.name}".',
        )
    user = user or await get_or_create_user(session, email=clean_email_)
    granted = role or Role.MEMBER
    session.add(Membership(workspace_id=workspace.id, user_id=user.id, role=granted))
    await session.flush()
    return await _issue(session, user, workspace, granted, token_name)


async def _issue(
    session: AsyncSession,
    user: User,
    workspace: Workspace,
    role: Role,
    token_name: str,
    *,
    new_workspace: bool = False,
    new_member: bool = True,
) -> IssuedToken:
    created = await create_api_token(session, user=user, name=token_name, expires_at=None)
    return IssuedToken(user, workspace, role, created, new_workspace, new_member)


async def _role_of(session: AsyncSession, user: User, workspace: Workspace) -> Role | None:
    return await session.scalar(
        select(col(Membership.role)).where(
            col(Membership.user_id) == user.id, col(Membership.workspace_id) == workspace.id
        )
    )
