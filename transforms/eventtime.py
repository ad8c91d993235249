"""Event time: read from a message field, kept as integer microseconds since the Unix epoch.

Microseconds are Beam's timestamp resolution; integers keep window arithmetic exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from liveagg.combiners._common import shown
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
        raise EventTimeError(
            "invalid_event_time", f"{field}={shown(value)} is a boolean, not {fmt}"
        )
    if isinstance(value, int):
        micros = value * scale
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise EventTimeError("invalid_event_time", f"{field}={shown(value)} is not finite")
        scaled = value * scale
        if not MIN_US - 1 <= scaled <= MAX_US + 1:  # before round(), which fails on inf
            raise _out_of_range(field, value, fmt)
        micros = round(scaled)
    else:
        raise EventTimeError(
            "invalid_event_time", f"{field}={shown(value)} is not a number ({fmt} expected)"
        )
    return _in_range(micros, field, value, fmt)


def _in_range(micros: int, field: str, value: Any, fmt: str) -> int:
    if not MIN_US <= micros <= MAX_US:
        raise _out_of_range(field, value, fmt)
    return micros


def _out_of_range(field: str, value: Any, fmt: str) -> EventTimeError:
    return EventTimeError(
        OUT_OF_RANGE,
        f"{field}={shown(value)} is out of range for {fmt}: event times run from "
        "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z",
    )


#: The event-time grammar (docs/semantics.md, "Event time"): RFC 3339 and the log variants
#: (space or lowercase separators, no offset, ``+hhmm``/``+hh``, ``,`` fractions, no seconds).
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)?"
)
#: ``value[7:20:3]``, the separators of ``YYYY-MM-DDThh:mm:ss`` and what follows the seconds.
_SHAPES = frozenset(f"-{t}::{after}" for t in "T " for after in ("", ".", ",", "Z", "+", "-"))
_fromisoformat = datetime.fromisoformat
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)  # noqa: DTZ001 -- naive times are UTC


def _from_iso(value: Any, field: str) -> int:
    """Microseconds of an event-time string, by the grammar of ``_ISO``.

    ``datetime.fromisoformat`` reads far more than the grammar (week dates, ``20240301``, any
    separator, offsets with seconds, an empty fraction, ``+02:60``, junk after seconds). It
    is used only where a few character checks prove the string one it reads exactly as the
    grammar does. The most common forms are tested first, with the fewest checks:
    ``...ss.sssZ`` (JavaScript's ``toISOString``), then ``...ss.fractionZ`` (Go's
    ``RFC3339Nano``), ``...ss.ffffff+hh:mm`` (Python's ``isoformat``) and ``...ssZ``. The
    positions 7, 10, 13, 16 and 19 hold ``-T::`` and what follows the seconds; with ``Z``
    there, fromisoformat ends the string at it.
    """
    try:
        if value[-5:6:-3] == ".::T-" and value[-1] == "Z":
            # Positions 19, 16, 13, 10 and 7 counted from a 24-character end: the date
            # starts at 0 (fromisoformat reads no other date there), ...ss.sssZ.
            delta = _fromisoformat(value) - _EPOCH
            return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        shape = value[7:20:3]
        if shape == "-T::.":
            n = len(value)
            if value[-1] == "Z":
                # Up to six digits fromisoformat checks; past six it skips digits, then
                # ignores what follows them (".1234567x:Z" reads): those must be digits.
                if 21 < n < 28 or (value.isascii() and value[20:-1].isdigit()):
                    delta = _fromisoformat(value) - _EPOCH
                    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            elif 26 < n < 33 and value[-3] == ":" and value[-6] in "+-" and value[-2] < "6":
                # one to six digits, then +hh:mm, as Python's isoformat() writes
                delta = _fromisoformat(value) - _EPOCH
                return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        elif shape == "-T::Z":
            delta = _fromisoformat(value) - _EPOCH
            return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if shape in _SHAPES:
            return _from_common_iso(value, field)
    except (TypeError, ValueError, KeyError):
        pass  # not a string, or not one of the common forms: the grammar decides
    return _from_iso_strict(value, field)


def _from_common_iso(value: str, field: str) -> int:
    """``YYYY-MM-DD[T ]hh:mm:ss``, then ``.fraction``/``,fraction`` and ``Z``, ``+hh:mm``,
    ``+hhmm``, ``+hh`` or nothing: fromisoformat checks digits and ranges, and up to six
    fraction digits."""
    parsed = _fromisoformat(value)
    if value[-1] == "Z":
        epoch, zone = _EPOCH, 1
    elif parsed.tzinfo is None:
        epoch, zone = _EPOCH_NAIVE, 0
    elif value[-6] in "+-" and value[-3] == ":" and value[-2] < "6":
        epoch, zone = _EPOCH, 6
    elif value[-5] in "+-" and "0" <= value[-2] < "6":  # not "+hh.f", which it reads
        epoch, zone = _EPOCH, 5
    elif value[-3] in "+-":
        epoch, zone = _EPOCH, 3
    else:  # offset seconds, or minutes past 59
        return _from_iso_strict(value, field)
    # frac: the length of ".fraction" between the seconds and the offset ("." alone is not
    # a fraction). Past six digits fromisoformat skips digits, then ignores what follows
    # them up to the offset (".1234567x+02:00" reads): the rest must be digits.
    frac = len(value) - 19 - zone
    if frac == 0 or 1 < frac < 8 or (frac > 7 and _digits(value[20 : 19 + frac])):
        delta = parsed - epoch
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _from_iso_strict(value, field)


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` alone takes other scripts' digits)."""
    return text.isascii() and text.isdigit()


def _from_iso_strict(value: Any, field: str) -> int:
    """The grammar itself, for any string: ``_ISO``, then calendar and range checks."""
    if not isinstance(value, str):
        raise EventTimeError(
            "invalid_event_time", f"{field}={shown(value)} is not an ISO 8601 string"
        )
    match = _ISO.fullmatch(value)
    micros = None if match is None else _iso_micros(*match.groups())
    if micros is None:
        raise EventTimeError(
            "invalid_event_time",
            f"{field}={shown(value)} is not ISO 8601 (e.g. '2013-01-01T10:00:00Z'): "
            "YYYY-MM-DD, T or a space, hh:mm[:ss[.fraction]], then Z, +hh:mm, +hhmm, +hh or "
            "nothing (UTC)",
        )
    return micros


def _iso_micros(
    y: str,
    mo: str,
    d: str,
    h: str,
    mi: str,
    s: str | None,
    frac: str | None,
    sign: str | None,
    off_h: str | None,
    off_m: str | None,
) -> int | None:
    """Microseconds from the groups of ``_ISO``; None for a date or time that does not exist
    (February 30, hour 24, second 60) or an offset beyond 23:59."""
    try:
        local = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0))  # noqa: DTZ001
    except ValueError:
        return None
    delta = local - _EPOCH_NAIVE
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000
    if frac:
        micros += int(frac[:6].ljust(6, "0"))  # beyond the microsecond: truncated
    if sign:
        hours, minutes = int(off_h), int(off_m or 0)
        if hours > 23 or minutes > 59:
            return None
        offset = (hours * 60 + minutes) * 60_000_000
        micros += -offset if sign == "+" else offset
    return micros


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


class WindowText:
    """Window bounds as RFC 3339 text (:func:`rfc3339`), each window formatted once: windows
    repeat across keys, and their rows and events carry the same text. Holds at most
    ``limit`` windows, forgetting them all when full."""

    def __init__(self, limit: int = 100_000) -> None:
        self._cache: dict[tuple[int, int], tuple[str, str]] = {}
        self._limit = limit

    def __call__(self, window: tuple[int, int]) -> tuple[str, str]:
        found = self._cache.get(window)
        if found is None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            found = self._cache[window] = (rfc3339(window[0]), rfc3339(window[1]))
        return found
