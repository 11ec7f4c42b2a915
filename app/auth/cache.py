"""Signed-in principals kept per process for a few seconds, so a request signs in without a
query, and dropped the moment the database says their access changed.

Entries are keyed by the token's SHA-256 and live at most ``ttl_seconds``. They are trusted
only while the process listens on ``AUTH_CHANNEL``: triggers on memberships, api_tokens and
users NOTIFY it, in the transaction of the change, with the id of each user whose access
changed (``*`` for everyone). Without a listener (not started yet, or reconnecting) nothing is
kept and every request asks the database, since a notification could be missed.

A load that began before an announcement is not kept: the rows it read may be the old ones.
A token's expiry is checked on every hit, so an expired token is refused even while kept.

The process that makes a change need not wait for its own notification: the services that
change access note it in their session (``note_access_change``), and the boundary that
commits drops those users here at once (``forget_noted``).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from app.auth.principal import Principal
from app.errors import Unauthenticated
from app.models import utcnow

AUTH_CHANNEL = "flowdeck_auth"
EVERYONE = "*"
EXPIRED_MESSAGE = "This API token has expired."
_NOTED = "flowdeck.access_changed"


def note_access_change(info: MutableMapping[str, Any], user_id: uuid.UUID) -> None:
    """Note in a session's ``info`` that its transaction changes what ``user_id`` may do."""
    info.setdefault(_NOTED, set()).add(user_id)


def take_noted(info: MutableMapping[str, Any]) -> set[uuid.UUID]:
    """The users noted in a session's ``info`` since the last call (then none)."""
    noted: set[uuid.UUID] = info.pop(_NOTED, set())
    return noted


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    kept_until: float


class PrincipalCache:
    """Principals by token hash, for ``ttl_seconds`` at most (0 keeps nothing)."""

    def __init__(
        self,
        ttl_seconds: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_user: dict[uuid.UUID, set[str]] = {}
        self._generation = 0
        self._listening = False

    @property
    def enabled(self) -> bool:
        """Whether principals are kept: a TTL, and a listener that hears every change."""
        return self._listening and self.ttl_seconds > 0

    @property
    def generation(self) -> int:
        """Changes every time something is forgotten; a load notes it before it reads."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token_hash: str) -> Principal | None:
        """A copy of the principal kept for a token, or None (ask the database).

        Raises Unauthenticated when the token expired since it was kept.
        """
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        kept = entry.principal
        if kept.expires_at is not None and kept.expires_at <= utcnow():
            self._drop(token_hash)
            raise Unauthenticated(EXPIRED_MESSAGE)
        if not self.enabled or entry.kept_until <= self._clock():
            self._drop(token_hash)
            return None
        # A copy: a service may add to the caller's roles (a workspace it just created) in a
        # transaction that could still roll back.
        return Principal(
            user=kept.user,
            roles=dict(kept.roles),
            token_id=kept.token_id,
            expires_at=kept.expires_at,
        )

    def keep(self, token_hash: str, principal: Principal, *, generation: int) -> None:
        """Keep a principal loaded from the database, unless something was forgotten since
        the load began (``generation`` is the one noted before it)."""
        if not self.enabled or generation != self._generation:
            return
        self._drop(token_hash)
        while len(self._entries) >= self.max_entries:
            self._drop(next(iter(self._entries)))
        self._entries[token_hash] = _Entry(
            Principal(
                user=principal.user,
                roles=dict(principal.roles),
                token_id=principal.token_id,
                expires_at=principal.expires_at,
            ),
            self._clock() + self.ttl_seconds,
        )
        self._by_user.setdefault(principal.user_id, set()).add(token_hash)

    def forget(self, announcement: str) -> None:
        """Drop what an announcement names: one user's principals, or everyone's (``*``)."""
        self._generation += 1
        if announcement == EVERYONE:
            self.clear()
            return
        try:
            user_id = uuid.UUID(announcement)
        except ValueError:  # not ours to read: forget everything rather than guess
            self.clear()
            return
        for token_hash in self._by_user.pop(user_id, set()):
            self._entries.pop(token_hash, None)

    def forget_noted(self, info: MutableMapping[str, Any]) -> None:
        """After a commit: drop the users its transaction noted (the NOTIFY follows)."""
        for user_id in take_noted(info):
            self.forget(str(user_id))

    def clear(self) -> None:
        """Drop everything."""
        self._generation += 1
        self._entries.clear()
        self._by_user.clear()

    def listening(self, on: bool) -> None:
        """The listener connected (``True``) or lost its connection: either way, what was
        kept may have changed unheard, so it is dropped."""
        self.clear()
        self._listening = on

    def _drop(self, token_hash: str) -> None:
        entry = self._entries.pop(token_hash, None)
        if entry is not None:
            hashes = self._by_user.get(entry.principal.user_id)
            if hashes is not None:
                hashes.discard(token_hash)
                if not hashes:
                    del self._by_user[entry.principal.user_id]
