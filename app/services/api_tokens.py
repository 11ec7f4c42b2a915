"""API tokens: created for the caller, shown once, listed without secrets, revoked, and
turned back into a principal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.cache import EXPIRED_MESSAGE, note_access_change
from app.auth.principal import Principal
from app.auth.tokens import generate_token, hash_token, looks_like_token
from app.errors import ErrorCode, FieldError, InputErrors, NotFound, Unauthenticated
from app.models import ApiToken, AuditAction, AuditObjectType, Membership, User, utcnow
from app.services import audit
from app.services.text import clean_name

# last_used_at is a hint for people; writing it more often than this costs a write a request.
LAST_USED_RESOLUTION = timedelta(minutes=5)
# Comparing aware datetimes works across offsets; later than this, UTC overflows datetime.
LATEST_EXPIRY = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CreatedToken:
    """A new token row and its secret value, which is never shown again."""

    api_token: ApiToken
    token: str


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    """What may be shown of a token: its name and dates, never its value or hash."""

    id: uuid.UUID
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


# The columns of ApiTokenInfo, in its order: the hash is never selected.
_INFO_COLUMNS = (
    col(ApiToken.id),
    col(ApiToken.name),
    col(ApiToken.created_at),
    col(ApiToken.expires_at),
    col(ApiToken.last_used_at),
)


async def record_token_change(
    session: AsyncSession,
    *,
    principal: Principal | None,
    user_id: uuid.UUID,
    action: AuditAction,
    token_id: uuid.UUID,
    name: str,
    expires_at: datetime | None,
) -> None:
    """Audit a token change in every workspace of its user: a token acts in all of them."""
    workspace_ids = await session.scalars(
        select(col(Membership.workspace_id)).where(col(Membership.user_id) == user_id)
    )
    for workspace_id in workspace_ids.all():
        await audit.record(
            session,
            principal=principal,
            user_id=user_id,
            workspace_id=workspace_id,
            action=action,
            object_type=AuditObjectType.API_TOKEN,
            object_id=token_id,
            summary={"name": name, "expiresAt": expires_at.isoformat() if expires_at else None},
        )


async def create_api_token(
    session: AsyncSession,
    *,
    user: User,
    name: str,
    expires_at: datetime | None,
    principal: Principal | None = None,
) -> CreatedToken:
    """A new API token for ``user``; the clear token is returned only here."""
    clean, errors = clean_name(name, ("input", "name"))
    if expires_at is not None:
        if expires_at.tzinfo is None:
            errors.append(
                FieldError(("input", "expiresAt"), ErrorCode.INVALID, "Give a time zone offset.")
            )
        elif expires_at <= utcnow():
            errors.append(
                FieldError(("input", "expiresAt"), ErrorCode.INVALID, "Must be in the future.")
            )
        elif expires_at >= LATEST_EXPIRY:
            errors.append(
                FieldError(
                    ("input", "expiresAt"), ErrorCode.INVALID, "Must be before the year 9999."
                )
            )
    if errors:
        raise InputErrors(errors)
    token = generate_token()
    row = ApiToken(user_id=user.id, name=clean, token_hash=hash_token(token), expires_at=expires_at)
    session.add(row)
    await session.flush()
    await record_token_change(
        session,
        principal=principal,
        user_id=user.id,
        action=AuditAction.TOKEN_CREATE,
        token_id=row.id,
        name=row.name,
        expires_at=row.expires_at,
    )
    return CreatedToken(api_token=row, token=token)


async def list_api_tokens(session: AsyncSession, *, user_id: uuid.UUID) -> list[ApiTokenInfo]:
    """The user's tokens, newest first: name, created, expires, last used."""
    rows = await session.execute(
        select(*_INFO_COLUMNS)
        .where(col(ApiToken.user_id) == user_id)
        .order_by(col(ApiToken.created_at).desc(), col(ApiToken.id))
    )
    return [ApiTokenInfo(*row) for row in rows.all()]


async def revoke_api_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    token_id: uuid.UUID,
    principal: Principal | None = None,
) -> ApiTokenInfo:
    """Delete one of the user's tokens; another user's token, or a missing one, is NotFound."""
    deleted = await session.execute(
        delete(ApiToken)
        .where(col(ApiToken.id) == token_id, col(ApiToken.user_id) == user_id)
        .returning(*_INFO_COLUMNS)
    )
    row = deleted.first()
    if row is None:
        raise NotFound("API token")
    info = ApiTokenInfo(*row)
    note_access_change(session.info, user_id)
    await record_token_change(
        session,
        principal=principal,
        user_id=user_id,
        action=AuditAction.TOKEN_REVOKE,
        token_id=info.id,
        name=info.name,
        expires_at=info.expires_at,
    )
    return info


async def authenticate(session: AsyncSession, *, token: str) -> Principal:
    """The principal of a bearer token; raises Unauthenticated for anything else."""
    if not looks_like_token(token):
        raise Unauthenticated("Invalid API token.")
    found = (
        await session.execute(
            select(ApiToken, User)
            .join(User, col(User.id) == col(ApiToken.user_id))
            .where(col(ApiToken.token_hash) == hash_token(token))
        )
    ).first()
    if found is None:
        raise Unauthenticated("Invalid API token.")
    api_token, user = found
    # Detached: the user may be kept beyond this session (app.auth.cache), and a rollback
    # of this session must not expire what other requests read.
    session.expunge(user)
    now = utcnow()
    if api_token.expires_at is not None and api_token.expires_at <= now:
        raise Unauthenticated(EXPIRED_MESSAGE)
    if api_token.last_used_at is None or now - api_token.last_used_at > LAST_USED_RESOLUTION:
        await session.execute(
            update(ApiToken).where(col(ApiToken.id) == api_token.id).values(last_used_at=now)
        )
        await session.commit()
    memberships = await session.execute(
        select(col(Membership.workspace_id), col(Membership.role)).where(
            col(Membership.user_id) == user.id
        )
    )
    return Principal(
        user=user,
        roles=dict(memberships.all()),
        token_id=api_token.id,
        expires_at=api_token.expires_at,
    )
