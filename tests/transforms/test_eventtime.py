import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from liveagg.transforms.eventtime import (
    MAX_US,
    MIN_US,
    EventTimeError,
    _from_iso,
    _from_iso_strict,
    parser,
    rfc3339,
)
from tests.support.eventtime_cases import ISO_CASES, Instant
from tests.support.eventtime_cases import micros as expected_micros

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1_000_000


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("epoch_s", 1357034400, micros(2013, 1, 1, 10)),
        ("epoch_s", 1357034400.5, micros(2013, 1, 1, 10) + 500_000),
        ("epoch_ms", 1357034400123, micros(2013, 1, 1, 10) + 123_000),
        ("epoch_us", 1357034400123456, micros(2013, 1, 1, 10) + 123_456),
        ("iso8601", "2013-01-01T10:00:00Z", micros(2013, 1, 1, 10)),
        ("iso8601", "2013-01-01T12:00:00+02:00", micros(2013, 1, 1, 10)),
        ("iso8601", "2013-01-01T10:00:00.25Z", micros(2013, 1, 1, 10) + 250_000),
        ("iso8601", "2013-01-01 10:00:00", micros(2013, 1, 1, 10)),
        (None, "2013-01-01T10:00:00Z", micros(2013, 1, 1, 10)),
        (None, 1357034400, micros(2013, 1, 1, 10)),
    ],
)
def test_formats(fmt: str | None, value: object, expected: int) -> None:
    assert parser("ts", fmt)(value) == expected


