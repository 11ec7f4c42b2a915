"""The one way a mutation runs: its service call in one transaction, then its payload.

Every payload is its changed object(s) plus ``userErrors``; on user errors nothing was
written and every other field is null.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from schema.context import Info

T = TypeVar("T")
P = TypeVar("P")
P_co = TypeVar("P_co", covariant=True)

Operation = Callable[[AsyncSession, Principal], Awaitable[T]]


class PayloadClass(Protocol[P_co]):
    """A payload type: a Strawberry (data)class with ``user_errors`` among its fields."""

    __dataclass_fields__: dict[str, dataclasses.Field[Any]]

    def __call__(self, *args: Any, **kwargs: Any) -> P_co: ...


async def mutate(
    info: Info,
    payload: PayloadClass[P],
    operation: Operation[T],
    present: Callable[[T], Mapping[str, Any]],
) -> P:
    """Run ``operation`` as the caller, commit or roll back, and build ``payload``.

    ``present`` turns the service's result into the payload's fields (besides userErrors).
    """
    outcome = await info.context.transact(operation)
    if outcome.user_errors:
        empty = {name: None for name in payload.__dataclass_fields__ if name != "user_errors"}
        return payload(**empty, user_errors=outcome.user_errors)
    return payload(**present(cast(T, outcome.value)), user_errors=[])
