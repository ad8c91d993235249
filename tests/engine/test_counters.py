"""Cumulative and global windows in the engine, and milestones.

Windows are checked against a brute-force definition; roll-ups against the row-wise
definition of the view (each message added to each of its windows through the view's
CombineFn); milestones against their definition (``value >= threshold``, once each).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveagg.engine import milestones as m
from liveagg.engine import windows as w
from liveagg.engine.columns import Decoder
from liveagg.engine.partials import concat
from liveagg.loader import parse_view
from liveagg.transforms.plan import ViewPlan
from tests.engine.test_columns import clean_line, rounded

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
TIMES = st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=40)


# --- the window book --------------------------------------------------------------------------


def brute_cumulative(size: int, step: int, ts: int) -> list[tuple[int, int]]:
    """Every [p, p + k*step) with p a multiple of size, 1 <= k <= size/step, containing ts."""
    found = []
    for p in range(ts - size, ts + 1):
        if p % size:
            continue
        found += [(p, p + k * step) for k in range(1, size // step + 1) if p <= ts < p + k * step]
    return sorted(found, key=lambda window: window[1])


@SETTINGS
@given(TIMES, st.sampled_from([1, 3, 10]), st.sampled_from([1, 2, 5]))
def test_cumulative_assignment_is_the_definition(times: list[int], step: int, steps: int) -> None:
    fn = w.WindowFn.cumulative(step * steps, step)
    for ts in times[:5]:
        small = ts % 500 - 250
        assert fn.assign(small) == brute_cumulative(step * steps, step, small)
    rows, start, end = fn.assign_many(np.array(times, dtype=np.int64))
    got = sorted(zip(rows.tolist(), start.tolist(), end.tolist(), strict=True))
    assert got == sorted((i, s, e) for i, ts in enumerate(times) for s, e in fn.assign(ts))
    assert max(np.bincount(rows)) <= fn.windows_per_event() == steps


def test_a_cumulative_day_by_hours() -> None:
    hour, day = 3_600_000_000, 86_400_000_000
    fn = w.WindowFn.cumulative(day, hour)
    ts = 1_709_251_200_000_000 + 21 * hour + 5  # 2024-03-01T21:00:00.000005Z
    midnight = 1_709_251_200_000_000
    assert fn.assign(ts) == [(midnight, midnight + k * hour) for k in (22, 23, 24)]
    assert fn.grain_us == hour
    assert fn.milestone_window(midnight, midnight + 22 * hour) == (midnight, midnight + day)
    with pytest.raises(ValueError, match="multiple of its step"):
        w.WindowFn.cumulative(day, 7 * hour)


def test_the_global_window() -> None:
    fn = w.WindowFn.global_window()
    assert fn.assign(0) == fn.assign(w.MIN_US) == [w.GLOBAL] == [(w.MIN_US, w.MAX_US + 1)]
    rows, start, end = fn.assign_many(np.array([5, -5, 7], dtype=np.int64))
    assert rows.tolist() == [0, 1, 2]
    assert set(start.tolist()) == {w.MIN_US} and set(end.tolist()) == {w.MAX_US + 1}
    assert fn.accepted() == (w.MIN_US, w.MAX_US)
    # It is never late before the end of input, whose watermark passes every window.
    assert not w.is_late(w.GLOBAL[1], w.MAX_US - 1)
    assert fn.milestone_window(*w.GLOBAL) == w.GLOBAL


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from([1, 2, 5]), st.sampled_from([1, 2, 4]), st.integers(-40, 40))
def test_cumulative_accepted_times_are_those_whose_windows_fit(
    step: int, steps: int, low: int
) -> None:
    fn = w.WindowFn.cumulative(step * steps, step)
    high = low + 30
    # Every window of an accepted time lies in [low, high], as transforms/test_windows.py
    # defines it for the other window types.
    fits = [
        ts for ts in range(low, high + 1) if all(low <= s and e <= high for s, e in fn.assign(ts))
    ]
    first, last = fn.accepted(low, high)
    if fits:
        assert (first, last) == (fits[0], fits[-1])
        assert fits == list(range(first, last + 1))
    else:
        assert first > last


# --- roll-ups against the row-wise definition -------------------------------------------------

VIEWS = [
    {
        # Each variant is rolled up from its smallest parent: the hours of (org, status)
        # from its quarters, ``[]`` from whichever set holds the fewest rows.
        "name": "fixed_cube",
        "event_time": {"field": "ts"},
        "grouping_cols": ["org", "status", "kind"],
        "grouping_sets": [["org", "status", "kind"], ["org", "status"], ["org"], ["status"], []],
        "window": {"type": "fixed", "size": ["5m", "15m", "1h"]},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
            {"aggregation": "max", "col_name": "latency", "aggregated_col_name": "slowest"},
            {"aggregation": "mean", "col_name": "latency", "aggregated_col_name": "latency"},
            {"aggregation": "last", "col_name": "user", "aggregated_col_name": "last_user"},
            {"aggregation": "top_k", "col_name": "user", "aggregated_col_name": "top"},
            {"aggregation": "count_distinct", "col_name": "user", "aggregated_col_name": "hll"},
            {"aggregation": "collect_set", "col_name": "user", "aggregated_col_name": "users"},
        ],
    },
    {
        "name": "cumulative",
        "event_time": {"field": "ms", "format": "epoch_ms"},
        "grouping_cols": ["org", "status"],
        "grouping_sets": [["org", "status"], ["org"], []],
        "window": {"type": "cumulative", "size": ["30m", "2h"], "step": "10m"},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
            {"aggregation": "min", "col_name": "latency", "aggregated_col_name": "fastest"},
            {"aggregation": "first", "col_name": "user", "aggregated_col_name": "first_user"},
            {"aggregation": "top_k", "col_name": "user", "aggregated_col_name": "top"},
            {
                "aggregation": "count_distinct_exact",
                "col_name": "user",
                "aggregated_col_name": "users",
            },
        ],
    },
    {
        "name": "running",
        "event_time": {"field": "ts"},
        "grouping_cols": ["user", "org"],
        "grouping_sets": [["user", "org"], ["org"], []],
        "window": {"type": "global"},
        "emit": {"early": "10s"},
        "state_ttl": "1d",
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "mean", "col_name": "latency", "aggregated_col_name": "latency"},
            {"aggregation": "max", "col_name": "bytes", "aggregated_col_name": "biggest"},
            {"aggregation": "last", "col_name": "kind", "aggregated_col_name": "last_kind"},
        ],
    },
    {
        "name": "one_total",
        "event_time": {"field": "ts"},
        "grouping_cols": [],
        "window": {"type": "global"},
        "emit": {"early": "10s"},
        "state_ttl": "1d",
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
        ],
    },
]


def engine_rows(plan: ViewPlan, lines: list[bytes], batch: int) -> list[tuple]:
    """Decoded in batches, pre-aggregated, rolled up, merged and extracted by the engine."""
    decoder = Decoder([plan])
    aggregator = plan.compiled.aggregator()
    parts = []
    for first in range(0, len(lines), batch):
        for inputs in decoder.decode(lines[first : first + batch]).views[0].inputs:
            parts.append(aggregator.preaggregate(inputs))
    merged = aggregator.merge(concat(parts, aggregator))
    outputs = aggregator.extract(merged)
    keys = [k.to_pylist() for k in merged.keys]
    rows = []
    for r in range(merged.rows):
        variant = plan.variants[int(merged.variant[r])]
        key = tuple(keys[i][r] for i in variant.positions)
        window = (int(merged.start[r]), int(merged.end[r]))
        rows.append((variant.index, window, repr(key), repr(rounded([o[r] for o in outputs]))))
    return sorted(rows)


def direct_rows(plan: ViewPlan, lines: list[bytes]) -> list[tuple]:
    """Each message added to each of its windows, one at a time, by the view's CombineFn."""
    accumulators: dict[tuple, Any] = {}
    for line in lines:
        extracted = plan.extract(orjson.loads(line))
        if extracted is None:
            continue
        ts, values, group = extracted
        for variant, _ in plan.keys(group):
            key = tuple(group[i] for i in variant.positions)
            for window in variant.assign(ts):
                slot = (variant.index, window, repr(key))
                acc = accumulators.get(slot) or plan.combine.create_accumulator()
                accumulators[slot] = plan.combine.add_input(acc, values)
    return sorted(
        (*slot, repr(rounded(list(plan.combine.extract_output(acc)))))
        for slot, acc in accumulators.items()
    )


