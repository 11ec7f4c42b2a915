"""Structured logging with the request id of the current request: one JSON object a line in
production (or when asked), readable lines on a terminal."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from typing import Any

import structlog

from app.errors import database_error_summary, database_unavailable

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return _request_id.get()


def bind_request_id(request_id: str) -> Token[str | None]:
    """Make ``request_id`` current; returns a token for ``reset_request_id``."""
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return _request_id.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    """Forget the current request id."""
    structlog.contextvars.unbind_contextvars("request_id")
    _request_id.reset(token)


# PostgreSQL's DETAIL line quotes the row or key behind an error ("Key (token)=(…) already
# exists", "Failing row contains (…)"): credentials and run data. Logs keep the rest.
_DATABASE_DETAIL = re.compile(r"^(\s*DETAIL:).*$", re.MULTILINE)


def scrub_database_details(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: hide the values PostgreSQL quotes in error details."""
    for key in ("exception", "event"):
        value = event.get(key)
        if isinstance(value, str) and "DETAIL:" in value:
            event[key] = _DATABASE_DETAIL.sub(r"\1 [hidden]", value)
    return event


def drop_color_message(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: drop uvicorn's ``color_message`` (the message with ANSI codes).

    uvicorn passes it as an ``extra`` for its own coloured formatter; ours renders ``event``.
    """
    event.pop("color_message", None)
    return event


def wants_json(json: bool | None, *, production: bool) -> bool:
    """JSON when asked; unset: in production, or when stderr is not a terminal."""
    if json is not None:
        return json
    return production or not sys.stderr.isatty()


class SummarizeDatabaseFailures(logging.Filter):
    """Make any log line at INFO or above say what a database failure was, not its text.

    Libraries log an outage their own way (SQLAlchemy's pool, psycopg's pool, uvicorn, the
    queue): a traceback or the driver's message, which quotes SQL, host names and rows. On
    our handler such a record keeps its message and gains ``error_class`` and ``sqlstate``;
    the exception's text and traceback stay at DEBUG only.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        failure = record.exc_info[1] if record.exc_info else None
        if failure is not None and database_unavailable(failure):
            record.exc_info = None
            record.exc_text = None
            record.__dict__.update(database_error_summary(failure))
        if isinstance(record.args, tuple) and any(
            isinstance(arg, BaseException) and database_unavailable(arg) for arg in record.args
        ):
            record.args = tuple(_summary_text(arg) for arg in record.args)
        return True


def _summary_text(value: object) -> object:
    if isinstance(value, BaseException) and database_unavailable(value):
        return " ".join(f"{k}={v}" for k, v in database_error_summary(value).items())
    return value


def log_database_unavailable(
    logger: logging.Logger, message: str, error: BaseException, **extra: Any
) -> None:
    """One WARNING line for a database failure (its class and SQLSTATE); its text at DEBUG."""
    logger.warning(message, extra={**database_error_summary(error), **extra})
    logger.debug(message, exc_info=(type(error), error, error.__traceback__), extra=extra)


def configure_logging(
    level: str = "INFO", json: bool | None = True, *, production: bool = False
) -> None:
    """Route stdlib and structlog logs (uvicorn's too) through one renderer on stderr."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if wants_json(json, production=production)
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_database_details,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(SummarizeDatabaseFailures())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # pgserver narrates every pg_ctl call at INFO, and Alembic its dialect before each
    # migration run; their problems still come through (app.migrate says what was applied).
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    # psycopg's pool warns of every connection an outage breaks and every reconnection that
    # fails: app.outage says once that the database is gone, and once that it is back.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    # Our own middleware logs each request with its id; uvicorn's access log would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
