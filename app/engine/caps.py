"""The cap on what one step stores: its input or output, at most so many bytes of JSON.

An upstream can answer megabytes (a 5 MiB body is within the HTTP cap), a PDF can hold a
book; stored as they are, one step would bloat the steps table and the event log, and every
subscriber would read it again. ``cap_value`` keeps a value that fits as it is. Of one that
does not, it keeps the shape and the beginning: an object keeps every key, its small values
whole and its large ones cut to an equal share of the room; a list keeps its first items;
a string its first characters. Each cut ends with a marker saying how much was left out, so
nobody mistakes it for the whole:

- a string: ``"<first characters>…[truncated: N more characters]"``
- a list: a last item ``"[truncated: N more items]"``
- an object with too many keys to list: a key ``"…"`` with ``"[truncated: N more keys]"``
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

DEFAULT_MAX_BYTES = 1024 * 1024
STRING_MARKER = "…[truncated: {} more characters]"
LIST_MARKER = "[truncated: {} more items]"
OBJECT_MARKER = "[truncated: {} more keys]"
TRUNCATED_KEY = "…"
# Room kept for a marker (its text with a 10-digit count, quoted, and a separator).
MARKER_ROOM = 48
# Below this much room a value is not cut any further but replaced by its marker.
MIN_ROOM = 2 * MARKER_ROOM
# Nesting is not cut, only breadth: deeper than this a value is replaced by a marker.
MAX_DEPTH = 200


def size_of(value: Any) -> int:
    """Bytes of the value's compact JSON (what JSONB is given); non-JSON counts as its repr."""
    try:
        return len(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    except (orjson.JSONEncodeError, TypeError):
        return len(repr(value))


def cap_value(value: Any, max_bytes: int) -> Any:
    """``value`` when its JSON fits in ``max_bytes``, else a cut copy that fits, marked."""
    size = size_of(value)
    if size <= max_bytes:
        return value
    cut = _fit(value, size, max(max_bytes, MIN_ROOM), 0)
    # The cut fits by construction; should it not, the marker alone still says what happened.
    return cut if size_of(cut) <= max_bytes else STRING_MARKER.format(size)


async def cap_output(value: Any, settings: Any) -> Any:
    """``cap_value`` with the configured cap (``max_step_io_bytes``), for a node's output.

    Cutting a value of megabytes takes tens of milliseconds: it runs in a thread, so the
    worker's event loop (heartbeats, other runs' steps) keeps turning meanwhile.
    """
    max_bytes = int(getattr(settings, "max_step_io_bytes", DEFAULT_MAX_BYTES))
    if size_of(value) <= max_bytes:
        return value
    return await asyncio.to_thread(cap_value, value, max_bytes)


def _fit(value: Any, size: int, room: int, depth: int) -> Any:
    """A cut of ``value`` (``size`` bytes, more than ``room``) in at most ``room`` bytes."""
    if isinstance(value, str):
        return _fit_string(value, room)
    if depth < MAX_DEPTH and isinstance(value, dict):
        return _fit_object(value, room, depth)
    if depth < MAX_DEPTH and isinstance(value, list | tuple):
        return _fit_list(list(value), room, depth)
    return STRING_MARKER.format(size)


def _fit_string(text: str, room: int) -> str:
    """The longest beginning of ``text`` that fits in ``room`` bytes with its marker."""
    low, high = 0, min(len(text), room)
    best = STRING_MARKER.format(len(text))
    while low <= high:  # escapes and UTF-8 make bytes and characters differ: bisect
        middle = (low + high) // 2
        candidate = text[:middle] + STRING_MARKER.format(len(text) - middle)
        if size_of(candidate) <= room:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


def _fit_list(items: list[Any], room: int, depth: int) -> list[Any]:
    """The first items that fit whole, the next one cut into what is left, then a marker."""
    kept: list[Any] = []
    used = 2 + MARKER_ROOM  # the brackets, and the marker that follows a cut
    for index, item in enumerate(items):
        size = size_of(item)
        if used + size + 1 <= room:
            kept.append(item)
            used += size + 1
            continue
        left = room - used - 1
        if left >= MIN_ROOM:
            kept.append(_fit(item, size, left, depth + 1))  # marked inside
            index += 1
        if index < len(items):
            kept.append(LIST_MARKER.format(len(items) - index))
        return kept
    return kept


def _fit_object(value: dict[Any, Any], room: int, depth: int) -> dict[str, Any]:
    """Every key, the small values whole and the large ones cut to an equal share."""
    keys = {str(key): size_of(str(key)) + 2 for key in value}  # key, colon and comma
    sizes = {str(key): size_of(item) for key, item in value.items()}
    available = room - 2 - sum(keys.values())
    share = _equal_share(sorted(sizes.values()), available) if available > 0 else 0
    if share < MIN_ROOM:
        return _fit_entries(value, room, depth)  # too many keys to keep them all
    result: dict[str, Any] = {}
    for key, item in value.items():
        name = str(key)
        size = sizes[name]
        result[name] = item if size <= share else _fit(item, size, share, depth + 1)
    return result


def _equal_share(sizes: list[int], available: int) -> int:
    """The largest share s with sum(min(size, s)) <= available (sizes ascending)."""
    remaining = available
    for index, size in enumerate(sizes):
        share = remaining // (len(sizes) - index)
        if size > share:
            return share
        remaining -= size
    return available


def _fit_entries(value: dict[Any, Any], room: int, depth: int) -> dict[str, Any]:
    """The first entries that fit, as a list would keep its first items, then a marker."""
    pairs = _fit_list([[str(k), v] for k, v in value.items()], room, depth)
    result: dict[str, Any] = {}
    for pair in pairs:
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
            result[pair[0]] = pair[1]
    left = len(value) - len(result)
    if left:
        result[TRUNCATED_KEY] = OBJECT_MARKER.format(left)
    return result
