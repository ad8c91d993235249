"""The window book: which windows an event time falls in, how sessions merge, and what a
watermark means for a window and its panes. Free of Beam, so that every path (the bounded
path, the streaming operator, both levels of a two-level run) uses the same rules.

Times are integer microseconds since the Unix epoch (Beam's resolution); a window is
``[start, end)``. Fixed and sliding windows are aligned to the epoch, as Beam's
``FixedWindows`` and ``SlidingWindows``; a session is ``[first, last + gap)`` and merges with
every session it overlaps, as Beam's ``Sessions``. A cumulative window is Flink SQL's
``CUMULATE``: each epoch-aligned *period* ``[p, p + size)`` has the windows
``[p, p + k*step)`` for ``k = 1 .. size/step``, and an event time falls in those of its period
that end after it. The global window is one window per key for all time,
``[MIN_US, MAX_US + 1)`` (:data:`GLOBAL`): its rows carry no bounds, and the watermark passes
its end only when input ends.

Watermark rules (docs/semantics.md), for a window with ``last = end - 1`` (Beam's
``max_timestamp``) and allowed lateness ``L``:

* the window is *on time* while ``watermark < last``;
* its ``ON_TIME`` pane fires once ``watermark >= last``; data arriving from then on is *late*
  and fires a ``LATE`` pane (also a window's first pane: a pane is late whenever the
  watermark had passed the window's end);
* it *expires* once ``watermark >= last + L``: its state is dropped, and data for it is
  ``too_late``, whether or not the key held state for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The instants RFC 3339 can write: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z.
MIN_US = -62_135_596_800_000_000
MAX_US = 253_402_300_799_999_999

EARLY, ON_TIME, LATE = "EARLY", "ON_TIME", "LATE"

#: The bounds of the global window: every instant RFC 3339 can write. A bounded run's final
#: watermark (the end of input) passes its end, so it fires one ``ON_TIME`` pane then.
GLOBAL = (MIN_US, MAX_US + 1)


@dataclass(frozen=True)
class WindowFn:
    """One variant's windows. ``kind`` is ``fixed``, ``sliding``, ``session``, ``cumulative``
    or ``global``."""

    kind: str
    size_us: int = 0
    period_us: int = 0
    gap_us: int = 0
    step_us: int = 0

    @classmethod
    def fixed(cls, size_us: int) -> WindowFn:
        return cls("fixed", size_us=size_us)

    @classmethod
    def sliding(cls, size_us: int, period_us: int) -> WindowFn:
        return cls("sliding", size_us=size_us, period_us=period_us)

    @classmethod
    def session(cls, gap_us: int) -> WindowFn:
        return cls("session", gap_us=gap_us)

    @classmethod
    def cumulative(cls, size_us: int, step_us: int) -> WindowFn:
        if step_us <= 0 or size_us % step_us:
            raise ValueError(f"a cumulative size ({size_us} us) is a multiple of its step")
        return cls("cumulative", size_us=size_us, step_us=step_us)

    @classmethod
    def global_window(cls) -> WindowFn:
        return cls("global")

    @property
    def merging(self) -> bool:
        return self.kind == "session"

    @property
    def is_global(self) -> bool:
        return self.kind == "global"

    @property
    def grain_us(self) -> int:
        """The length of the slices every window of this function is a union of: a fixed
        window itself, a sliding window's period, a cumulative window's step. 0 for sessions
        (no fixed grain) and the global window (any slices make it up)."""
        if self.kind == "fixed":
            return self.size_us
        if self.kind == "sliding":
            return _gcd(self.size_us, self.period_us)
        if self.kind == "cumulative":
            return self.step_us
        return 0

    def within(self, coarser: WindowFn) -> bool:
        """Whether each window of this function lies inside exactly one of ``coarser``'s, so
        that rows aggregated per window of this one roll up to ``coarser``'s by window start:
        fixed windows into fixed windows a whole number of times larger (both start at
        multiples of their size), the global window into itself."""
        if self.kind == "fixed" and coarser.kind == "fixed":
            return coarser.size_us % self.size_us == 0
        return self.is_global and coarser.is_global

    def assign(self, ts: int) -> list[tuple[int, int]]:
        """The windows of an event time, earliest start last (as Beam lists them)."""
        if self.kind == "fixed":
            start = ts - ts % self.size_us  # Python's % floors: negative times align too
            return [(start, start + self.size_us)]
        if self.kind == "sliding":
            last = ts - ts % self.period_us
            size = self.size_us
            return [(s, s + size) for s in range(last, ts - size, -self.period_us)]
        if self.kind == "session":
            return [(ts, ts + self.gap_us)]
        if self.kind == "cumulative":
            period = ts - ts % self.size_us
            first = ts - ts % self.step_us + self.step_us  # the end of the event's step
            return [(period, e) for e in range(first, period + self.size_us + 1, self.step_us)]
        if self.kind == "global":
            return [GLOBAL]
        raise ValueError(f"no windows for kind {self.kind!r}")

    def assign_many(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`assign` over an array: ``(row, start, end)`` for every window of every row."""
        rows = np.arange(len(ts), dtype=np.int64)
        if self.kind == "fixed":
            start = ts - ts % self.size_us
            return rows, start, start + self.size_us
        if self.kind == "sliding":
            last = ts - ts % self.period_us
            # The number of windows of each row: starts s = last - j*period with s > ts - size.
            per = (last - (ts - self.size_us) + self.period_us - 1) // self.period_us
            per = np.maximum(per, 0)
            row = np.repeat(rows, per)
            offsets = np.arange(len(row)) - np.repeat(np.cumsum(per) - per, per)
            start = last[row] - offsets * self.period_us
            return row, start, start + self.size_us
        if self.kind == "session":
            return rows, ts, ts + self.gap_us
        if self.kind == "cumulative":
            step = self.step_us
            period = ts - ts % self.size_us
            first = ts - ts % step + step
            # The windows of each row: ends first, first + step, ..., period + size.
            per = (period + self.size_us - first) // step + 1
            row = np.repeat(rows, per)
            offsets = np.arange(len(row)) - np.repeat(np.cumsum(per) - per, per)
            return row, period[row], first[row] + offsets * step
        if self.kind == "global":
            n = len(ts)
            return rows, np.full(n, GLOBAL[0], dtype=np.int64), np.full(n, GLOBAL[1], np.int64)
        raise ValueError(f"no windows for kind {self.kind!r}")

    def first_end_many(self, ts: np.ndarray) -> np.ndarray:
        """The end of the first of each event time's windows to close: the one that starts
        first (a fixed window is a sliding one whose period is its size), a cumulative
        period's window that ends with the event's step; the global window never closes."""
        if self.merging:
            return ts + self.gap_us
        if self.kind == "cumulative":
            return ts - ts % self.step_us + self.step_us
        if self.kind == "global":
            return np.full_like(ts, GLOBAL[1])
        period = self.period_us or self.size_us
        return ((ts - self.size_us) // period + 1) * period + self.size_us

    def windows_per_event(self) -> int:
        """How many windows one event time falls in, at most (the bound the loader checks)."""
        if self.kind == "sliding":
            return -(-self.size_us // self.period_us)
        if self.kind == "cumulative":
            return self.size_us // self.step_us
        return 1

    def accepted(self, low: int = MIN_US, high: int = MAX_US) -> tuple[int, int]:
        """``(first, last)``: the event times whose every window lies within ``[low, high]``
        (inclusive); ``first > last`` when none does.

        Window starts and ends grow with the event time, so the accepted times are one
        interval, and each message is checked with two comparisons. A cumulative window lies
        within its period, whose first message opens the longest one: the period's bounds are
        those of a fixed window of ``size``. The global window's bounds are never written: it
        takes every time.
        """
        if self.kind == "fixed":
            return fixed_accepted(self.size_us, low, high)
        if self.kind == "sliding":
            return sliding_accepted(self.size_us, self.period_us, low, high)
        if self.kind == "session":
            return session_accepted(self.gap_us, low, high)
        if self.kind == "cumulative":
            return fixed_accepted(self.size_us, low, high)
        if self.kind == "global":
            return low, high
        raise ValueError(f"no windows for kind {self.kind!r}")

    def milestone_window(self, start: int, end: int) -> tuple[int, int]:
        """The window a milestone of ``[start, end)`` belongs to: the windows of one
        cumulative period share their milestones ("100 today" fires once per day, with the
        day's bounds); any other window is its own."""
        if self.kind == "cumulative":
            return start, start + self.size_us
        return start, end


# The event times whose windows all lie within [low, high] (inclusive bounds): every bound a
# row carries must be writable (MIN_US..MAX_US), and a daily window of 9999-12-31T12:00:00Z
# would end in year 10000.


def fixed_accepted(size_us: int, low: int, high: int) -> tuple[int, int]:
    first = -(-low // size_us) * size_us  # the first window start at or after ``low``
    last = (high - size_us) // size_us * size_us + size_us - 1  # its window ends by ``high``
    return first, min(last, high)


def sliding_accepted(size_us: int, period_us: int, low: int, high: int) -> tuple[int, int]:
    # The earliest window of ts starts at the first multiple of period above ts - size.
    first = (-(-low // period_us) - 1) * period_us + size_us
    last = (high - size_us) // period_us * period_us + period_us - 1
    return max(first, low), min(last, high)


def session_accepted(gap_us: int, low: int, high: int) -> tuple[int, int]:
    return low, high - gap_us


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def in_range(start: int, end: int) -> bool:
    """Whether RFC 3339 can write both bounds of ``[start, end)`` (years 1 to 9999)."""
    return start >= MIN_US and end <= MAX_US + 1


def in_range_many(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    return (start >= MIN_US) & (end <= MAX_US + 1)


# ---------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------


def merge_intervals(
    intervals: Iterable[tuple[int, int, Any]],
) -> Iterator[tuple[int, int, list[Any]]]:
    """Merge overlapping ``(start, end, item)`` intervals as Beam's ``Sessions`` merges
    windows: sorted by start, an interval that starts before the merged end joins it.
    Yields ``(start, end, items)`` per merged session, in order."""
    current: list[Any] | None = None
    start = end = 0
    for s, e, item in sorted(intervals, key=lambda x: (x[0], x[1])):
        if current is not None and s < end:
            end = max(end, e)
            current.append(item)
            continue
        if current is not None:
            yield start, end, current
        start, end, current = s, e, [item]
    if current is not None:
        yield start, end, current


def session_ids(keys: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """For rows of ``(key id, start, end)``, the id of the merged session each falls in.

    Rows of one key merge when they overlap (as :func:`merge_intervals`); ids are dense and
    in order of (key, start).
    """
    n = len(keys)
    if not n:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((end, start, keys))
    k, s, e = keys[order], start[order], end[order]
    new = np.ones(n, dtype=bool)
    reach = e[0]
    for i in range(1, n):  # a running maximum that restarts at each key: one pass
        if k[i] == k[i - 1] and s[i] < reach:
            new[i] = False
            reach = max(reach, e[i])
        else:
            reach = e[i]
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


# ---------------------------------------------------------------------------------------------
# Watermarks and panes
# ---------------------------------------------------------------------------------------------


def is_late(end: int, watermark: int) -> bool:
    """Whether the watermark has passed the window's end: its panes are ``LATE`` now."""
    return watermark >= end - 1


def expires_at(end: int, lateness_us: int) -> int:
    """The watermark at which a window expires (its state is dropped, its data too late)."""
    return end - 1 + lateness_us


def is_expired(end: int, lateness_us: int, watermark: int) -> bool:
    return watermark >= end - 1 + lateness_us


@dataclass
class Pane:
    """Pane bookkeeping of one (key, window): the next ``pane_index``, whether the
    ``ON_TIME`` pane has fired, and whether data arrived since the last pane."""

    index: int = 0
    fired: bool = False
    dirty: bool = False

    def on_data(self, end: int, watermark: int) -> str | None:
        """Data arrived: the timing of the pane it fires at once (``LATE``), or None when it
        waits for a timer (``EARLY`` / ``ON_TIME``)."""
        self.dirty = True
        if self.fired or is_late(end, watermark):
            return LATE
        return None

    def fire(self, timing: str) -> int:
        """Record a pane of ``timing``; returns its index."""
        index = self.index
        self.index += 1
        self.dirty = False
        if timing in (ON_TIME, LATE):
            self.fired = True
        return index
