"""API token services: listing (never the secret) and revoking (one's own tokens only)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db import session_factory
from app.errors import NotFound
from app.models import ApiToken, utcnow
from app.services.api_tokens import (
    ApiTokenInfo,
    create_api_token,
    list_api_tokens,
    revoke_api_token,
)
from tests.factories import Factory


async def test_list_gives_names_and_dates_newest_first_and_nothing_secret(
    factory: Factory,
) -> None:
    owner = await factory.owner()
    await factory.owner()  # another user's token is not listed
    expires = utcnow() + timedelta(days=30)
    async with factory.sessions() as session:
        second = await create_api_token(session, user=owner.user, name="ci", expires_at=expires)
        await session.commit()
    await factory.execute(
        "UPDATE api_tokens SET created_at = now() + interval '1 second', last_used_at = now() "
        "WHERE id = :id",
        id=second.api_token.id,
    )
    async with factory.sessions() as session:
        listed = await list_api_tokens(session, user_id=owner.user.id)
        rows = (
            await session.execute(select(ApiToken).where(ApiToken.user_id == owner.user.id))
        ).scalars()
        by_name = {row.name: row for row in rows}
    ci, test = by_name["ci"], by_name["test"]
    assert listed == [
        ApiTokenInfo(ci.id, "ci", ci.created_at, expires, ci.last_used_at),
        ApiTokenInfo(test.id, "test", test.created_at, None, None),
    ]
    assert ci.last_used_at is not None
    assert [f.name for f in dataclasses.fields(ApiTokenInfo)] == [
        "id", "name", "created_at", "expires_at", "last_used_at",
    ]  # fmt: skip
    async with factory.sessions() as session:
        assert await list_api_tokens(session, user_id=uuid.uuid4()) == []


async def test_revoke_deletes_the_token_and_it_no_longer_signs_in(factory: Factory) -> None:
    owner = await factory.owner()
    viewer = "{ viewer { email } }"
    assert (await factory.gql(viewer, token=owner.token))["data"]["viewer"]["email"]
    async with factory.sessions() as session:
        [token] = await list_api_tokens(session, user_id=owner.user.id)
        revoked = await revoke_api_token(session, user_id=owner.user.id, token_id=token.id)
        await session.commit()
    assert revoked == token
    assert await factory.scalar("SELECT count(*) FROM api_tokens") == 0
    body = await factory.gql(viewer, token=owner.token)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("whose", ["another user's", "a missing"])
async def test_revoking_another_users_or_a_missing_token_is_not_found_and_deletes_nothing(
    factory: Factory, whose: str
) -> None:
    owner = await factory.owner()
    other = await factory.owner()
    async with session_factory(factory.engine)() as session:
        [theirs] = await list_api_tokens(session, user_id=other.user.id)
    token_id = theirs.id if whose == "another user's" else uuid.uuid4()
    before = await factory.snapshot()
    async with factory.sessions() as session:
        with pytest.raises(NotFound, match="API token not found"):
            await revoke_api_token(session, user_id=owner.user.id, token_id=token_id)
        await session.commit()
    assert await factory.snapshot() == before
