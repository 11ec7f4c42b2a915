"""Checks of short human text inputs: names, descriptions, messages."""

from __future__ import annotations

import unicodedata

from app.errors import ErrorCode, FieldError


def clean_name(
    value: str, field: tuple[str, ...], *, max_length: int = 200
) -> tuple[str, list[FieldError]]:
    """Trim a name and report it when empty, too long or containing control characters."""
    name = value.strip()
    errors: list[FieldError] = []
    if not name:
        errors.append(FieldError(field, ErrorCode.INVALID, "Must not be blank."))
    elif len(name) > max_length:
        errors.append(FieldError(field, ErrorCode.INVALID, f"At most {max_length} characters."))
    elif _has_bad_characters(name, allow_newlines=False):
        errors.append(FieldError(field, ErrorCode.INVALID, "Must not contain control characters."))
    return name, errors


def check_text(value: str, field: tuple[str, ...], *, max_length: int) -> list[FieldError]:
    """Report free text (description, message) that is too long or not storable."""
    if len(value) > max_length:
        return [FieldError(field, ErrorCode.INVALID, f"At most {max_length} characters.")]
    if _has_bad_characters(value, allow_newlines=True):
        return [FieldError(field, ErrorCode.INVALID, "Must not contain control characters.")]
    return []


def _has_bad_characters(value: str, *, allow_newlines: bool) -> bool:
    for char in value:
        if allow_newlines and char in "\n\r\t":
            continue
        category = unicodedata.category(char)
        # Cc: control characters (NUL included); Cs: lone surrogates PostgreSQL cannot store.
        if category in ("Cc", "Cs"):
            return True
    return False


def storable(value: str) -> bool:
    """True when PostgreSQL can store the text (no NUL, no lone surrogate)."""
    return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
