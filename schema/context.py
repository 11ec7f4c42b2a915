"""The per-request context: a lazily opened session, the principal, the loaders."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from app.auth.cache import take_noted
from app.auth.principal import Principal
from app.auth.tokens import hash_token
from app.errors import InputErrors, Unauthenticated
from app.metrics import SUBSCRIPTIONS
from app.runtime import Runtime
from app.services.api_tokens import authenticate
from schema.errors import UserError, guarded, user_errors
from schema.loaders import Loaders, build_loaders

T = TypeVar("T")

CLEANUPS_KEY = "flowdeck.cleanups"


@dataclass(slots=True)
class Outcome(Generic[T]):
    """What a mutation's service call gave: a value, or user errors (and nothing written)."""

    value: T | None = None
    user_errors: list[UserError] = field(default_factory=list)


@dataclass(slots=True)
class OperationScope:
    """What one operation on a long-lived socket has to itself: a session and loaders."""

    owner: Context
    loaders: Loaders
    session: AsyncSession | None = None


_operation: ContextVar[OperationScope | None] = ContextVar("flowdeck_operation", default=None)


class Context:
    """Everything a resolver needs, built per HTTP request (per operation on a socket)."""

    def __init__(
        self,
        runtime: Runtime,
        connection: HTTPConnection,
        token: str | None,
        *,
        streaming: bool = False,
    ) -> None:
        self.runtime = runtime
        self.connection = connection
        self._token = token
        # A socket, or an HTTP request answered as a stream (graphql-sse): it lasts as long
        # as its subscription, so it must not hold a pooled connection meanwhile.
        self.streaming = streaming or isinstance(connection, WebSocket)
        self._session: AsyncSession | None = None
        self._principal: Principal | None = None
        self._signed_in_at = 0.0
        self._loaders: Loaders | None = None  # made when first used
        # Set by Strawberry from graphql-transport-ws's connection_init payload.
        self.connection_params: dict[str, Any] | None = None

    def public_base_url(self) -> str:
        """Where clients reach this API: FLOWDECK_PUBLIC_URL, else the request's own base."""
        configured = self.runtime.settings.public_url
        if configured:
            return configured.rstrip("/")
        base = str(self.connection.base_url).rstrip("/")
        return base.replace("ws://", "http://", 1).replace("wss://", "https://", 1)

    def _scope(self) -> OperationScope | None:
        scope = _operation.get()
        return scope if scope is not None and scope.owner is self else None

    @property
    def loaders(self) -> Loaders:
        """The DataLoaders of this request, or of the current operation on a socket."""
        scope = self._scope()
        if scope is not None:
            return scope.loaders
        if self._loaders is None:
            self._loaders = build_loaders(lambda: self.session, self.runtime.pool)
        return self._loaders

    @contextlib.asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        """Give one subscription its own session and loaders for as long as it runs."""
        # The loaders read through self.session, which resolves to the scope's session.
        scope = OperationScope(
            owner=self, loaders=build_loaders(lambda: self.session, self.runtime.pool)
        )
        token = _operation.set(scope)
        try:
            yield
        finally:
            if scope.session is not None:
                await scope.session.close()
            try:
                _operation.reset(token)
            except ValueError:  # closed from another task: nothing of ours to restore
                _operation.set(None)

    async def stream(
        self, field_name: str, open_source: Callable[[Principal], AsyncIterator[T]]
    ) -> AsyncIterator[T]:
        """A subscription's items for the signed-in caller, each read with fresh loaders.

        The operation gets its own session and loaders while it runs (counted as an open
        subscription of ``field_name``); its failures reach the client shaped like any other error.
        """

        async def source() -> AsyncIterator[T]:
            principal = await self.principal()
            async for item in self._while_signed_in(open_source(principal)):
                yield item

        with SUBSCRIPTIONS.labels(field_name).track_inprogress():
            async with self.operation():
                async for item in guarded(source()):
                    await self.refresh()
                    yield item

    async def _while_signed_in(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """Relay ``items``, signing in again every token_recheck_seconds even while none
        comes: a revoked or expired token ends the subscription with UNAUTHENTICATED."""
        interval = self.runtime.settings.token_recheck_seconds
        upcoming = asyncio.ensure_future(anext(items))
        try:
            while True:
                done, _ = await asyncio.wait({upcoming}, timeout=interval)
                await self.principal()
                if not done:
                    continue
                try:
                    item = upcoming.result()
                except StopAsyncIteration:
                    return
                yield item
                upcoming = asyncio.ensure_future(anext(items))
        finally:
            upcoming.cancel()
            with contextlib.suppress(BaseException):
                await upcoming
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    async def refresh(self) -> None:
        """Between two events of a subscription: release the session, forget cached rows."""
        scope = self._scope()
        if scope is None:
            return
        if scope.session is not None:
            await scope.session.close()
            scope.session = None
        scope.loaders = build_loaders(lambda: self.session, self.runtime.pool)

    def use_token(self, token: str | None) -> None:
        """Authenticate with this token from now on (a socket's connection_init)."""
        self._token = token
        self._principal = None

    @property
    def session(self) -> AsyncSession:
        """The request's session, opened on first use and closed when the request ends."""
        scope = self._scope()
        if scope is not None:
            if scope.session is None:
                scope.session = self.runtime.sessions()
            return scope.session
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
        """The signed-in caller; raises UNAUTHENTICATED without a valid token.

        A long-lived socket or stream signs in again once its last sign-in is older than
        token_recheck_seconds, so a revoked or expired token stops working within that.
        """
        now = time.monotonic()
        stale = now - self._signed_in_at >= self.runtime.settings.token_recheck_seconds
        if self._principal is None or stale:
            if not self._token:
                raise Unauthenticated()
            self._principal, self._signed_in_at = await self._sign_in(self._token), now
        return self._principal

    async def _sign_in(self, token: str) -> Principal:
        """The token's principal: kept by this process (no query), else from the database."""
        cache = self.runtime.principals
        token_hash = hash_token(token)
        principal = cache.lookup(token_hash)
        if principal is not None:
            return principal
        generation = cache.generation  # before reading: a change announced meanwhile wins
        if self.streaming or self._principal is not None:
            # A short session of its own: a socket or stream must not hold one open (an
            # SSE subscription kept its sign-in transaction idle for as long as it ran).
            async with self.runtime.sessions() as session:
                principal = await authenticate(session, token=token)
        else:
            principal = await authenticate(self.session, token=token)
        cache.keep(token_hash, principal, generation=generation)
        return principal

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
            take_noted(session.info)
            return Outcome(user_errors=user_errors(error))
        except BaseException:
            await session.rollback()
            take_noted(session.info)
            raise
        await session.commit()
        # This process's next request must not be served what the commit just changed.
        self.runtime.principals.forget_noted(session.info)
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
