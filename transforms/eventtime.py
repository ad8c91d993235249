"""Event time: read from a message field, kept as integer microseconds since the Unix epoch.

Microseconds are Beam's timestamp resolution; integers keep window arithmetic exact.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from liveagg.spec import EventTimeFormat

_EPOCH_SCALE = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}
# Beam's timestamps are bounded; keep far inside them (years 1..9999 as datetime allows).
_MIN_US = -62_135_596_800_000_000
_MAX_US = 253_402_300_799_999_999


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
        micros = round(value * scale)
    else:
        raise EventTimeError(
            "invalid_event_time", f"{field}={value!r} is not a number ({fmt} expected)"
        )
    if not _MIN_US <= micros <= _MAX_US:
        raise EventTimeError("invalid_event_time", f"{field}={value!r} is out of range for {fmt}")
    return micros


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
        return lambda value: _from_iso(value, field)
    if fmt is not None:
        scale = _EPOCH_SCALE[fmt]
        return lambda value: _from_epoch(value, scale, field, fmt)

    def auto(value: Any) -> int:
        # SPEC: iso8601 for strings, epoch seconds for numbers.
        if isinstance(value, str):
            return _from_iso(value, field)
        return _from_epoch(value, 1_000_000, field, "epoch_s")

    return auto


def rfc3339(micros: int) -> str:
    """Format as RFC 3339 UTC: ``2013-01-01T10:00:00Z``; a fraction only when there is one."""
    seconds, frac = divmod(micros, 1_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return text + "Z"
    if frac % 1000 == 0:
        return f"{text}.{frac // 1000:03d}Z"
    return f"{text}.{frac:06d}Z"
