"""Keyset pagination: opaque cursors over a sort key, pages of at most 100."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson

from app.errors import ErrorCode, FieldError, InputErrors

T = TypeVar("T")

MAX_PAGE_SIZE = 100


class Page(Generic[T]):
    """One page of rows, with the sort key of each for its cursor (encoded when first
    asked: a page whose cursors nobody selects never encodes them)."""

    __slots__ = ("_cursors", "_key", "has_next_page", "items")

    def __init__(
        self, items: list[T], key: Callable[[T], Sequence[Any]], has_next_page: bool
    ) -> None:
        self.items = items
        self._key = key
        self.has_next_page = has_next_page
        self._cursors: list[str] | None = None

    @property
    def cursors(self) -> list[str]:
        """Each item's cursor."""
        if self._cursors is None:
            key = self._key
            self._cursors = [encode_cursor(key(r)) for r in self.items]
        return self._cursors

    @property
    def end_cursor(self) -> str | None:
        """The last item's cursor (None on an empty page)."""
        return encode_cursor(self._key(self.items[-1])) if self.items else None


def encode_cursor(key: Sequence[Any]) -> str:
    """An opaque cursor for a sort key."""
    # orjson writes the compact JSON json.dumps(separators=(",", ":")) did, five times faster:
    # a list page encodes a cursor per item (250 for 50 workflows with 5 versions each).
    raw = orjson.dumps(list(key), default=str)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """The sort key of a cursor; an unreadable cursor is an INVALID user error."""
    try:
        if len(cursor) > 500:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(key, list) or len(key) != arity:
            raise ValueError("wrong shape")
        return key
    except (ValueError, UnicodeError) as error:
        raise InputErrors.single(["after"], ErrorCode.INVALID, "Invalid cursor.") from error


def check_page_size(first: int) -> int:
    """Validate ``first``: 0 to 100."""
    if first < 0 or first > MAX_PAGE_SIZE:
        raise InputErrors.single(
            ["first"], ErrorCode.INVALID, f"first must be between 0 and {MAX_PAGE_SIZE}."
        )
    return first


def make_page(rows: list[T], first: int, key: Callable[[T], Sequence[Any]]) -> Page[T]:
    """Cut the ``first + 1`` fetched rows into a page and compute its cursors."""
    items = rows[:first]
    return Page(items, key, has_next_page=len(rows) > first)


def check_period(
    since: datetime | None, until: datetime | None, field: tuple[str, ...]
) -> list[FieldError]:
    """What is wrong with a from/to period: both need a time zone, from before to."""
    errors = [
        FieldError((*field, name), ErrorCode.INVALID, "Give a time zone offset.")
        for name, moment in (("from", since), ("to", until))
        if moment is not None and moment.tzinfo is None
    ]
    if not errors and since is not None and until is not None and since >= until:
        errors.append(FieldError((*field, "to"), ErrorCode.INVALID, "Must be after `from`."))
    return errors


def decode_time_cursor(after: str) -> tuple[datetime, uuid.UUID]:
    """The (timestamp, id) sort key of a cursor; anything else is an INVALID user error.

    The API writes every cursor time with its offset; one without (a cursor made by hand)
    names no moment, and beside a page without a cursor, whose time has an offset, it could
    not even be sent in one array."""
    moment, last_id = decode_cursor(after, 2)
    try:
        at = datetime.fromisoformat(str(moment))
        if at.tzinfo is None:
            raise ValueError("a cursor time without an offset")
        return at, uuid.UUID(str(last_id))
    except ValueError as error:
        raise InputErrors.single(["after"], ErrorCode.INVALID, "Invalid cursor.") from error
