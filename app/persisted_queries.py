"""Automatic persisted queries, as Apollo Client and urql send them.

A request may carry ``extensions.persistedQuery = {"version": 1, "sha256Hash": "<hex>"}``:

- with the query text too, the text is checked against the hash (SHA-256 of its UTF-8) and
  kept in a bounded LRU, then runs as usual;
- without it, the kept text runs; a hash this process has not kept is answered
  ``PersistedQueryNotFound`` (``extensions.code`` ``PERSISTED_QUERY_NOT_FOUND``, status 200 as
  Apollo's protocol has it), and the client sends the text again.

Each API process keeps its own: a client that meets another process, or one restarted, costs
one such round trip, never a wrong answer (the hash names one text). Over POST and over GET
(``?extensions=…``). A wrong hash, another version, a hash that is not 64 hex digits or a text
over the size limit is refused with a clear error, and nothing is kept.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Any

from strawberry.http import GraphQLRequestData

NOT_FOUND = "PersistedQueryNotFound"
NOT_SUPPORTED = "PersistedQueryNotSupported"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class PersistedQueryError(Exception):
    """A persisted query that cannot run: the status, message and code to answer with."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class PersistedQueries:
    """Query texts by their SHA-256, at most ``max_entries`` of at most ``max_bytes`` each."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._texts: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._texts)

    def resolve(self, request: GraphQLRequestData) -> GraphQLRequestData:
        """The request with its query text, when it names a persisted one."""
        extensions = request.extensions
        if not extensions or "persistedQuery" not in extensions:
            return request
        if self.max_entries == 0:
            raise PersistedQueryError(200, NOT_SUPPORTED, "PERSISTED_QUERY_NOT_SUPPORTED")
        digest = _digest(extensions["persistedQuery"])
        query = request.query
        if query is None:
            kept = self._texts.get(digest)
            if kept is None:
                raise PersistedQueryError(200, NOT_FOUND, "PERSISTED_QUERY_NOT_FOUND")
            self._texts.move_to_end(digest)
            request.query = kept
            return request
        encoded = query.encode("utf-8", "surrogatepass")
        if len(encoded) > self.max_bytes:
            raise PersistedQueryError(
                413,
                f"A persisted query is at most {self.max_bytes} bytes; send this one without "
                "extensions.persistedQuery.",
                "PERSISTED_QUERY_TOO_LARGE",
            )
        if hashlib.sha256(encoded).hexdigest() != digest:
            raise PersistedQueryError(
                400,
                "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query's UTF-8 "
                "text.",
                "PERSISTED_QUERY_HASH_MISMATCH",
            )
        self._texts[digest] = query
        self._texts.move_to_end(digest)
        while len(self._texts) > self.max_entries:
            self._texts.popitem(last=False)
        return request


def _digest(persisted: Any) -> str:
    """The lower-case hex SHA-256 a ``persistedQuery`` extension names."""
    if not isinstance(persisted, dict):
        raise PersistedQueryError(
            400, "extensions.persistedQuery must be an object.", "BAD_REQUEST"
        )
    version = persisted.get("version")
    if type(version) is not int or version != 1:
        raise PersistedQueryError(
            400,
            "Only version 1 of extensions.persistedQuery is supported (Apollo's protocol).",
            "PERSISTED_QUERY_VERSION",
        )
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise PersistedQueryError(
            400,
            "extensions.persistedQuery.sha256Hash must be 64 hexadecimal digits.",
            "BAD_REQUEST",
        )
    return digest.lower()
