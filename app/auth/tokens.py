"""API token generation and hashing; tokens are shown once and stored as a hash."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "fdk_"


def generate_token() -> str:
    """A new random API token (256 bits of entropy)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored for a token (high-entropy tokens need no slow hash)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_token(value: str) -> bool:
    """Cheap shape check before touching the database."""
    return value.startswith(TOKEN_PREFIX) and 20 <= len(value) <= 200
