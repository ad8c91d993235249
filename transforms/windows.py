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
