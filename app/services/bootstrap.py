"""Making the first user, workspace and token (first start, or `flowdeck token create`)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.errors import InputErrors
from app.models import Membership, Role, User, Workspace
from app.services.api_tokens import CreatedToken, create_api_token
from app.services.users import clean_email, get_or_create_user
from app.services.workspaces import create_workspace


async def has_users(session: AsyncSession) -> bool:
    """True when anyone has ever been created."""
    return bool(await session.scalar(select(func.count()).select_from(User)))


async def issue_owner_token(
    session: AsyncSession, *, email: str, workspace_name: str, token_name: str
) -> tuple[User, Workspace, CreatedToken]:
    """A token for ``email``, owner of a workspace of that name (each created when missing)."""
    clean, errors = clean_email(email, ("email",))
    if errors:
        raise InputErrors(errors)
    user = await get_or_create_user(session, email=clean)
    principal = Principal(user=user)
    rows = await session.execute(
        select(Workspace)
        .join(Membership, Membership.workspace_id == Workspace.id)  # type: ignore[arg-type]
        .where(
            Membership.user_id == user.id,  # type: ignore[arg-type]
            Membership.role == Role.OWNER,  # type: ignore[arg-type]
            func.lower(Workspace.name) == workspace_name.strip().lower(),
        )
        .order_by(Workspace.created_at)
        .limit(1)
    )
    workspace = rows.scalar_one_or_none()
    if workspace is None:
        workspace = await create_workspace(session, principal=principal, name=workspace_name)
    created = await create_api_token(session, user=user, name=token_name, expires_at=None)
    return user, workspace, created
