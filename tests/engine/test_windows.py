"""The window book: assignment, vectorized assignment, session merging and watermark rules."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from liveagg.engine import windows as w

TIMES = st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=50)
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)


def naive_windows(fn: w.WindowFn, ts: int) -> list[tuple[int, int]]:
    """Every window of the function that contains ``ts``, by brute force over starts."""
    if fn.kind == "fixed":
        starts = range(ts - fn.size_us - 1, ts + 1)
        return [
            (s, s + fn.size_us) for s in starts if s % fn.size_us == 0 and s <= ts < s + fn.size_us
        ]
    starts = range(ts - fn.size_us, ts + 1)
    found = [
        (s, s + fn.size_us) for s in starts if s % fn.period_us == 0 and s <= ts < s + fn.size_us
    ]
    return sorted(found, reverse=True)


@SETTINGS
@given(TIMES, st.sampled_from([1, 7, 10, 60]), st.sampled_from([1, 3, 5]))
def test_assignment_matches_the_definition(times: list[int], size: int, periods: int) -> None:
    for fn in (w.WindowFn.fixed(size), w.WindowFn.sliding(size * periods, size)):
        for ts in times[:5]:
            small = ts % 1000  # brute force only over small numbers
            assert fn.assign(small) == naive_windows(fn, small)


@SETTINGS
@given(TIMES, st.sampled_from([1, 7, 60_000_000]), st.sampled_from([1, 2, 4]))
def test_vectorized_assignment_equals_scalar(times: list[int], period: int, periods: int) -> None:
    for fn in (w.WindowFn.fixed(period), w.WindowFn.sliding(period * periods, period)):
        rows, start, end = fn.assign_many(np.array(times, dtype=np.int64))
        got = sorted(zip(rows.tolist(), start.tolist(), end.tolist(), strict=True))
        want = sorted((i, s, e) for i, ts in enumerate(times) for s, e in fn.assign(ts))
        assert got == want


@SETTINGS
@given(TIMES, st.sampled_from([1, 7, 60_000_000]), st.sampled_from([1, 2, 4]))
def test_the_first_window_to_close_is_the_earliest_end_of_the_assigned(
    times: list[int], step: int, steps: int
) -> None:
    functions = (
        w.WindowFn.fixed(step),
        w.WindowFn.sliding(step * steps, step),
        w.WindowFn.cumulative(step * steps, step),
        w.WindowFn.session(step),
        w.WindowFn.global_window(),
    )
    for fn in functions:
        got = fn.first_end_many(np.array(times, dtype=np.int64)).tolist()
        assert got == [min(end for _, end in fn.assign(ts)) for ts in times], fn


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200), st.integers(1, 30)), max_size=40))
def test_session_ids_merge_as_intervals(rows: list[tuple[int, int, int]]) -> None:
    keys = np.array([k for k, _, _ in rows], dtype=np.int64)
    start = np.array([s for _, s, _ in rows], dtype=np.int64)
    end = start + np.array([g for _, _, g in rows], dtype=np.int64)
    ids = w.session_ids(keys, start, end)
    for key in set(keys.tolist()):
        mine = [i for i in range(len(rows)) if keys[i] == key]
        merged = list(w.merge_intervals((int(start[i]), int(end[i]), i) for i in mine))
        for _, _, members in merged:
            assert len({int(ids[i]) for i in members}) == 1
        assert len({int(ids[i]) for i in mine}) == len(merged)


def test_bounds_of_rfc3339() -> None:
    assert w.in_range(w.MIN_US, w.MIN_US + 1)
    assert not w.in_range(w.MIN_US - 1, w.MIN_US)
    day = 86_400_000_000
    last_day = w.MAX_US + 1 - day
    assert w.in_range(last_day, last_day + day)
    assert not w.in_range(last_day + 1, last_day + 1 + day)


def test_panes_follow_the_watermark() -> None:
    end = 1_000
    pane = w.Pane()
    assert pane.on_data(end, watermark=10) is None  # on time: waits for a timer
    assert pane.fire(w.EARLY) == 0
    assert pane.fire(w.ON_TIME) == 1
    assert pane.on_data(end, watermark=2_000) == w.LATE
    assert pane.fire(w.LATE) == 2
    first_late = w.Pane()
    assert first_late.on_data(end, watermark=end - 1) == w.LATE  # late from its first pane
    assert w.is_expired(end, 0, end - 1) and not w.is_expired(end, 10, end - 1)
