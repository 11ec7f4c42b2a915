"""The per-request context: a lazily opened session, the principal, the loaders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from strawberry.types import Info as StrawberryInfo

from app.auth.principal import Principal
from app.errors import InputErrors, Unauthenticated
from app.runtime import Runtime
from app.services.api_tokens import authenticate
from schema.errors import UserError, user_errors
from schema.loaders import Loaders, build_loaders

T = TypeVar("T")

CLEANUPS_KEY = "flowdeck.cleanups"


@dataclass(slots=True)
class Outcome(Generic[T]):
    """What a mutation's service call gave: a value, or user errors (and nothing written)."""

    value: T | None = None
    user_errors: list[UserError] = field(default_factory=list)


class Context:
    """Everything a resolver needs, built per HTTP request (per operation on a socket)."""

    def __init__(self, runtime: Runtime, connection: HTTPConnection, token: str | None) -> None:
        self.runtime = runtime
        self.connection = connection
        self._token = token
        self._session: AsyncSession | None = None
        self._principal: Principal | None = None
        self.loaders: Loaders = build_loaders(lambda: self.session)

    @property
    def session(self) -> AsyncSession:
        """The request's session, opened on first use and closed when the request ends."""
        if self._session is None:
            self._session = self.runtime.sessions()
            cleanups = self.connection.scope.setdefault(CLEANUPS_KEY, [])
            cleanups.append(self.close)
        return self._session

    async def close(self) -> None:
        """Close the session (rolling back anything uncommitted)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def principal(self) -> Principal:
        """The signed-in caller; raises UNAUTHENTICATED without a valid token."""
        if self._principal is None:
            if not self._token:
                raise Unauthenticated()
            self._principal = await authenticate(self.session, token=self._token)
        return self._principal

    async def transact(
        self, operation: Callable[[AsyncSession, Principal], Awaitable[T]]
    ) -> Outcome[T]:
        """Run a mutation's service call in one transaction: commit, or roll back on errors."""
        principal = await self.principal()
        session = self.session
        try:
            value = await operation(session, principal)
        except InputErrors as error:
            await session.rollback()
            return Outcome(user_errors=user_errors(error))
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
        return Outcome(value=value)


Info = StrawberryInfo[Context, None]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
