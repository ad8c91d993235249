"""Window assignment in integer microseconds, aligned to the Unix epoch as Beam's WindowFns.

The bounded path folds the window into the grouping key, so it assigns windows itself; the
streaming operator uses the same functions so that both paths agree to the microsecond.
"""

from __future__ import annotations

from collections.abc import Callable

Interval = tuple[int, int]  # [start_us, end_us)


def fixed(size_us: int) -> Callable[[int], list[Interval]]:
    def assign(ts: int) -> list[Interval]:
        start = ts - ts % size_us  # Python's % floors, so negative times align too
        return [(start, start + size_us)]

    return assign


def sliding(size_us: int, period_us: int) -> Callable[[int], list[Interval]]:
    """Every window [start, start + size) with start a multiple of period containing ts."""

    def assign(ts: int) -> list[Interval]:
        last = ts - ts % period_us
        return [(s, s + size_us) for s in range(last, ts - size_us, -period_us)]

    return assign


def session(gap_us: int) -> Callable[[int], list[Interval]]:
    """A proto-session [ts, ts + gap); overlapping proto-sessions merge (see merge_sessions)."""

    def assign(ts: int) -> list[Interval]:
        return [(ts, ts + gap_us)]

    return assign


# The event times whose windows all lie within [low, high] (inclusive bounds): every bound a
# row carries must be writable (eventtime.MIN_US..MAX_US), and a daily window of
# 9999-12-31T12:00:00Z would end in year 10000. Window starts and ends grow with the event
# time, so the accepted times are one interval, computed once per view; each message is then
# checked with two comparisons. ``first > last`` when no time fits.


def fixed_accepted(size_us: int, low: int, high: int) -> Interval:
    first = -(-low // size_us) * size_us  # the first window start at or after ``low``
    last = (high - size_us) // size_us * size_us + size_us - 1  # its window ends by ``high``
    return first, min(last, high)


def sliding_accepted(size_us: int, period_us: int, low: int, high: int) -> Interval:
    # The earliest window of ts starts at the first multiple of period above ts - size.
    first = (-(-low // period_us) - 1) * period_us + size_us
    last = (high - size_us) // period_us * period_us + period_us - 1
    return max(first, low), min(last, high)


def session_accepted(gap_us: int, low: int, high: int) -> Interval:
    return low, high - gap_us
