"""Event time: read from a message field, kept as integer microseconds since the Unix epoch.

Microseconds are Beam's timestamp resolution; integers keep window arithmetic exact.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from liveagg.spec import EventTimeFormat

_EPOCH_SCALE = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}
#: The instants an event time and every bound of its windows must lie in: years 1 to 9999,
#: what RFC 3339 (four-digit years) and Python's ``datetime`` can write; far inside Beam's
#: timestamp range.
MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
OUT_OF_RANGE = "event_time_out_of_range"


class EventTimeError(ValueError):
    """The event time is missing or cannot be read; ``reason`` is the dead-letter code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _from_epoch(value: Any, scale: int, field: str, fmt: str) -> int:
    if isinstance(value, bool):
        raise EventTimeError("invalid_event_time", f"{field}={value!r} is a boolean, not {fmt}")
    if isinstance(value, int):
        micros = value * scale
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise EventTimeError("invalid_event_time", f"{field}={value!r} is not finite")
        scaled = value * scale
        if not MIN_US - 1 <= scaled <= MAX_US + 1:  # before round(), which fails on inf
            raise _out_of_range(field, value, fmt)
        micros = round(scaled)
    else:
        raise EventTimeError(
            "invalid_event_time", f"{field}={value!r} is not a number ({fmt} expected)"
        )
    return _in_range(micros, field, value, fmt)


def _in_range(micros: int, field: str, value: Any, fmt: str) -> int:
    if not MIN_US <= micros <= MAX_US:
        raise _out_of_range(field, value, fmt)
    return micros


def _out_of_range(field: str, value: Any, fmt: str) -> EventTimeError:
    return EventTimeError(
        OUT_OF_RANGE,
        f"{field}={value!r} is out of range for {fmt}: event times run from "
        "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z",
    )


def _from_iso(value: Any, field: str) -> int:
    if not isinstance(value, str):
        raise EventTimeError("invalid_event_time", f"{field}={value!r} is not an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise EventTimeError(
            "invalid_event_time",
            f"{field}={value!r} is not ISO 8601 (e.g. '2013-01-01T10:00:00Z')",
        ) from None
    if parsed.tzinfo is None:  # a naive time is read as UTC, as Flink SQL does for TIMESTAMP
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parser(field: str, fmt: EventTimeFormat | None) -> Callable[[Any], int]:
    """Return a function from the raw field value to microseconds, raising EventTimeError."""
    if fmt == "iso8601":
        return lambda value: _in_range(_from_iso(value, field), field, value, "iso8601")
    if fmt is not None:
        scale = _EPOCH_SCALE[fmt]
        return lambda value: _from_epoch(value, scale, field, fmt)

    def auto(value: Any) -> int:
        # SPEC: iso8601 for strings, epoch seconds for numbers.
        if isinstance(value, str):
            return _in_range(_from_iso(value, field), field, value, "iso8601")
        return _from_epoch(value, 1_000_000, field, "epoch_s")

    return auto


def rfc3339(micros: int) -> str:
    """Format as RFC 3339 UTC: ``2013-01-01T10:00:00Z``; a fraction only when there is one.

    Years have four digits (``0001-01-01T00:00:00Z``), whatever the platform's ``strftime``
    does with small years. Raises ``ValueError`` outside :data:`MIN_US`..:data:`MAX_US`
    (the plans dead-letter such event times before any bound is written).
    """
    if not MIN_US <= micros <= MAX_US:
        raise ValueError(f"{micros} us since the epoch is outside years 1-9999")
    seconds, frac = divmod(micros, 1_000_000)
    t = _EPOCH + timedelta(seconds=seconds)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if frac == 0:
        return text + "Z"
    if frac % 1000 == 0:
        return f"{text}.{frac // 1000:03d}Z"
    return f"{text}.{frac:06d}Z"
