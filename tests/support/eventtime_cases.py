"""One table of event-time strings for the pipeline's parser and the oracle's SQL alike.

Each case is ``(text, instant, rule)``: ``instant`` is the UTC instant as ``(year, month, day,
hour, minute, second, microsecond)``, or None where the text is not an event time. The rules
are those of docs/semantics.md, "Event time".
"""

from __future__ import annotations

from datetime import UTC, datetime

Instant = tuple[int, int, int, int, int, int, int]

_TEN = (2024, 3, 1, 10, 0, 0, 0)  # 2024-03-01T10:00:00Z

ISO_CASES: list[tuple[str, Instant | None, str]] = [
    # Dates, separators, times
    ("2024-03-01T10:00:00Z", _TEN, "RFC 3339"),
    ("2024-03-01t10:00:00z", _TEN, "lowercase t and z, as RFC 3339 allows"),
    ("2024-03-01 10:00:00Z", _TEN, "a space for the T"),
    ("2024-03-01T10:00Z", _TEN, "no seconds: :00"),
    ("2024-03-01 10:00", _TEN, "no seconds, no offset"),
    ("2024-03-01T10:00:00", _TEN, "no offset: UTC"),
    ("2024-03-01 10:00:00", _TEN, "SQL and log style: UTC"),
    ("2024-02-29T10:00:00Z", (2024, 2, 29, 10, 0, 0, 0), "a leap day"),
    ("0001-01-01T00:00:00Z", (1, 1, 1, 0, 0, 0, 0), "the first instant"),
    ("9999-12-31T23:59:58.999999Z", (9999, 12, 31, 23, 59, 58, 999_999), "year 9999"),
    # Fractions
    ("2024-03-01T10:00:00.123Z", (2024, 3, 1, 10, 0, 0, 123_000), "milliseconds"),
    ("2024-03-01T10:00:00.5Z", (2024, 3, 1, 10, 0, 0, 500_000), "one digit"),
    ("2024-03-01T10:00:00.000250Z", (2024, 3, 1, 10, 0, 0, 250), "microseconds"),
    ("2024-03-01T10:00:00,5Z", (2024, 3, 1, 10, 0, 0, 500_000), "a comma, as ISO 8601 allows"),
    ("2024-03-01 10:00:00,123", (2024, 3, 1, 10, 0, 0, 123_000), "logback's ISO8601 layout"),
    ("2024-03-01T10:00:00.1234567Z", (2024, 3, 1, 10, 0, 0, 123_456), ".NET: 7 digits, truncated"),
    ("2024-03-01T10:00:00.123456789Z", (2024, 3, 1, 10, 0, 0, 123_456), "nanoseconds, truncated"),
    ("2024-03-01T10:00:00.999999999Z", (2024, 3, 1, 10, 0, 0, 999_999), "truncated, not rounded"),
    ("2024-03-01T12:00:00.123456789123+02:00", (2024, 3, 1, 10, 0, 0, 123_456), "12 digits"),
    ("2024-03-01T10:00:00.123z", (2024, 3, 1, 10, 0, 0, 123_000), "fraction and lowercase z"),
    ("2024-03-01T10:00:00.Z", None, "a point without digits"),
    ("2024-03-01T10:00:00.", None, "a point without digits, no offset"),
    ("2024-03-01T10:00:00.+02:00", None, "a point without digits before an offset"),
    ("2024-03-01T10:00.5Z", None, "a fraction needs seconds"),
    ("2024-03-01T10:00:00.1.2Z", None, "two fractions"),
    # Offsets
    ("2024-03-01T12:00:00+02:00", _TEN, "+hh:mm"),
    ("2024-03-01T05:30:00-04:30", _TEN, "-hh:mm"),
    ("2024-03-01T12:00:00.000000+02:00", _TEN, "Python's isoformat()"),
    ("2024-03-01T10:00:00+00:00", _TEN, "+00:00"),
    ("2024-03-01T10:00:00-00:00", _TEN, "-00:00, RFC 3339's unknown offset: UTC"),
    ("2024-03-01T12:00:00+0200", _TEN, "+hhmm, as strftime's %z"),
    ("2024-03-01T05:30:00-0430", _TEN, "-hhmm"),
    ("2024-03-01T12:00:00+02", _TEN, "+hh, as PostgreSQL writes whole hours"),
    ("2024-03-01T12:00+02:00", _TEN, "no seconds, with an offset"),
    ("2024-03-02T09:59:00+23:59", _TEN, "the largest offset"),
    ("2024-03-01T10:00:00+24:00", None, "an offset of 24 hours"),
    ("2024-03-01T10:00:00+02:60", None, "offset minutes past 59"),
    ("2024-03-01T10:00:00+0260", None, "offset minutes past 59, +hhmm"),
    ("2024-03-01T10:00:00+02:00:00", None, "offset seconds"),
    ("2024-03-01T10:00:00+020000", None, "offset seconds, +hhmmss"),
    ("2024-03-01T10:00:00+2", None, "a one-digit offset"),
    ("2024-03-01T10:00:00+020", None, "a three-digit offset"),
    ("2024-03-01T10:00:00 +02:00", None, "a space before the offset"),
    ("2024-03-01T10:00:00UTC", None, "a zone name"),
    ("2024-03-01T10:00:00Z+02:00", None, "two offsets"),
    # Dates and times that do not exist
    ("2023-02-29T10:00:00Z", None, "February 29 of a common year"),
    ("2024-04-31T10:00:00Z", None, "April 31"),
    ("2024-13-01T10:00:00Z", None, "month 13"),
    ("0000-01-01T00:00:00Z", None, "year 0"),
    ("2024-03-01T24:00:00Z", None, "hour 24"),
    ("2024-03-01T23:60:00Z", None, "minute 60"),
    ("2016-12-31T23:59:60Z", None, "a leap second"),
    # Other ISO 8601 forms, and what Python's fromisoformat reads beyond the grammar
    ("2024-03-01", None, "a date alone"),
    ("2024-03-01T10", None, "an hour alone"),
    ("2024-03-01T10Z", None, "an hour alone, with an offset"),
    ("20240301T100000Z", None, "basic format"),
    ("2024-03-01T100000Z", None, "basic time"),
    ("2024-W09-5T10:00:00Z", None, "a week date"),
    ("2024-061T10:00:00Z", None, "an ordinal date"),
    ("+2024-03-01T10:00:00Z", None, "an expanded year"),
    ("2024-3-01T10:00:00Z", None, "a one-digit month"),
    ("2024-03-01x10:00:00Z", None, "another separator"),
    ("2024-03-01T10:00:00:00Z", None, "a fourth time field"),
    ("2024-03-01T10:00:00W+02:00", None, "a letter after the seconds"),
    ("2024-03-01T10:00:001+02:00", None, "three second digits"),
    ("2024-03-01T10:00:00.1234567x+02:00", None, "a letter after seven fraction digits"),
    ("\uff12\uff10\uff12\uff14-03-01T10:00:00Z", None, "fullwidth digits"),
    ("2024-03-01T10:00:00.12\u0663Z", None, "an Arabic-Indic digit in the fraction"),
    (" 2024-03-01T10:00:00Z", None, "a leading space"),
    ("2024-03-01T10:00:00Z ", None, "a trailing space"),
    ("2024-03-01T10:00:00Z\n", None, "a trailing newline"),
    ("", None, "empty"),
    ("yesterday", None, "words"),
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(instant: Instant) -> int:
    """Microseconds since the epoch of a UTC instant given by its fields."""
    y, mo, d, h, mi, s, us = instant
    delta = datetime(y, mo, d, h, mi, s, tzinfo=UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + us
