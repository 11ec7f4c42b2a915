"""Riding out database outages: wait with a capped, jittered backoff, then carry on.

Background work (a worker's loops, a run's writes, the leases of runs driven in an API
process) does not give up when the database goes away: ``ride_out`` repeats an operation
while it fails for want of the database (``app.errors.database_unavailable``) and returns
its result once it succeeds. Every failure and success is told to the process's
``DatabaseWatch``, which logs ONE line when the database is lost (WARNING, with the error's
class and SQLSTATE only) and one when it is back (INFO), sets the
``flowdeck_database_reachable`` gauge, and says how long ago it came back (a worker waits a
while after an outage before it judges other workers stalled: they were cut off too).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Gauge

from app.errors import database_error_summary, database_unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

DATABASE_REACHABLE = Gauge(
    "flowdeck_database_reachable",
    "1 while this process reaches its database (its last database work succeeded), else 0; "
    "the processes of one serve --processes port: 0 when any of them does not.",
    multiprocess_mode="livemin",
)
DATABASE_REACHABLE.set(1)

# Waits between tries: doubling from FIRST_DELAY up to MAX_DELAY, each drawn between half
# and all of that (so processes cut off together do not come back in step).
FIRST_DELAY = 0.1
MAX_DELAY = 2.0
# An outage is over once work succeeds this long after the last failure.
SETTLE_SECONDS = 3.0


class Backoff:
    """Capped exponential delays with jitter."""

    def __init__(self, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> None:
        self.first = first
        self.cap = cap
        self.tries = 0

    def next(self) -> float:
        """The next delay, in seconds."""
        ceiling = min(self.cap, self.first * 2 ** min(self.tries, 30))
        self.tries += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not a secret)


class DatabaseWatch:
    """Whether this process reaches its database, as its work last found it.

    ``reachable`` follows every outcome at once (readiness). The log follows outages: one
    WARNING when work first fails, one INFO once work has succeeded ``settle_seconds``
    after the last failure (connections terminated every few hundred milliseconds are
    one outage, not dozens of lines).
    """

    def __init__(self, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.settle_seconds = settle_seconds
        self.reachable = True
        self.outage = False
        self._last_failure = -math.inf
        self._lost_at = -math.inf
        self._back_at = -math.inf

    def failed(self, error: BaseException) -> None:
        """Work failed for want of the database (the first failure logs the outage)."""
        now = time.monotonic()
        self._last_failure = now
        self.reachable = False
        DATABASE_REACHABLE.set(0)
        if not self.outage:
            self.outage = True
            self._lost_at = now
            log.warning("database unreachable", extra=database_error_summary(error))

    def succeeded(self) -> None:
        """Work reached the database (once settled after an outage, logs its end)."""
        if not self.reachable:
            self.reachable = True
            DATABASE_REACHABLE.set(1)
        if not self.outage:
            return
        now = time.monotonic()
        if now - self._last_failure < self.settle_seconds:
            return
        self.outage = False
        self._back_at = now
        log.info("database reachable again", extra={"down_seconds": round(now - self._lost_at, 1)})

    def seconds_since_back(self) -> float:
        """How long since the last outage ended (0 during one; infinite without one)."""
        if self.outage:
            return 0.0
        return time.monotonic() - self._back_at


# The process's one view of its database (a process has one database).
DATABASE = DatabaseWatch()


async def ride_out(operation: Callable[[], Awaitable[T]], *, watch: DatabaseWatch = DATABASE) -> T:
    """``operation()``'s result, repeated with backoff while the database is unavailable.

    Other errors are raised at once; so is cancellation, during a try or a wait.
    """
    backoff = Backoff()
    while True:
        try:
            result = await operation()
        except Exception as error:
            if not database_unavailable(error):
                raise
            watch.failed(error)
            log.debug("database unavailable; trying again", exc_info=True)
            await asyncio.sleep(backoff.next())
            continue
        watch.succeeded()
        return result


async def every(
    seconds: float,
    work: Callable[[], Awaitable[object]],
    what: str,
    *,
    logger: logging.Logger = log,
    watch: DatabaseWatch = DATABASE,
) -> None:
    """Do ``work`` every ``seconds``, forever; only cancellation ends it.

    After a database failure it tries again after a backoff instead (the watch logs the
    outage once); any other failure is logged as ``"<what> failed"`` and waits its turn.
    """
    backoff = Backoff()
    while True:
        try:
            await work()
        except Exception as error:
            if database_unavailable(error):
                watch.failed(error)
                await asyncio.sleep(backoff.next())
                continue
            logger.exception("%s failed", what)
        else:
            watch.succeeded()
        backoff = Backoff()
        await asyncio.sleep(seconds)
