"""Cron rules: parsing a 5-field cron expression and walking its fire times in a time zone.

Pure functions of (expression, zone, time): no database, no clock of their own.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from cronsim import CronSim, CronSimError

from app.errors import ErrorCode, FieldError

MAX_CRON = 200
# upcoming() lists fire times within this far: the rarest cron (a Monday 29 February) would
# walk some 1,300 years of Februaries, over 100 ms of the event loop, for fifty of them.
UPCOMING_HORIZON = timedelta(days=50 * 366)
# A catch-up fire reports how many earlier fire times it stands for, up to this many.
MAX_MISSED = 1000
CRON_FIELDS = 5
# How far back to look for the latest fire time of a schedule down for long: growing windows,
# so a frequent schedule walks few times and a rare one (Feb 29) is still found.
LOOKBACKS = tuple(timedelta(days=days) for days in (1 / 24, 1, 32, 366, 8 * 366))
# Printable ASCII, spaces and tabs: anything else (NUL, other controls, non-ASCII) is refused
# before cronsim sees it.
CRON_CHARACTERS = re.compile(r"[\t -~]*")
# Names in the tz database that are not places: the host's own zone, and placeholders.
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@dataclass(frozen=True, slots=True)
class DueFire:
    """The fire time a tick acts on, and how many earlier due times it passes over."""

    fire_at: datetime
    missed: int


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) - NOT_ZONES


def _cron_error(message: str) -> FieldError:
    return FieldError(("input", "cron"), ErrorCode.INVALID_CRON, message)


def _never_fires(fields: list[str]) -> bool:
    """Whether a refused expression is only refused because its days fit none of its months."""
    anchor = datetime(2000, 1, 1, tzinfo=UTC)
    try:
        CronSim(" ".join([*fields[:3], "*", fields[4]]), anchor)
        CronSim(f"0 0 * {fields[3]} *", anchor)
    except CronSimError:
        return False
    return True


def check_cron(cron: str) -> tuple[str, list[FieldError]]:
    """The expression with its whitespace normalised, and what is wrong with it."""
    if len(cron) > MAX_CRON:
        return cron, [_cron_error(f"At most {MAX_CRON} characters.")]
    if not CRON_CHARACTERS.fullmatch(cron):
        return cron, [_cron_error("Only printable ASCII characters, spaces and tabs.")]
    fields = cron.split()
    if len(fields) != CRON_FIELDS:
        return cron, [
            _cron_error(
                "A cron expression has 5 fields (minute hour day-of-month month day-of-week); "
                f"this one has {len(fields)}."
            )
        ]
    clean = " ".join(fields)
    try:
        iterator = CronSim(clean, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as error:
        if _never_fires(fields):
            return clean, [_cron_error("This expression never fires.")]
        return clean, [_cron_error(f"Not a valid cron expression: {str(error).lower()}.")]
    if next(iterator, None) is None:
        return clean, [_cron_error("This expression never fires.")]
    return clean, []


def check_timezone(timezone: str) -> list[FieldError]:
    """What is wrong with a time zone name (it must be an IANA name such as Europe/Berlin)."""
    if timezone in _zones():
        return []
    return [
        FieldError(
            ("input", "timezone"),
            ErrorCode.INVALID_TIMEZONE,
            "Not an IANA time zone name; use one such as Europe/Berlin or UTC.",
        )
    ]


def fire_times(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The fire times strictly after ``after``, in UTC, strictly increasing.

    cronsim works on local wall time like Debian cron: a time inside a spring-forward gap
    fires once right after the jump, a fixed time in a fall-back's repeated hour fires once
    (its first occurrence). Two gap times that land on the same instant are one fire.
    """
    last = after
    for local in CronSim(cron, after.astimezone(ZoneInfo(timezone))):
        moment = local.astimezone(UTC)
        # Started inside a repeated hour, cronsim may give that hour's first occurrence,
        # which is already past: never step back.
        if moment > last:
            last = moment
            yield moment


def next_fire_time(cron: str, timezone: str, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after`` (None when it never fires again)."""
    return next(fire_times(cron, timezone, after), None)


def latest_fire_time(cron: str, timezone: str, now: datetime) -> datetime | None:
    """The most recent fire time at or before ``now`` (None if none in the last 8 years)."""
    # Only forward walks: cronsim's backward walk can loop forever around some DST changes
    # (Pacific/Chatham's, for "0 */2 * * *"), and disagrees with the forward one elsewhere.
    for lookback in LOOKBACKS:
        latest = None
        for moment in fire_times(cron, timezone, now - lookback):
            if moment > now:
                break
            latest = moment
        if latest is not None:
            return latest
    return None


def due_fire(cron: str, timezone: str, *, since: datetime, now: datetime) -> DueFire | None:
    """The most recent fire time in [since, now] and how many due times before it were missed."""
    latest: datetime | None = None
    due = 0
    for moment in fire_times(cron, timezone, since - timedelta(seconds=1)):
        if moment > now:
            break
        latest, due = moment, due + 1
        if due > MAX_MISSED + 1:  # down for long: stop counting, look back from now instead
            return DueFire(
                fire_at=latest_fire_time(cron, timezone, now) or latest, missed=MAX_MISSED
            )
    return DueFire(fire_at=latest, missed=due - 1) if latest is not None else None


def upcoming_times(cron: str, timezone: str, *, now: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times after ``now`` within the 50-year horizon, in UTC."""
    times = fire_times(cron, timezone, now)
    within = itertools.takewhile(lambda moment: moment <= now + UPCOMING_HORIZON, times)
    return list(itertools.islice(within, count))
