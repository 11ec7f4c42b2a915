"""The stored step cap: values that fit stay as they are; others are cut, marked, and fit."""

from __future__ import annotations

import json

import orjson
import pytest

from app.engine.caps import (
    LIST_MARKER,
    OBJECT_MARKER,
    STRING_MARKER,
    TRUNCATED_KEY,
    cap_output,
    cap_value,
    size_of,
)
from app.engine.redact import Redactor
from app.settings import Settings

MIB = 1024 * 1024


def test_a_value_that_fits_is_returned_as_it_is() -> None:
    value = {"status": 200, "body": "x" * (MIB - 40)}
    assert size_of(value) <= MIB

    assert cap_value(value, MIB) is value


def test_a_huge_body_is_cut_and_the_small_fields_stay_whole() -> None:
    # Given an HTTP output whose body is 5 MiB
    value = {"status": 200, "headers": {"content-type": "text/plain"}, "body": "x" * (5 * MIB)}
    # When it is capped at 1 MiB
    capped = cap_value(value, MIB)
    # Then status and headers are whole, and the body is its beginning plus a marker
    assert capped["status"] == 200
    assert capped["headers"] == {"content-type": "text/plain"}
    kept = len(capped["body"]) - len(STRING_MARKER.format(5 * MIB))
    assert capped["body"] == "x" * kept + STRING_MARKER.format(5 * MIB - kept)
    assert MIB - 64 <= size_of(capped) <= MIB


def test_a_long_list_keeps_its_first_items_then_says_how_many_more() -> None:
    items = [{"id": i, "name": f"item {i}"} for i in range(100_000)]

    capped = cap_value(items, MIB)

    kept = len(capped) - 1
    assert capped[:kept] == items[:kept]
    assert capped[-1] == LIST_MARKER.format(100_000 - kept)
    assert MIB - 200 <= size_of(capped) <= MIB


def test_an_object_of_too_many_keys_keeps_the_first_then_says_how_many_more() -> None:
    value = {f"k{i}": "v" * 100 for i in range(50_000)}

    capped = cap_value(value, MIB)

    kept = [k for k in capped if k != TRUNCATED_KEY]
    assert kept == list(value)[: len(kept)]
    assert all(capped[k] == value[k] for k in kept)
    assert capped[TRUNCATED_KEY] == OBJECT_MARKER.format(50_000 - len(kept))
    assert size_of(capped) <= MIB


def test_large_values_share_the_room_equally_and_small_ones_stay() -> None:
    value = {"a": "a" * 800_000, "b": "b" * 800_000, "n": 1}

    capped = cap_value(value, MIB)

    assert capped["n"] == 1
    assert capped["a"].startswith("a" * 500_000)
    assert capped["b"].startswith("b" * 500_000)
    assert capped["a"].endswith(" more characters]")
    assert capped["b"].endswith(" more characters]")
    assert abs(len(capped["a"]) - len(capped["b"])) <= 1
    assert size_of(capped) <= MIB


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\n" * (3 * MIB), id="escaped-newlines"),
        pytest.param("\u00e9" * (3 * MIB), id="two-byte-utf8"),
        pytest.param("\U0001f600" * MIB, id="four-byte-utf8"),
        pytest.param("\x01" * MIB, id="six-byte-escapes"),
    ],
)
def test_strings_are_measured_in_encoded_bytes_not_characters(text: str) -> None:
    capped = cap_value({"body": text}, MIB)

    assert size_of(capped) <= MIB
    assert size_of(capped) >= MIB - 64
    kept = capped["body"].split("…[truncated")[0]
    assert text.startswith(kept)
    assert capped["body"] == kept + STRING_MARKER.format(len(text) - len(kept))


def test_deep_nesting_is_kept_and_only_the_end_is_cut() -> None:
    value = json.loads("[" * 150 + json.dumps("z" * (2 * MIB)) + "]" * 150)

    capped = cap_value(value, MIB)

    inner = capped
    for _ in range(150):
        assert isinstance(inner, list)
        assert len(inner) == 1  # the one item, cut; no "0 more items" marker
        inner = inner[0]
    assert inner.startswith("z" * 1000)
    assert inner.endswith(" more characters]")
    assert size_of(capped) <= MIB


def test_every_cap_fits_whatever_the_limit() -> None:
    value = {
        "list": [{"n": i, "s": "s" * i} for i in range(2000)],
        "text": "t" * 300_000,
        "nested": {"a": {"b": ["c" * 100_000] * 5}},
    }
    for limit in (1024, 4096, 65_536, 300_000, 1_000_000):
        capped = cap_value(value, limit)
        assert size_of(capped) <= limit, limit
        orjson.dumps(capped)  # storable JSON


async def test_the_setting_is_the_cap() -> None:
    settings = Settings(max_step_io_bytes=4096)  # type: ignore[call-arg]

    capped = await cap_output({"body": "x" * 10_000}, settings)

    assert size_of(capped) <= 4096
    assert capped["body"].endswith(" more characters]")
    assert Settings().max_step_io_bytes == MIB  # type: ignore[call-arg]


@pytest.mark.parametrize("kept", [4, 10, 19])
def test_a_secret_cut_at_the_cap_leaves_no_start_of_itself_after_redaction(kept: int) -> None:
    # Given an upstream body that echoes a secret right where the cap cuts it
    secret = "sk-live-0123456789abcdef"
    filler = "x" * 2000
    body = {"body": filler + secret + "y" * 10_000}
    capped = body
    for limit in range(2000, 3000):
        capped = cap_value(body, limit)
        if capped["body"].startswith(filler + secret[:kept] + "…"):
            break
    assert capped["body"].startswith(filler + secret[:kept] + "…"), "no limit cut it there"
    # When the capped output is redacted for storage
    stored = Redactor({"API_KEY": secret}).stored(capped)
    # Then the secret's start is replaced by its placeholder, the marker kept
    assert stored["body"].startswith(filler + "[secret:API_KEY]…[truncated: ")
    assert secret[:4] not in stored["body"]
