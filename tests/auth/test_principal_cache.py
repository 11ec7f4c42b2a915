"""The principal cache on its own: what it keeps, for whom, for how long, and when it forgets."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app.auth.cache import PrincipalCache, note_access_change, take_noted
from app.auth.principal import Principal
from app.errors import Unauthenticated
from app.models import Role, User, utcnow


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def principal(expires_in: timedelta | None = None) -> Principal:
    user = User(id=uuid.uuid4(), email=f"{uuid.uuid4().hex[:6]}@example.com", name="")
    return Principal(
        user=user,
        roles={uuid.uuid4(): Role.EDITOR},
        token_id=uuid.uuid4(),
        expires_at=None if expires_in is None else utcnow() + expires_in,
    )


def listening(ttl: float = 10, clock: Clock | None = None, **kwargs: int) -> PrincipalCache:
    cache = PrincipalCache(ttl, clock=clock or Clock(), **kwargs)
    cache.listening(True)
    return cache


def test_a_kept_principal_comes_back_as_a_copy_for_its_own_token_only() -> None:
    cache = listening()
    alice, bob = principal(), principal()
    cache.keep("hash-a", alice, generation=cache.generation)
    cache.keep("hash-b", bob, generation=cache.generation)

    got = cache.lookup("hash-a")

    assert got is not None
    assert got is not alice
    assert (got.user_id, got.roles, got.token_id) == (alice.user_id, alice.roles, alice.token_id)
    assert cache.lookup("hash-b").user_id == bob.user_id  # type: ignore[union-attr]
    assert cache.lookup("hash-c") is None
    # A service adding a workspace to the caller's copy changes nothing kept.
    got.roles[uuid.uuid4()] = Role.OWNER
    assert cache.lookup("hash-a").roles == alice.roles  # type: ignore[union-attr]


def test_nothing_is_kept_without_a_listener_or_a_ttl() -> None:
    quiet = PrincipalCache(10, clock=Clock())
    quiet.keep("hash", principal(), generation=quiet.generation)
    assert (quiet.lookup("hash"), len(quiet)) == (None, 0)

    off = listening(ttl=0)
    off.keep("hash", principal(), generation=off.generation)
    assert (off.lookup("hash"), len(off)) == (None, 0)


def test_an_entry_lives_ttl_seconds() -> None:
    clock = Clock()
    cache = listening(ttl=5, clock=clock)
    cache.keep("hash", principal(), generation=cache.generation)

    clock.now += 4.9
    assert cache.lookup("hash") is not None
    clock.now += 0.1
    assert cache.lookup("hash") is None
    assert len(cache) == 0


def test_an_expired_token_is_refused_while_kept() -> None:
    cache = listening(ttl=60)
    cache.keep("hash", principal(expires_in=timedelta(hours=1)), generation=cache.generation)
    assert cache.lookup("hash") is not None
    cache.keep("gone", principal(expires_in=timedelta(seconds=-1)), generation=cache.generation)

    with pytest.raises(Unauthenticated, match=r"^This API token has expired\.$"):
        cache.lookup("gone")
    assert cache.lookup("gone") is None  # dropped: the next look asks the database
    assert len(cache) == 1


def test_an_announcement_drops_that_users_principals_only() -> None:
    cache = listening()
    alice, bob = principal(), principal()
    cache.keep("a1", alice, generation=cache.generation)
    cache.keep("a2", alice, generation=cache.generation)
    cache.keep("b1", bob, generation=cache.generation)

    cache.forget(str(alice.user_id))

    assert (cache.lookup("a1"), cache.lookup("a2")) == (None, None)
    assert cache.lookup("b1") is not None
    cache.forget("*")
    assert (cache.lookup("b1"), len(cache)) == (None, 0)


def test_a_load_that_began_before_an_announcement_is_not_kept() -> None:
    cache = listening()
    alice = principal()
    began = cache.generation  # the load reads the database now...

    cache.forget(str(uuid.uuid4()))  # ...while some change is announced

    cache.keep("a", alice, generation=began)
    assert cache.lookup("a") is None
    cache.keep("a", alice, generation=cache.generation)
    assert cache.lookup("a") is not None


def test_losing_the_listener_drops_everything_and_keeps_nothing_until_it_is_back() -> None:
    cache = listening()
    cache.keep("a", principal(), generation=cache.generation)
    began = cache.generation

    cache.listening(False)

    assert (cache.lookup("a"), len(cache)) == (None, 0)
    cache.keep("b", principal(), generation=cache.generation)
    assert len(cache) == 0
    cache.listening(True)
    cache.keep("c", principal(), generation=began)  # loaded before the outage
    assert len(cache) == 0


def test_the_cache_is_bounded() -> None:
    cache = listening(max_entries=3)
    for i in range(5):
        cache.keep(f"h{i}", principal(), generation=cache.generation)

    assert len(cache) == 3
    assert [cache.lookup(f"h{i}") is not None for i in range(5)] == [False, False, True, True, True]


def test_a_session_notes_the_users_whose_access_its_transaction_changes() -> None:
    cache = listening()
    alice, bob = principal(), principal()
    cache.keep("a", alice, generation=cache.generation)
    cache.keep("b", bob, generation=cache.generation)
    info: dict[str, object] = {}
    note_access_change(info, alice.user_id)

    cache.forget_noted(info)

    assert (cache.lookup("a"), cache.lookup("b") is not None) == (None, True)
    assert take_noted(info) == set()
