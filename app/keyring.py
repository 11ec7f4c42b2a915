"""Encryption at rest: AES-256-GCM under a keyring, each ciphertext tagged with its key's id.

The first key of the ring seals; every key opens. A key's id is a fingerprint of the key
(not a name an operator picks), so a row sealed under key X can only ever be opened by X,
and a wrong key is recognised by its id before any decryption is tried. Associated data
binds a ciphertext to its row (workspace and secret name), so a ciphertext copied to
another row or workspace fails to open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.settings import Settings

KEY_BYTES = 32
NONCE_BYTES = 12
KEY_FILE = "secret.key"


class KeyringError(Exception):
    """The configured keys are missing, malformed, or do not match the stored secrets."""


class DecryptError(Exception):
    """A ciphertext could not be opened: unknown key, tampered data, or moved to another row."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """A ciphertext with its nonce and the id of the key that sealed it."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


def key_id_of(key: bytes) -> str:
    """The key's id: a fingerprint that identifies the key without revealing it."""
    return hashlib.sha256(b"flowdeck-secret-key-id\x00" + key).hexdigest()[:16]


def generate_key() -> str:
    """A new random key, as the base64 text FLOWDECK_SECRET_KEY takes."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def parse_keys(text: str, *, source: str) -> list[bytes]:
    """The keys in ``text`` (base64, separated by commas or whitespace), first one current."""
    parts = [part for part in re.split(r"[\s,]+", text.strip()) if part]
    if not parts:
        raise KeyringError(f"{source} holds no key.")
    keys: list[bytes] = []
    for number, part in enumerate(parts, start=1):
        try:
            padded = part + "=" * (-len(part) % 4)
            key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise KeyringError(
                f"{source}: key {number} is not base64 of {KEY_BYTES} bytes "
                "(make one with `flowdeck secrets generate-key`)."
            )
        keys.append(key)
    return keys


def secret_aad(workspace_id: uuid.UUID, name: str) -> bytes:
    """Associated data of a workspace secret: its workspace and name."""
    return f"flowdeck:secret:{workspace_id}:{name}".encode()


def webhook_aad(workspace_id: uuid.UUID, webhook_id: uuid.UUID) -> bytes:
    """Associated data of a webhook's signing secret: its workspace and webhook."""
    return f"flowdeck:webhook:{workspace_id}:{webhook_id}".encode()


class Keyring:
    """The keys of this process: the first seals, all open; re-read from a key file on a miss."""

    def __init__(self, keys: list[bytes], *, path: Path | None = None) -> None:
        if not keys:
            raise KeyringError("A keyring needs at least one key.")
        self.path = path
        self._set(keys)

    def _set(self, keys: list[bytes]) -> None:
        self._mtime = self._file_mtime()
        self._ciphers = {key_id_of(key): AESGCM(key) for key in keys}
        self.current_id = key_id_of(keys[0])

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys, the current one first."""
        return list(self._ciphers)

    def _file_mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime if self.path is not None else None
        except OSError:
            return None

    def seal(self, plaintext: str, aad: bytes) -> Sealed:
        """Encrypt under the current key with a fresh random nonce."""
        if self.path is not None and self._file_mtime() != self._mtime:
            self.reload()  # rotated by `flowdeck secrets rotate`: seal under the new key
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[self.current_id]
        return Sealed(self.current_id, nonce, cipher.encrypt(nonce, plaintext.encode(), aad))

    def open(self, sealed: Sealed, aad: bytes) -> str:
        """Decrypt; DecryptError when the key is unknown or the data or its row is wrong."""
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None and self.path is not None:
            # Another process may have rotated the key file since this one read it.
            self.reload()
            cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise DecryptError(f"no key with id {sealed.key_id} is configured")
        try:
            return cipher.decrypt(sealed.nonce, sealed.ciphertext, aad).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError) as error:
            raise DecryptError(
                f"the ciphertext does not open with key {sealed.key_id} "
                "(tampered, or moved from another row)"
            ) from error

    def reload(self) -> None:
        """Read the key file again (keys rotated by `flowdeck secrets rotate`)."""
        if self.path is not None and self.path.exists():
            self._set(parse_keys(self.path.read_text(), source=str(self.path)))

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        """FLOWDECK_SECRET_KEY; else, in development or embedded, the data directory's key file."""
        if settings.secret_key is not None:
            return cls(
                parse_keys(settings.secret_key.get_secret_value(), source="FLOWDECK_SECRET_KEY")
            )
        if not (settings.development or settings.embedded):
            raise KeyringError(
                "FLOWDECK_SECRET_KEY is not set. In production with an external database every "
                "process must share one key: make one with `flowdeck secrets generate-key`."
            )
        path = Path(settings.data_dir) / KEY_FILE
        if not path.exists():
            create_key_file(path)
        return cls(parse_keys(path.read_text(), source=str(path)), path=path)


def create_key_file(path: Path) -> None:
    """Generate the key file unless it exists (processes starting together agree on one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(generate_key() + "\n")
    try:
        os.link(temporary, path)  # fails when another process made it first: keep theirs
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)


def write_key_file(path: Path, keys: list[str]) -> None:
    """Write keys (current first) to ``path``, readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(keys) + "\n")
    os.replace(temporary, path)


def read_key_file(path: Path) -> list[str]:
    """The keys of a key file as text, current first."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
