"""Redaction of secret values from everything a run stores, announces or logs.

A run's nodes get the workspace's secrets in the clear; what leaves the node (step input
and output, errors, the run's output, events, log lines) goes through a ``Redactor`` first.
It replaces each secret's value, and its URL-encoded forms, with ``[secret:NAME]``, also
where an upstream echoed the value back inside a larger string. JSON values are redacted
on their JSON text (with the values' JSON-escaped forms), so keys and nested strings are
covered alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import orjson

# Values shorter than this are refused when set (see app.services.secrets.MIN_VALUE).
MIN_REDACTED = 4


def _forms(value: str) -> set[str]:
    return {value, quote(value, safe=""), quote_plus(value, safe="")}


class Redactor:
    """Replaces the values of a set of secrets wherever they appear."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        names: dict[str, str] = {}
        for name, value in sorted(secrets.items()):
            for form in _forms(value):
                if len(form) >= MIN_REDACTED:
                    names.setdefault(form, name)
        self._names = names
        # The same forms as they appear inside JSON text (escaped as json.dumps escapes).
        self._json_names = {
            json.dumps(form, ensure_ascii=False)[1:-1]: n for form, n in names.items()
        }
        self._text = self._pattern(names)
        self._json = self._pattern(self._json_names)

    @staticmethod
    def _pattern(forms: Mapping[str, str]) -> re.Pattern[str] | None:
        if not forms:
            return None
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(forms, key=len, reverse=True)
        return re.compile("|".join(re.escape(form) for form in ordered))

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, value: str) -> str:
        """The string with every secret replaced by ``[secret:NAME]``."""
        if self._text is None or not value:
            return value
        return self._text.sub(lambda m: f"[secret:{self._names[m.group()]}]", value)

    def value(self, value: Any) -> Any:
        """A JSON value with every secret replaced, in strings and object keys alike."""
        if self._json is None or value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value)
        encoded = json.dumps(value, ensure_ascii=False)
        redacted = self._json.sub(lambda m: f"[secret:{self._json_names[m.group()]}]", encoded)
        if redacted == encoded:
            return value
        try:
            return orjson.loads(redacted)
        except orjson.JSONDecodeError:  # a value that spans JSON syntax: keep none of it
            return "[redacted: the value contained a secret]"

    def stored(self, value: Any) -> Any:
        """The value redacted and made storable in JSONB (see ``storable``)."""
        return storable(self.value(value))


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """A JSON value PostgreSQL's JSONB accepts: NUL characters and lone surrogates in
    strings (and keys) become U+FFFD, NaN and infinities become null.

    Upstreams send such values (a JSON body with \\u0000, a float division by zero); refusing
    them would fail the step's write, not the step, and look like a crashing worker.
    """
    try:
        encoded = orjson.dumps(value)  # NaN/Infinity → null; raises on lone surrogates
    except (orjson.JSONEncodeError, TypeError):
        return _clean(value, 0)
    if b"\\u0000" not in encoded:
        return value if b"null" not in encoded else orjson.loads(encoded)
    return _clean(orjson.loads(encoded), 0)


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if depth > 1000:
        return "[too deeply nested to store]"
    if isinstance(value, dict):
        return {_clean(str(k), depth): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return value


NO_SECRETS = Redactor({})