@pytest.mark.parametrize(
    ("fmt", "value", "match"),
    [
        ("epoch_s", True, "boolean"),
        ("epoch_ms", "soon", "not a number"),
        ("epoch_ms", "1357034400000", "not a number"),
        ("epoch_s", float("nan"), "not finite"),
        ("iso8601", 1357034400, "not an ISO 8601 string"),
        ("iso8601", "yesterday", "not ISO 8601"),
        (None, "13/01/2013", "not ISO 8601"),
        (None, [1], "not a number"),
    ],
)
def test_invalid(fmt: str | None, value: object, match: str) -> None:
    with pytest.raises(EventTimeError, match=match) as info:
        parser("ts", fmt)(value)
    assert info.value.reason == "invalid_event_time"
    assert "ts=" in info.value.detail


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("epoch_s", 10**30),
        ("epoch_s", 1.7e308),  # round() of the scaled float would fail
        ("epoch_s", -1.7e308),
        ("epoch_ms", 253402300800000),  # 10000-01-01T00:00:00Z
        ("epoch_us", MIN_US - 1),
        ("iso8601", "0001-01-01T00:00:00+01:00"),  # a valid date, an hour before year 1
        ("iso8601", "9999-12-31T23:59:59-01:00"),
        (None, "9999-12-31T23:30:00-00:31"),
    ],
)
def test_out_of_range(fmt: str | None, value: object) -> None:
    with pytest.raises(EventTimeError, match="out of range") as info:
        parser("ts", fmt)(value)
    assert info.value.reason == "event_time_out_of_range"
    assert "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z" in info.value.detail


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("epoch_us", MIN_US, MIN_US),
        ("epoch_us", MAX_US, MAX_US),
        ("epoch_ms", 253402300799999, MAX_US - 999),
        ("iso8601", "0001-01-01T00:00:00Z", MIN_US),
        ("iso8601", "9999-12-31T23:59:59.999999Z", MAX_US),
        ("iso8601", "0001-01-01T00:59:00+00:59", MIN_US),
    ],
)
def test_edges_of_the_range(fmt: str, value: object, expected: int) -> None:
    assert parser("ts", fmt)(value) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (micros(2013, 1, 1, 10), "2013-01-01T10:00:00Z"),
        (micros(2013, 1, 1, 10) + 500_000, "2013-01-01T10:00:00.500Z"),
        (micros(2013, 1, 1, 10) + 7, "2013-01-01T10:00:00.000007Z"),
        (-1_000_000, "1969-12-31T23:59:59Z"),
        (MIN_US, "0001-01-01T00:00:00Z"),  # four digits, whatever strftime does
        (
            (datetime(99, 1, 25, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1),
            "0099-01-25T00:00:00Z",
        ),
        (MAX_US, "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_rfc3339(value: int, text: str) -> None:
    assert rfc3339(value) == text


def test_rfc3339_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="outside years 1-9999"):
        rfc3339(MAX_US + 1)


# --- the event-time grammar (docs/semantics.md), the same table as the oracle's test --------


@pytest.mark.parametrize(
    ("text", "instant", "rule"), ISO_CASES, ids=[f"{r}: {t!r}" for t, _, r in ISO_CASES]
)
@pytest.mark.parametrize("fmt", ["iso8601", None])
def test_iso_grammar(text: str, instant: Instant | None, rule: str, fmt: str | None) -> None:
    parse = parser("ts", fmt)
    if instant is None:
        with pytest.raises(EventTimeError, match=r"ts=.* is not ISO 8601") as info:
            parse(text)
        assert info.value.reason == "invalid_event_time"
    else:
        assert parse(text) == expected_micros(instant), rule


#: Pieces of event times, valid and not: every mix is a test of the shortcuts in _from_iso.
_DATES = ["2024-03-01", "2024-02-30", "0000-01-01", "2024-W09-5", "20240301", "2024-3-01"]
_SEPARATORS = ["T", "t", " ", "x", ""]
_TIMES = ["10:00:00", "10:00", "10", "1000", "100000", "24:00:00", "10:00:60", "10:00:00:00"]
_FRACTIONS = ["", ".", ",", ".5", ",123", ".123456", ".1234567", ".123456789", ".1x", "x"]
_OFFSETS = [
    *("", "Z", "z", "+02:00", "-05:30", "-0530", "+02", "-00:00"),
    *("+24:00", "+02:60", "+0260", "+02:00:00", "+020000", "+2", "+020", "+02.5", "+02,5"),
    *("+02:00.5", "+0200.5", "+02:5.", "Z+02:00", "+02:00Z"),
]
_JUNK = ["", "x", ":", ".", " ", "Z", "+", "0", "\u0663"]


def _outcome(parse: Callable[[Any, str], int], text: str) -> int | str:
    try:
        return parse(text, "ts")
    except EventTimeError as e:
        return e.reason


def test_the_shortcuts_agree_with_the_grammar() -> None:
    """fromisoformat reads more than the grammar; _from_iso uses it only where it agrees with
    _from_iso_strict, the grammar itself. Every mix of the pieces, junk at every place of the
    fraction (fromisoformat skips what follows a seventh digit), and every single edit of a
    few common forms."""
    texts = [
        "".join(parts)
        for parts in itertools.product(_DATES, _SEPARATORS, _TIMES, _FRACTIONS, _OFFSETS)
    ]
    digits = ".1234567890123"
    texts += [
        "2024-03-01" + sep + "10:00:00" + digits[:cut][:at] + junk + digits[:cut][at:] + offset
        for sep in "T "
        for cut in range(len(digits) + 1)
        for at in range(cut + 1)
        for junk in _JUNK
        for offset in _OFFSETS
    ]
    alphabet = "0123456789-:Tt Zz+.,W\u0663"
    for base in (
        "2024-03-01T10:00:00.123Z",
        "2024-03-01 10:00:00,123456+02:00",
        "2024-03-01T10:00:00.123456789-0530",
        "2024-03-01t10:00:00+02",
    ):  # every text one edit away: a character changed, added or dropped
        for i in range(len(base) + 1):
            texts += [base[:i] + c + base[i + 1 :] for c in alphabet if i < len(base)]
            texts += [base[:i] + c + base[i:] for c in alphabet]
            texts.append(base[:i] + base[i + 1 :])
    assert len(texts) > 90_000
    differ = [t for t in texts if _outcome(_from_iso, t) != _outcome(_from_iso_strict, t)]
    assert differ == []