@pytest.mark.parametrize("view", VIEWS, ids=[v["name"] for v in VIEWS])
@pytest.mark.parametrize("batch", [1, 37, 1000])
def test_the_roll_up_equals_direct_aggregation(view: dict[str, Any], batch: int) -> None:
    rng = random.Random(len(view["name"]) * 1000 + batch)
    lines = [clean_line(rng, i) for i in range(700)]
    plan = ViewPlan(parse_view(view))
    got = engine_rows(plan, lines, batch)
    assert got == direct_rows(plan, lines)
    if plan.spec.window.is_global:
        assert {window for _, window, _, _ in got} == {w.GLOBAL}
    else:  # several periods, each with several prefixes
        assert len({window[0] for _, window, _, _ in got}) >= 2
        assert len({window for _, window, _, _ in got}) >= 10


def test_each_variant_rolls_up_from_the_variants_that_refine_it() -> None:
    """A variant's parents are the variants whose grouping columns include its own and whose
    windows lie within its windows (fixed sizes that divide its size), and none of the
    cumulative view's."""
    cube, cumulative = (ViewPlan(parse_view(view)).compiled.aggregator() for view in VIEWS[:2])
    for variant in cube.variants:
        expected = {
            parent.index
            for parent in cube.variants
            if parent is not variant
            and set(variant.positions) <= set(parent.positions)
            and variant.window.size_us % parent.window.size_us == 0
        }
        assert set(cube._parents[variant.index]) == expected
    assert len(cube._parents[cube.variants[-1].index]) == len(cube.variants) - 1
    assert not any(cumulative._parents.values())


