"""Domain errors: expected input failures (user errors), access failures, and what counts
as the database being unavailable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import psycopg
from sqlalchemy import exc as sa_exc


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
    WORKFLOW_NOT_PUBLISHED = "WORKFLOW_NOT_PUBLISHED"
    INPUT_INVALID = "INPUT_INVALID"


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


def database_unavailable(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) says the database cannot serve right now.

    Refused or dropped connections, a terminated backend, a shutdown, a statement timeout,
    a serialization failure or deadlock (all psycopg OperationalErrors), an exhausted pool,
    and a session left unusable by one of those. Such a failure is the service's, not the
    caller's: retrying later can succeed. Programming errors are not in this set.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            psycopg.OperationalError | sa_exc.TimeoutError | sa_exc.PendingRollbackError,
        ):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def database_error_summary(error: BaseException) -> dict[str, str]:
    """What a log line may say about a database failure: its class and SQLSTATE, no text.

    The driver's message quotes the server, host names, SQL and sometimes the values of a
    row; the class and code are enough to tell an outage from a timeout from a deadlock.
    """
    original: BaseException = error
    if isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
        original = error.orig
    summary = {"error_class": type(original).__name__}
    sqlstate = getattr(original, "sqlstate", None)
    if isinstance(sqlstate, str):
        summary["sqlstate"] = sqlstate
    return summary
