"""Opaque global IDs: ``base64url("Kind:key")``; clients never parse them."""

from __future__ import annotations

import base64
import binascii
import uuid

from app.errors import NotFound


def encode_id(kind: str, key: uuid.UUID | str) -> str:
    """The opaque ID of an object of ``kind`` with key ``key``."""
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).decode().rstrip("=")


def decode_key(kind: str, value: str, what: str | None = None) -> str:
    """The key inside an ID of ``kind``; anything else reads as not found."""
    try:
        if len(value) > 200:
            raise ValueError("too long")
        padded = value + "=" * (-len(value) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError, binascii.Error) as error:
        raise NotFound(what or kind) from error
    prefix = kind + ":"
    if not text.startswith(prefix):
        raise NotFound(what or kind)
    return text[len(prefix) :]


def decode_id(kind: str, value: str, what: str | None = None) -> uuid.UUID:
    """The UUID inside an ID of ``kind``; anything else reads as not found."""
    key = decode_key(kind, value, what)
    try:
        return uuid.UUID(key)
    except ValueError as error:
        raise NotFound(what or kind) from error


def decode_any(value: str) -> tuple[str, str] | None:
    """The kind and key inside any ID; None when it is not one."""
    try:
        if len(value) > 300:
            return None
        padded = value + "=" * (-len(value) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError, binascii.Error):
        return None
    kind, separator, key = text.partition(":")
    return (kind, key) if separator and kind and key else None
