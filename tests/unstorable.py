"""The answer to a String argument PostgreSQL cannot store (NUL, a lone surrogate).

Every String argument of every operation is checked in one place (schema/strings.py),
before any resolver runs; these build the exact body tests expect (without locations).
"""

from __future__ import annotations

from typing import Any

NUL = "cannot contain a NUL character (U+0000)"
SURROGATE = "cannot contain a lone surrogate (U+D800 to U+DFFF); send valid Unicode"


def unstorable_error(owner: str, field: tuple[str | int, ...], problem: str) -> dict[str, Any]:
    """One top-level BAD_USER_INPUT error for ``field`` (argument path) of field ``owner``."""
    dotted = ".".join(str(part) for part in field)
    return {
        "message": f'Argument "{dotted}" of "{owner}" {problem}.',
        "extensions": {"code": "BAD_USER_INPUT", "reason": "INVALID", "field": list(field)},
    }


def unstorable(owner: str, field: tuple[str | int, ...], problem: str) -> dict[str, Any]:
    """The body of an operation refused for one such argument: no data, one error."""
    return {"data": None, "errors": [unstorable_error(owner, field, problem)]}


def problem_of(text: str) -> str:
    """NUL or SURROGATE, whichever the check reports first for ``text``."""
    return NUL if "\x00" in text else SURROGATE


def without_locations(body: dict[str, Any]) -> dict[str, Any]:
    """The body with its errors' (position-dependent) ``locations`` removed."""
    if "errors" not in body:
        return body
    return {
        **body,
        "errors": [{k: v for k, v in e.items() if k != "locations"} for e in body["errors"]],
    }