# --- milestones -----------------------------------------------------------------------------


def test_reached_counts_the_thresholds_a_value_reaches() -> None:
    at = (10, 100, 1000)
    assert [m.reached(at, v) for v in (9, 10, 99.5, 100, 10**6)] == [0, 1, 1, 2, 3]
    # What reaches nothing: null, text, booleans (True is not 1), NaN and infinities.
    for value in (None, "100", True, float("nan"), float("inf"), [100]):
        assert m.reached(at, value) == 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(st.integers(1, 50), min_size=1, max_size=6, unique=True).map(sorted),
    st.lists(st.one_of(st.integers(-10, 60), st.none()), max_size=20),
)
def test_each_threshold_fires_once_when_first_reached(at: list[int], values: list[Any]) -> None:
    fired, seen = 0, []
    for i, value in enumerate(values):
        fired, now = m.fire(at, fired, value)
        for threshold in now:
            # It fires at the first pane whose value reaches it, and never again.
            assert value >= threshold
            assert all(v is None or v < threshold for v in values[:i])
        seen += now
    reached = [t for t in at if any(v is not None and v >= t for v in values)]
    assert seen == reached


def test_milestone_ids_are_stable() -> None:
    # The SHA-256 of ["likes",null,null,["p1"],null,null,"likes",100], its first 32 digits.
    assert m.milestone_id("likes", None, None, ["p1"], None, None, "likes", 100) == (
        "ff4583e3b9ab70525b662cd75a46e3e8"
    )
    start, end = "2024-03-01T00:00:00Z", "2024-03-02T00:00:00Z"
    assert m.milestone_id("daily", 1, "1d", ["cé", None], start, end, "spend", 0.5) == (
        "5a9af37370ba635f4c247822af8f6898"
    )


