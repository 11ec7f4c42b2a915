"""Structured logging: one JSON object a line, with the request id of the current request."""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from typing import Any

import structlog

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return _request_id.get()


def bind_request_id(request_id: str) -> object:
    """Make ``request_id`` current; returns a token for ``reset_request_id``."""
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return _request_id.set(request_id)


def reset_request_id(token: object) -> None:
    """Forget the current request id."""
    structlog.contextvars.unbind_contextvars("request_id")
    _request_id.reset(token)  # type: ignore[arg-type]


# PostgreSQL's DETAIL line quotes the row or key behind an error ("Key (token)=(…) already
# exists", "Failing row contains (…)"): credentials and run data. Logs keep the rest.
_DATABASE_DETAIL = re.compile(r"^(\s*DETAIL:).*$", re.MULTILINE)


def scrub_database_details(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: hide the values PostgreSQL quotes in error details."""
    for key in ("exception", "event"):
        value = event.get(key)
        if isinstance(value, str) and "DETAIL:" in value:
            event[key] = _DATABASE_DETAIL.sub(r"\1 [hidden]", value)
    return event


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Route stdlib and structlog logs through one structured renderer on stderr."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # pgserver narrates every pg_ctl call at INFO; its problems still come through.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # Our own middleware logs each request with its id; uvicorn's access log would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
