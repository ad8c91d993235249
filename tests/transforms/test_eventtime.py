from datetime import UTC, datetime

import pytest

from liveagg.transforms.eventtime import EventTimeError, parser, rfc3339


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
        ("epoch_s", 10**30, "out of range"),
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
    ("value", "text"),
    [
        (micros(2013, 1, 1, 10), "2013-01-01T10:00:00Z"),
        (micros(2013, 1, 1, 10) + 500_000, "2013-01-01T10:00:00.500Z"),
        (micros(2013, 1, 1, 10) + 7, "2013-01-01T10:00:00.000007Z"),
        (-1_000_000, "1969-12-31T23:59:59Z"),
    ],
)
def test_rfc3339(value: int, text: str) -> None:
    assert rfc3339(value) == text
