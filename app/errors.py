"""Domain errors: expected input failures (user errors) and access failures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """Machine-readable codes of expected failures, shown to clients as ``UserErrorCode``."""

    INVALID = "INVALID"
    NOT_UNIQUE = "NOT_UNIQUE"
    VERSION_CONFLICT = "VERSION_CONFLICT"
    GRAPH_INVALID = "GRAPH_INVALID"
    NOT_FOUND = "NOT_FOUND"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    INVALID_CRON = "INVALID_CRON"
    INVALID_TIMEZONE = "INVALID_TIMEZONE"
    LAST_OWNER = "LAST_OWNER"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One expected failure, pointing at the input field that caused it."""

    field: tuple[str, ...] | None
    code: ErrorCode
    message: str


class InputErrors(Exception):
    """Raised by services when the input cannot be accepted; nothing was written."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = list(errors)

    @classmethod
    def single(cls, field: Sequence[str] | None, code: ErrorCode, message: str) -> InputErrors:
        """An InputErrors with one error."""
        return cls([FieldError(tuple(field) if field is not None else None, code, message)])


class AccessError(Exception):
    """Base of the top-level errors: not signed in, not allowed, not found."""

    code = "INTERNAL_SERVER_ERROR"


class Unauthenticated(AccessError):
    """No valid credentials were given."""

    code = "UNAUTHENTICATED"

    def __init__(
        self, message: str = "Sign in with an API token: Authorization: Bearer <token>."
    ) -> None:
        super().__init__(message)


class Forbidden(AccessError):
    """The caller can see the object but their role does not allow the action."""

    code = "FORBIDDEN"

    def __init__(self, message: str = "Your role in this workspace does not allow this.") -> None:
        super().__init__(message)


class NotFound(AccessError):
    """The object does not exist, or belongs to a workspace the caller is not in."""

    code = "NOT_FOUND"

    def __init__(self, what: str = "Object") -> None:
        super().__init__(f"{what} not found.")


# A database failure (outage, timeout, exhausted pool) as every client sees it: this code,
# this message and the request id; never the driver's text. HTTP answers 503 + Retry-After.
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
UNAVAILABLE_MESSAGE = (
    "The service cannot reach its database right now. Retry shortly; "
    "quote the request id if it persists."
)
