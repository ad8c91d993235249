"""Window assignment in integer microseconds, as closures over one event time.

The window book is :mod:`liveagg.engine.windows`; these are its :meth:`WindowFn.assign` and
accepted-time functions under the names the row-wise code and its tests use.
"""

from __future__ import annotations

from collections.abc import Callable

from liveagg.engine.windows import (
    WindowFn,
    fixed_accepted,
    session_accepted,
    sliding_accepted,
)

Interval = tuple[int, int]  # [start_us, end_us)

__all__ = [
    "Interval",
    "cumulative",
    "fixed",
    "fixed_accepted",
    "session",
    "session_accepted",
    "sliding",
    "sliding_accepted",
]


def fixed(size_us: int) -> Callable[[int], list[Interval]]:
    return WindowFn.fixed(size_us).assign


def sliding(size_us: int, period_us: int) -> Callable[[int], list[Interval]]:
    """Every window [start, start + size) with start a multiple of period containing ts."""
    return WindowFn.sliding(size_us, period_us).assign


def session(gap_us: int) -> Callable[[int], list[Interval]]:
    """A proto-session [ts, ts + gap); overlapping proto-sessions merge."""
    return WindowFn.session(gap_us).assign


def cumulative(size_us: int, step_us: int) -> Callable[[int], list[Interval]]:
    """The windows [period, period + k*step) of ts's period that end after it."""
    return WindowFn.cumulative(size_us, step_us).assign
