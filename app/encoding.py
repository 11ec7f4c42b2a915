"""JSON for responses: orjson's speed, and no exception on text we send back.

orjson refuses lone surrogates (text that is not Unicode, which a client can send as a
``\\ud800`` escape and an error message may quote back) and integers past 64 bits. A
response must still go out: such strings get U+FFFD in place of each lone surrogate, and
such integers are written as they are (JSON has no limit on them).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_SURROGATE = re.compile("[\ud800-\udfff]")
_INT64 = range(-(2**63), 2**64)
# orjson refuses nesting deeper than this; a value that deep is not made encodable here.
MAX_DEPTH = 254


def dumps(value: Any) -> bytes:
    """The compact JSON of ``value``; orjson.JSONEncodeError only for unencodable types."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return orjson.dumps(_encodable(value, 0))


def _encodable(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, bool) or depth > MAX_DEPTH:
        return value
    if isinstance(value, int) and value not in _INT64:
        return orjson.Fragment(str(value).encode())
    if isinstance(value, dict):
        return {_encodable(k, depth): _encodable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(item, depth + 1) for item in value]
    return value
