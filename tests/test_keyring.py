"""The keyring: sealing, opening, tampering, key files; rotation and the start-up check."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from app.keyring import (
    DecryptError,
    Keyring,
    KeyringError,
    Sealed,
    generate_key,
    key_id_of,
    parse_keys,
    read_key_file,
    secret_aad,
)
from app.settings import Settings
from tests.databases import scratch_database

FLOWDECK = str(Path(sys.executable).with_name("flowdeck"))
WORKSPACE = uuid.uuid4()


def ring(*keys: str) -> Keyring:
    return Keyring(parse_keys(",".join(keys), source="test"))


def test_seal_and_open_round_trip_with_a_fresh_nonce() -> None:
    keyring = ring(generate_key())
    aad = secret_aad(WORKSPACE, "API_KEY")
    first = keyring.seal("sk-123456", aad)
    second = keyring.seal("sk-123456", aad)
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    assert keyring.open(first, aad) == keyring.open(second, aad) == "sk-123456"
    assert first.key_id == keyring.current_id


def test_tampered_or_moved_ciphertexts_do_not_open() -> None:
    keyring = ring(generate_key())
    aad = secret_aad(WORKSPACE, "API_KEY")
    sealed = keyring.seal("sk-123456", aad)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    cases = {
        "flipped bit": (Sealed(sealed.key_id, sealed.nonce, flipped), aad),
        "other nonce": (Sealed(sealed.key_id, os.urandom(12), sealed.ciphertext), aad),
        "other name": (sealed, secret_aad(WORKSPACE, "OTHER")),
        "other workspace": (sealed, secret_aad(uuid.uuid4(), "API_KEY")),
        "truncated": (Sealed(sealed.key_id, sealed.nonce, sealed.ciphertext[:-1]), aad),
    }
    for name, (candidate, data) in cases.items():
        with pytest.raises(DecryptError):
            keyring.open(candidate, data)
        assert name


def test_old_keys_open_and_the_first_seals() -> None:
    old, new = generate_key(), generate_key()
    aad = secret_aad(WORKSPACE, "K")
    sealed_old = ring(old).seal("value-1", aad)
    rotated = ring(new, old)
    assert rotated.open(sealed_old, aad) == "value-1"
    assert rotated.seal("value-2", aad).key_id == key_id_of(parse_keys(new, source="t")[0])
    with pytest.raises(DecryptError, match="no key with id"):
        ring(new).open(sealed_old, aad)


@pytest.mark.parametrize(
    "text", ["", "   ", "not-base64!!", "c2hvcnQ=", generate_key() + ",tooshort"]
)
def test_malformed_keys_are_refused_clearly(text: str) -> None:
    with pytest.raises(KeyringError, match="FLOWDECK_SECRET_KEY"):
        parse_keys(text, source="FLOWDECK_SECRET_KEY")


def test_production_with_an_external_database_needs_a_key(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        env="production", database_url="postgresql://db/x", data_dir=tmp_path
    )
    with pytest.raises(KeyringError, match="FLOWDECK_SECRET_KEY is not set"):
        Keyring.from_settings(settings)
    assert list(tmp_path.iterdir()) == []


def test_development_generates_one_key_file_owner_only(tmp_path: Path) -> None:
    settings = Settings(env="development", data_dir=tmp_path)  # type: ignore[call-arg]
    first = Keyring.from_settings(settings)
    second = Keyring.from_settings(settings)
    assert first.current_id == second.current_id
    key_file = tmp_path / "secret.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert len(read_key_file(key_file)) == 1


# --- the command line ------------------------------------------------------------------


@pytest.fixture
def database(server_url: str) -> Iterator[str]:
    """An empty database of this test's own."""
    with scratch_database(server_url, "flowdeck_keys") as url:
        yield url


def flowdeck(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWDECK, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _env(database: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "DATABASE_URL")}
    env.update(
        DATABASE_URL=database,
        FLOWDECK_DATA_DIR=str(tmp_path),
        FLOWDECK_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


def _seed_secret(database: str, key: str) -> tuple[uuid.UUID, Sealed]:
    """A workspace with one secret sealed under ``key`` (as secretSet would store it)."""
    workspace = uuid.uuid4()
    sealed = ring(key).seal("sk-live-value", secret_aad(workspace, "API_KEY"))
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, 'W')", (workspace,))
        conn.execute(
            "INSERT INTO secrets (id, workspace_id, name, key_id, nonce, ciphertext)"
            " VALUES (%s, %s, 'API_KEY', %s, %s, %s)",
            (uuid.uuid4(), workspace, sealed.key_id, sealed.nonce, sealed.ciphertext),
        )
    return workspace, sealed


def _stored(database: str) -> Sealed:
    with psycopg.connect(database) as conn:
        key_id, nonce, ciphertext = conn.execute(
            "SELECT key_id, nonce, ciphertext FROM secrets"
        ).fetchone()
    return Sealed(key_id, bytes(nonce), bytes(ciphertext))


def test_rotate_with_environment_keys_and_the_start_up_check(database: str, tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    migrated = flowdeck("migrate", env=_env(database, tmp_path, FLOWDECK_SECRET_KEY=old))
    assert migrated.returncode == 0, migrated.stderr
    workspace, _ = _seed_secret(database, old)
    aad = secret_aad(workspace, "API_KEY")
    # A worker with a key that cannot open the stored secret refuses to start, clearly
    refused = flowdeck("worker", env=_env(database, tmp_path, FLOWDECK_SECRET_KEY=new))
    assert refused.returncode == 3
    assert f"encrypted with key {key_id_of(parse_keys(old, source='t')[0])}" in refused.stderr
    assert "which is not among the configured keys" in refused.stderr
    # Rotation: the new key first, the old one after it
    rotated = flowdeck(
        "secrets", "rotate", env=_env(database, tmp_path, FLOWDECK_SECRET_KEY=f"{new},{old}")
    )
    assert rotated.returncode == 0, rotated.stderr
    new_id = ring(new).current_id
    assert (
        f"Re-encrypted 1 secrets and 0 webhook signing secrets under key {new_id}."
        in rotated.stdout
    )
    assert f'Key ids in use: {{"{new_id}": 1}}' in rotated.stdout
    stored = _stored(database)
    assert stored.key_id == new_id
    assert ring(new).open(stored, aad) == "sk-live-value"
    # Running it again changes nothing
    again = flowdeck(
        "secrets", "rotate", env=_env(database, tmp_path, FLOWDECK_SECRET_KEY=f"{new},{old}")
    )
    assert "Re-encrypted 0 secrets" in again.stdout
    assert _stored(database) == stored


def test_rotate_with_the_key_file(database: str, tmp_path: Path) -> None:
    env = _env(database, tmp_path, FLOWDECK_ENV="development")
    assert flowdeck("migrate", env=env).returncode == 0
    key_file = tmp_path / "secret.key"
    first = flowdeck("secrets", "rotate", env=env)  # makes the file, then a new key
    assert first.returncode == 0, first.stderr
    assert len(read_key_file(key_file)) == 2  # without --prune the old key stays readable
    current = read_key_file(key_file)[0]
    workspace, _ = _seed_secret(database, current)
    rotated = flowdeck("secrets", "rotate", "--prune", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "Re-encrypted 1 secrets" in rotated.stdout
    keys = read_key_file(key_file)
    assert len(keys) == 1  # pruned: the older keys no longer seal anything
    assert keys[0] != current
    stored = _stored(database)
    assert ring(keys[0]).open(stored, secret_aad(workspace, "API_KEY")) == "sk-live-value"
