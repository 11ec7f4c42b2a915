"""Users: looked up and created by email."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import ErrorCode, FieldError
from app.models import User
from app.services.text import storable

# Deliberately simple: one @, no spaces or control characters, a dot in the domain.
EMAIL_PATTERN = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,255}\.[^@\s\x00-\x1f\x7f.]+$"
)


def clean_email(value: str, field: tuple[str, ...]) -> tuple[str, list[FieldError]]:
    """Normalise an email (trimmed, lower case) and report it when it is not one."""
    email = value.strip().lower()
    if len(email) > 320 or not storable(email) or not EMAIL_PATTERN.match(email):
        return email, [FieldError(field, ErrorCode.INVALID, "Not a valid email address.")]
    return email, []


async def get_or_create_user(session: AsyncSession, *, email: str, name: str | None = None) -> User:
    """The user with this (normalised) email, created when unknown; race-safe."""
    display = name or email.split("@", 1)[0]
    await session.execute(
        insert(User)
        .values(id=uuid.uuid4(), email=email, name=display[:200])
        .on_conflict_do_nothing(index_elements=[func.lower(col(User.email))])
    )
    return (
        await session.execute(select(User).where(func.lower(col(User.email)) == email))
    ).scalar_one()