HOUR = 3_600_000_000
MIDNIGHT = 1_709_251_200_000_000
DAILY = {
    "name": "daily",
    "event_time": {"field": "ts"},
    "grouping_cols": ["campaign", "site"],
    "grouping_sets": [["campaign", "site"], ["campaign"]],
    "window": {"type": "cumulative", "size": "1d", "step": "1h"},
    "milestones": [{"column": "spend", "at": [10, 100]}],
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "n"},
        {"aggregation": "sum", "col_name": "cost", "aggregated_col_name": "spend"},
    ],
}


def test_the_windows_of_a_period_share_their_milestones() -> None:
    milestones = m.ViewMilestones(parse_view(DAILY))
    fired = None
    events = []
    for k, spend in ((1, 5), (2, 12), (3, 40), (4, 130), (5, 140)):
        window = (MIDNIGHT, MIDNIGHT + k * HOUR)
        assert milestones.window(1, *window) == (MIDNIGHT, MIDNIGHT + 24 * HOUR)
        fired, now = milestones.pane(1, *window, ["cmp-1"], [k, spend], fired)
        events += now
    assert fired == [2]
    assert events == [
        {
            "view": "daily",
            "campaign": "cmp-1",
            "site": None,
            "grouping_set": 1,
            "window_start": "2024-03-01T00:00:00Z",
            "window_end": "2024-03-02T00:00:00Z",
            "column": "spend",
            "threshold": threshold,
            "value": value,
            "milestone_id": m.milestone_id(
                "daily",
                1,
                None,
                ["cmp-1", None],
                "2024-03-01T00:00:00Z",
                "2024-03-02T00:00:00Z",
                "spend",
                threshold,
            ),
        }
        for threshold, value in ((10, 12), (100, 130))
    ]


def test_final_rows_fire_each_threshold_once_per_period() -> None:
    milestones = m.ViewMilestones(parse_view(DAILY))
    # The windows of one period of key (cmp-1, fra) in no particular order, and another key.
    ends = [MIDNIGHT + k * HOUR for k in (3, 1, 2, 24)]
    spend = [150, 4, 50.5, 150]
    keys = [["cmp-1", "fra"]] * 4 + [["cmp-2", None]]
    events = milestones.final(
        [0, 0, 0, 0, 1],
        [MIDNIGHT] * 5,
        [*ends, MIDNIGHT + HOUR],
        keys,
        [[1] * 5, [*spend, 9.99]],
    )
    assert [(e["campaign"], e["threshold"], e["value"]) for e in events] == [
        ("cmp-1", 10, 50.5),  # from the 02:00 window, the first to reach 10
        ("cmp-1", 100, 150),
    ]
    assert {e["window_end"] for e in events} == {"2024-03-02T00:00:00Z"}


def test_a_global_milestone_has_no_window() -> None:
    spec = parse_view(
        {
            "name": "likes",
            "event_time": {"field": "ts"},
            "grouping_cols": ["post"],
            "window": {"type": "global"},
            "emit": {"early": "10s"},
            "state_ttl": "30d",
            "milestones": [{"column": "likes", "at": [10, 100]}],
            "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "likes"}],
        }
    )
    milestones = m.ViewMilestones(spec)
    fired, events = milestones.pane(0, *w.GLOBAL, ["p1"], [150], None)
    assert fired == [2]
    assert events[1] == {
        "view": "likes",
        "post": "p1",
        "column": "likes",
        "threshold": 100,
        "value": 150,
        "milestone_id": m.milestone_id("likes", None, None, ["p1"], None, None, "likes", 100),
    }
    assert milestones.pane(0, *w.GLOBAL, ["p1"], [1000], fired) == ([2], [])
    assert not m.ViewMilestones(parse_view({k: v for k, v in DAILY.items() if k != "milestones"}))
