"""Milestones and ``emit.eager`` on the streaming window operator, driven by TestStream.

Milestone events are checked against the DuckDB oracle (:mod:`tests.support.oracle`): the
messages a stream delivers are also written to JSON Lines, and the events must be exactly
those the oracle's final rows reach, each once, whatever pane fired them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from liveagg.engine.compiled import compile_view
from liveagg.engine.windows import GLOBAL
from liveagg.loader import parse_view
from liveagg.spec import ViewSpec
from liveagg.transforms.kafka.sink import _Envelope
from liveagg.transforms.plan import MILESTONES
from liveagg.transforms.rekey import RekeyAggregate
from liveagg.transforms.streaming import StreamingAggregate, _union, window_operator
from liveagg.transforms.windowstate import Bucket, bucket_of
from tests.support.compare import assert_fired_at_first_pane, assert_milestones_match
from tests.support.operator_state import Cell, Timers
from tests.support.oracle import expected_milestones, expected_rows

END = 10_000  # timers fire while the watermark is finite (see test_streaming.py)
W0 = "1970-01-01T00:00:00Z"


def counter_view(name: str, window: dict, lateness: str = "2m", **extra: Any) -> ViewSpec:
    """Counts and sums ``v`` per ``k`` (and ``g`` where grouping sets use it)."""
    return parse_view(
        {
            "name": name,
            "event_time": {"field": "t", "format": "epoch_s"},
            "grouping_cols": extra.pop("grouping_cols", ["k"]),
            "window": window,
            "allowed_lateness": lateness,
            "aggregation_info": [
                {"aggregation": "count", "aggregated_col_name": "n"},
                {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "total"},
            ],
            **extra,
        }
    )


class Messages:
    """The messages of a stream, also written to a JSON Lines file for the oracle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def __call__(self, t: float, k: str = "a", v: int = 1, **more: Any) -> TimestampedValue:
        line = orjson.dumps({"k": k, "t": t, "v": v, **more}).decode()
        self.lines.append(line)
        self.path.write_text("\n".join(self.lines) + "\n")
        return TimestampedValue(line, t)


#: What each run's pipeline saw, by label: filled in this process by the DirectRunner.
_SEEN: dict[str, list[Any]] = defaultdict(list)


def _record(element: Any, label: str) -> None:
    _SEEN[label].append(element)


def _keep(label: str) -> beam.PTransform:
    """Keeps what reaches it under ``label`` (a module function: pickled by reference, so
    it appends to this module's ``_SEEN``)."""
    return beam.Map(_record, label)


def run(
    stream: TestStream, view: ViewSpec, *, two_level: bool = False, clock: float = 0.0
) -> dict[str, list]:
    """Run ``stream`` through the operator (with ``two_level``: level 1 gives partials, level
    2 merges them, as ``liveagg rekey`` does); the rows, milestone events and dead letters,
    in arrival order.

    ``clock`` is the operator's processing time (level 2's in a two-level run; level 1's is
    0 s): an EARLY pane is due ``emit.early`` after it.
    """
    _SEEN.clear()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        messages = p | stream
        if two_level:  # level 1's partials as the envelopes it writes to Kafka, then rekey
            level1 = messages | StreamingAggregate([view], clock=lambda: 0.0, partials=True)
            assert MILESTONES not in level1  # level 1 gives partials: it fires nothing
            level2 = (
                level1["views"][view.name]
                | beam.ParDo(_Envelope(compile_view(view)))
                | beam.Map(orjson.dumps)
                | RekeyAggregate([view], streaming=True, clock=lambda: clock)
            )
            rows, events = level2["views"][view.name], level2.get(MILESTONES)
        else:
            level1 = messages | StreamingAggregate([view], clock=lambda: clock)
            rows, events = level1["views"][view.name], level1.get(MILESTONES)
        rows | "Rows" >> _keep("rows")
        if events is not None:
            events | "Events" >> _keep("events")
        level1["dead_letters"] | "Dead" >> _keep("dead")
    return {"rows": list(_SEEN["rows"]), "events": list(_SEEN["events"]), "dead": _SEEN["dead"]}


def test_fixed_windows_fire_each_reached_threshold_once_across_early_on_time_and_late(
    tmp_path: Path,
) -> None:
    view = counter_view(
        "fixed",
        {"size": "1m"},
        emit={"early": "10s"},
        milestones=[{"column": "n", "at": [1, 2, 3, 5, 8]}, {"column": "total", "at": [10, 25]}],
    )
    m = Messages(tmp_path / "events.jsonl")
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([m(5, "a"), m(6, "a", 9), m(7, "b")])  # a: 2 / 10, b: 1 / 1
        .advance_processing_time(11)  # EARLY: a fires n 1, 2 and total 10; b fires n 1
        .add_elements([m(8, "a")])  # a: 3 / 11, waits for its EARLY pane
        .advance_processing_time(11)  # EARLY: n 3
        .add_elements([m(65, "a", 30)])  # the next window
        .advance_watermark_to(60)  # ON_TIME of [0, 60): nothing new
        .add_elements([m(9, "a"), m(10, "a", 20)])  # LATE: a 5 / 32, fires n 5 and total 25
        .advance_watermark_to(100)
        .add_elements([m(11, "a")])  # LATE: 6, nothing new
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    out = run(stream, view)
    timings = {(r["k"], r["window_start"], r["pane_timing"]) for r in out["rows"]}
    assert {("a", W0, "EARLY"), ("a", W0, "ON_TIME"), ("a", W0, "LATE")} <= timings
    expected = expected_milestones(view, expected_rows(view, m.path))
    assert len(expected) == 10
    assert_milestones_match(out["events"], expected, values=False)
    assert_fired_at_first_pane(out["rows"], out["events"], view.grouping_cols)
    # The early ones fired from EARLY panes, before the window closed.
    assert [(e["k"], e["column"], e["threshold"]) for e in out["events"][:5]] == [
        ("a", "n", 1),
        ("a", "n", 2),
        ("a", "total", 10),
        ("b", "n", 1),
        ("a", "n", 3),
    ]


def test_sliding_windows_with_grouping_sets_fire_what_the_oracle_reaches(tmp_path: Path) -> None:
    view = counter_view(
        "sliding",
        {"type": "sliding", "size": "2m", "period": "1m"},
        grouping_cols=["k", "g"],
        grouping_sets=[["k", "g"], ["k"]],
        emit={"early": "10s"},
        milestones=[{"column": "n", "at": [2, 4, 6]}],
    )
    m = Messages(tmp_path / "events.jsonl")
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([m(5, g="x"), m(50, g="y"), m(61, g="x"), m(62, "b", g="x")])
        .advance_processing_time(11)
        .add_elements([m(70, g="x"), m(100, g="y")])
        .advance_watermark_to(120)  # [0, 120) and [-60, 60), [0, 60) close
        .add_elements([m(30, g="y"), m(110, g="x")])  # late for the closed ones
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    out = run(stream, view)
    expected = expected_milestones(view, expected_rows(view, m.path))
    assert {e.get("grouping_set") for e in expected} == {0, 1}
    assert_milestones_match(out["events"], expected, values=False)
    assert_fired_at_first_pane(out["rows"], out["events"], view.grouping_cols)
    assert not out["dead"]


def test_a_session_merge_keeps_what_either_session_fired(tmp_path: Path) -> None:
    """Sessions [1s, 12s) (2 messages) and [20s, 32s) (3) fire their EARLY panes; then a
    message at 11s bridges them into [1s, 32s) with 6. The merged session keeps the thresholds
    either had fired (2 and 3: the longer prefix), and fires only the ones its value newly
    reaches (4 and 6), with its own bounds: every threshold the final value reaches has
    fired, none twice for a window."""
    view = counter_view(
        "sessions",
        {"type": "session", "gap": "10s"},
        "0s",
        emit={"early": "10s"},
        milestones=[{"column": "n", "at": [2, 3, 4, 6, 7]}],
    )
    m = Messages(tmp_path / "events.jsonl")
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([m(1), m(2), m(1, "b")])
        .add_elements([m(20), m(21), m(22)])
        .advance_processing_time(11)  # EARLY panes of both sessions of "a"
        .add_elements([m(11)])  # bridges them
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    out = run(stream, view)
    fired = [(e["k"], e["window_start"], e["window_end"], e["threshold"]) for e in out["events"]]
    first, second, merged = (
        ("1970-01-01T00:00:01Z", "1970-01-01T00:00:12Z"),
        ("1970-01-01T00:00:20Z", "1970-01-01T00:00:32Z"),
        ("1970-01-01T00:00:01Z", "1970-01-01T00:00:32Z"),
    )
    assert sorted(fired) == sorted(
        [
            ("a", *first, 2),
            ("a", *second, 2),
            ("a", *second, 3),
            ("a", *merged, 4),
            ("a", *merged, 6),
        ]
    )
    # Against the oracle's final sessions: the same (key, column, threshold), each window's
    # thresholds fired once (the merged session's lower ones fired before the merge).
    expected = expected_milestones(view, expected_rows(view, m.path))
    reached = {(e["k"], e["column"], e["threshold"]) for e in expected}
    assert reached == {(e["k"], e["column"], e["threshold"]) for e in out["events"]}
    ids = [e["milestone_id"] for e in out["events"]]
    assert len(ids) == len(set(ids))
    final = next(r for r in out["rows"] if r["pane_timing"] == "ON_TIME" and r["k"] == "a")
    assert (final["window_start"], final["window_end"], final["n"]) == (*merged, 6)


def test_merged_milestone_state_is_the_longer_prefix() -> None:
    assert _union(None, None) is None
    assert _union(None, [1, 0]) == [1, 0]
    assert _union([2, 0], None) == [2, 0]
    assert _union([1, 3], [2, 0]) == [2, 3]


def test_a_two_level_run_fires_at_level_2_only(tmp_path: Path) -> None:
    view = counter_view(
        "two_level",
        {"size": "1m"},
        emit={"early": "10s"},
        milestones=[{"column": "n", "at": [1, 3, 4]}],
    )
    m = Messages(tmp_path / "events.jsonl")
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([m(5), m(6), m(7, "b")])
        .advance_processing_time(11)
        .add_elements([m(8), m(9)])
        .advance_watermark_to(60)
        .add_elements([m(10, "b")])
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    out = run(stream, view, two_level=True)
    expected = expected_milestones(view, expected_rows(view, m.path))
    assert_milestones_match(out["events"], expected, values=False)
    assert_fired_at_first_pane(out["rows"], out["events"], view.grouping_cols)
    assert {e["threshold"] for e in out["events"] if e["k"] == "a"} == {1, 3, 4}


@pytest.mark.parametrize("fanout", [4, 4.0])
def test_a_hot_key_view_on_the_direct_runner_gives_the_unsharded_panes(
    tmp_path: Path, fanout: float
) -> None:
    """``hot_key_fanout`` on Beam's DirectRunner: the panes and milestones of the same view
    without it. That runner holds no stage's watermark for its pending timers, so a merging
    operator closed its windows before the sub-keys' ``ON_TIME`` panes came, then reopened
    them as ``LATE`` with part of the value, ``pane_index`` 0 and their milestones again
    (the fan-out itself is tested on Prism). ``4.0`` is an integer to JSON Schema, and is 4
    (as a float, it failed the bundle in ``range``)."""
    settings = {"emit": {"early": "5s"}, "milestones": [{"column": "n", "at": [1, 2, 3, 5, 9]}]}
    plain = counter_view("hot", {"size": "1m"}, lateness="0s", **settings)
    hot = counter_view("hot", {"size": "1m"}, lateness="0s", hot_key_fanout=fanout, **settings)

    def stream(m: Messages) -> TestStream:
        return (
            TestStream()
            .advance_watermark_to(0)
            .add_elements([m(1)])
            .advance_processing_time(6)
            .add_elements([m(t) for t in range(2, 7)] + [m(8, "b")])
            .advance_processing_time(6)
            .advance_watermark_to(60)
            .add_elements([m(61, "b")])
            .advance_watermark_to(END)
            .advance_watermark_to_infinity()
        )

    m = Messages(tmp_path / "events.jsonl")
    out = run(stream(m), hot)
    assert out["rows"] == run(stream(Messages(tmp_path / "plain.jsonl")), plain)["rows"]
    panes = sorted(
        (r["k"], r["window_start"], r["pane_index"], r["pane_timing"], r["n"]) for r in out["rows"]
    )
    assert panes == [
        ("a", W0, 0, "EARLY", 1),
        ("a", W0, 1, "EARLY", 6),
        ("a", W0, 2, "ON_TIME", 6),
        ("b", W0, 0, "EARLY", 1),
        ("b", W0, 1, "ON_TIME", 1),
        ("b", "1970-01-01T00:01:00Z", 0, "EARLY", 1),
        ("b", "1970-01-01T00:01:00Z", 1, "ON_TIME", 1),
    ]
    expected = expected_milestones(hot, expected_rows(hot, m.path))
    assert_milestones_match(out["events"], expected, values=False)
    assert_fired_at_first_pane(out["rows"], out["events"], hot.grouping_cols)


def _item(operator: Any, count: int) -> tuple:
    combine = operator._plan.combine
    acc = combine.add_inputs(combine.create_accumulator(), [(1, 1)] * count)
    return (b'["a"]', 0, 60_000_000, combine.encode(acc), [])


def test_a_restored_operator_does_not_fire_again() -> None:
    """The thresholds fired are part of the window state, written by the state coder: an
    operator restored from it (a new instance, state decoded as a runner stores it) fires
    only the thresholds the restored window had not fired."""
    view = counter_view("restored", {"size": "1m"}, milestones=[{"column": "n", "at": [1, 3, 4]}])
    state_key = ("restored", 0, bucket_of(b'["a"]'))
    cell, timers = Cell(cached=False), Timers()
    before = window_operator(view, clock=lambda: 0.0, shared_floor=False)
    before.setup()
    assert list(before._process((state_key, [_item(before, 3)]), cell, timers, None)) == []
    fired = list(before._on_watermark(state_key, Timestamp(micros=60_000_000), "", cell, timers))
    assert [(o.value["threshold"]) for o in fired if getattr(o, "tag", None) == MILESTONES] == [
        1,
        3,
    ]
    after = window_operator(view, clock=lambda: 0.0, shared_floor=False)
    after.setup()
    late = list(after._process((state_key, [_item(after, 1)]), cell, timers, None))
    assert [r["pane_timing"] for r in late if isinstance(r, dict)] == ["LATE"]
    assert [o.value["threshold"] for o in late if getattr(o, "tag", None) == MILESTONES] == [4]


def test_state_ttl_decodes_only_the_keys_it_evicts(monkeypatch: Any) -> None:
    """A bucket of 40 keys whose latest messages are 1 s apart: the timer that passes the
    expiry of the first 5 decodes those 5 alone (not the 35 others), writes their last rows
    and drops them; the rest stay, due later."""
    view = counter_view(
        "evict", {"type": "global"}, state_ttl="1m", emit={"early": "10s"}, lateness="0s"
    )
    state_key = ("evict", 0, 7)
    cell, timers = Cell(cached=False), Timers()
    operator = window_operator(view, clock=lambda: 0.0, shared_floor=False, ttl=True)
    operator.setup()
    combine = operator._plan.combine
    acc = combine.encode(combine.add_inputs(combine.create_accumulator(), [(1, 1)]))
    groups = [orjson.dumps([f"k{i:02}"]) for i in range(40)]
    items = [(g, *GLOBAL, acc, [], (i + 1) * 1_000_000) for i, g in enumerate(groups)]
    list(operator._process((state_key, items), cell, timers, None))
    assert min(timers.due.values()) == 61_000_000  # the first key's latest + state_ttl
    decoded: list[bytes] = []
    entry = Bucket.entry
    monkeypatch.setattr(Bucket, "entry", lambda b, g, w: decoded.append(g) or entry(b, g, w))
    out = list(operator._on_watermark(state_key, Timestamp(micros=65_000_000), "", cell, timers))
    assert decoded == groups[:5]
    assert [r["k"] for r in out] == [f"k{i:02}" for i in range(5)]
    assert all(r["pane_timing"] == "EARLY" and r["n"] == 1 for r in out)
    assert min(timers.due.values()) == 66_000_000


def _panes(rows: list[dict]) -> list[tuple]:
    return sorted(
        (r["k"], r["pane_index"], r["pane_timing"], r["n"]) for r in rows if r["window_start"] == W0
    )


EAGER = counter_view(
    "eager", {"size": "1m"}, emit={"early": "10s", "eager": {"column": "n", "below": 3}}
)


#: An operator clock whose EARLY panes fall due long after the test stream's processing time
#: (at most 11 s): every EARLY pane these tests see is an eager one.
LATER = 1000.0


def _eager_stream(m: Messages) -> TestStream:
    return (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([m(1), *(m(1, "b") for _ in range(5))])  # both new: shown at once
        .add_elements([m(2), m(2, "b")])  # a was 1: shown; b was 5: waits
        .add_elements([m(3), m(3, "b")])  # a was 2: shown (3 now); b waits
        .add_elements([m(4)])  # a was 3: waits
        .add_elements([m(5)])  # waits
        .advance_processing_time(11)
        .advance_watermark_to(60)  # ON_TIME: a 5, b 7
        .add_elements([m(6)])  # LATE, as any late batch
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )


def test_eager_panes_come_at_each_batch_below_the_threshold_and_stop_above(
    tmp_path: Path,
) -> None:
    out = run(_eager_stream(Messages(tmp_path / "events.jsonl")), EAGER, clock=LATER)
    assert _panes(out["rows"]) == [
        ("a", 0, "EARLY", 1),
        ("a", 1, "EARLY", 2),
        ("a", 2, "EARLY", 3),
        ("a", 3, "ON_TIME", 5),
        ("a", 4, "LATE", 6),
        ("b", 0, "EARLY", 5),
        ("b", 1, "ON_TIME", 7),
    ]


def test_eager_panes_at_level_2_of_a_two_level_run(tmp_path: Path) -> None:
    """Level 1 gives no eager panes (its panes are partials): it sends a 5 and b 7 at its
    EARLY timer (11 s). Level 2 shows each at once, below the threshold, and nothing more
    before the watermark."""
    out = run(
        _eager_stream(Messages(tmp_path / "events.jsonl")), EAGER, two_level=True, clock=LATER
    )
    early = [p for p in _panes(out["rows"]) if p[2] == "EARLY"]
    assert early == [("a", 0, "EARLY", 5), ("b", 0, "EARLY", 7)]
    assert max(r["n"] for r in out["rows"] if r["k"] == "a") == 6


def test_a_bounded_stream_has_no_eager_panes(tmp_path: Path) -> None:
    """Eager panes are processing-time panes: where a bounded input runs on the operator
    (``--streaming``), as with ``emit.early``, there are none."""
    m = Messages(tmp_path / "events.jsonl")
    _SEEN.clear()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = (
            p | _eager_stream(m) | StreamingAggregate([EAGER], clock=lambda: 0.0, early_panes=False)
        )
        out["views"]["eager"] | _keep("rows")
    assert {r["pane_timing"] for r in _SEEN["rows"]} == {"ON_TIME", "LATE"}


def test_cumulative_windows_share_their_period_milestones(tmp_path: Path) -> None:
    """Periods of 1 minute, windows every 20 s: each window has its own panes (checked
    against the oracle's rows), and a threshold fires once per (key, period), with the
    period's bounds, from whichever window reaches it first, whatever pane that is."""
    view = counter_view(
        "cumulative",
        {"type": "cumulative", "size": "1m", "step": "20s"},
        emit={"early": "10s"},
        milestones=[{"column": "n", "at": [1, 2, 4, 6]}],
    )
    m = Messages(tmp_path / "events.jsonl")
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([m(5), m(25, "b")])  # a: [0, 20), [0, 40), [0, 60); b: the last two
        .advance_processing_time(11)  # EARLY panes: a and b fire 1 (once, not per window)
        .add_elements([m(30), m(45)])  # a: 3 in [0, 60), 2 in [0, 40)
        .advance_watermark_to(40)  # [0, 20) and [0, 40) ON_TIME: nothing new beyond 2
        .add_elements([m(15), m(70)])  # late for [0, 20) and [0, 40); a's next period
        .advance_watermark_to(60)  # [0, 60) ON_TIME with 4: fires 4
        .add_elements([m(50), m(55)])  # LATE: 6
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    out = run(stream, view)
    final: dict[tuple, dict] = {}
    for row in out["rows"]:
        where = (row["k"], row["window_start"], row["window_end"])
        if where not in final or row["pane_index"] > final[where]["pane_index"]:
            final[where] = row
    oracle = expected_rows(view, m.path)
    assert {w: r["n"] for w, r in final.items()} == {
        (r["k"], r["window_start"], r["window_end"]): r["n"] for r in oracle
    }
    expected = expected_milestones(view, oracle)
    assert [(e["k"], e["window_end"], e["threshold"]) for e in expected] == [
        ("a", "1970-01-01T00:01:00Z", 1),
        ("a", "1970-01-01T00:01:00Z", 2),
        ("a", "1970-01-01T00:01:00Z", 4),
        ("a", "1970-01-01T00:01:00Z", 6),
        ("b", "1970-01-01T00:01:00Z", 1),
        ("a", "1970-01-01T00:02:00Z", 1),
    ]
    assert_milestones_match(out["events"], expected, values=False)
    # Each fired with the value of a pane of its period that reached it.
    for event in out["events"]:
        values = {
            r["n"]
            for r in out["rows"]
            if (r["k"], r["window_start"]) == (event["k"], event["window_start"])
        }
        assert event["threshold"] <= event["value"] in values


RUNNING = counter_view(
    "running",
    {"type": "global"},
    "0s",
    emit={"early": "10s", "eager": {"column": "n", "below": 2}},
    state_ttl="1m",
    milestones=[{"column": "n", "at": [1, 2, 3]}],
)


def _running_stream(m: Messages) -> TestStream:
    return (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([m(5), m(5, "b")])  # new keys: eager panes, milestone 1
        .add_elements([m(10)])  # a was 1: eager pane, milestone 2
        .add_elements([m(20), m(30)])  # a was 2: waits for its EARLY timer
        .add_elements([m(100)])  # a's latest event time: 100 s, in state until 160 s
        .advance_watermark_to(70)  # b (latest 5 s) leaves state, its row written
        .add_elements([m(71, "b")])  # a new total for b, from pane 0
        .add_elements([m(50)])  # never too late: a global window never closes
        .advance_watermark_to(200)  # a leaves, its pending data written first; b leaves
        .add_elements([m(300)])  # a new total for a
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )


def test_a_global_window_keeps_running_totals_until_state_ttl(tmp_path: Path) -> None:
    """Running totals: EARLY rows only (eager ones below 2, and the one a key's pending data
    gets when it leaves state), a key leaving state once the watermark passes its latest
    event time + state_ttl, and starting again from nothing (pane 0) when it comes back,
    without firing again the milestones it fired before it left (at most once per run)."""
    out = run(_running_stream(Messages(tmp_path / "events.jsonl")), RUNNING, clock=LATER)
    rows = [(r["k"], r["pane_index"], r["pane_timing"], r["n"]) for r in out["rows"]]
    assert all("window_start" not in r for r in out["rows"])
    assert rows == [
        ("a", 0, "EARLY", 1),
        ("b", 0, "EARLY", 1),
        ("a", 1, "EARLY", 2),
        ("b", 0, "EARLY", 1),  # b again, after it left state at 65 s
        ("a", 2, "EARLY", 6),  # a's pending 4 messages, written as it leaves at 160 s
        ("a", 0, "EARLY", 1),  # a again
    ]
    fired = [(e["k"], e["threshold"], e["value"]) for e in out["events"]]
    assert fired == [("a", 1, 1), ("b", 1, 1), ("a", 2, 2), ("a", 3, 6)]
    assert len({e["milestone_id"] for e in out["events"]}) == 4
    assert all("window_start" not in e for e in out["events"])
    assert not out["dead"]


def test_a_bounded_stream_keeps_every_key_of_a_global_window_to_its_on_time_row(
    tmp_path: Path,
) -> None:
    """Bounded input under ``--streaming``: its watermark jumps to the end after all the
    input, so no key leaves state, and each key's one ON_TIME row holds its total over all
    of it, as the bounded path's row does (the oracle's)."""
    m = Messages(tmp_path / "events.jsonl")
    _SEEN.clear()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = (
            p
            | _running_stream(m)
            | StreamingAggregate([RUNNING], clock=lambda: 0.0, early_panes=False)
        )
        out["views"]["running"] | _keep("rows")
    rows = sorted((r["k"], r["pane_timing"], r["n"], r["total"]) for r in _SEEN["rows"])
    oracle = expected_rows(RUNNING, m.path)
    assert rows == sorted((r["k"], "ON_TIME", r["n"], r["total"]) for r in oracle)
    assert [n for _, _, n, _ in rows] == [7, 2]


def test_each_grouping_set_of_a_global_window_leaves_state_by_its_own_latest_message(
    tmp_path: Path,
) -> None:
    """A key of each grouping set has its own latest event time: ("a", "x") leaves at 65 s
    while ("a") holds on to 110 s, from ("a", "y")'s message."""
    view = counter_view(
        "sets",
        {"type": "global"},
        "0s",
        grouping_cols=["k", "g"],
        grouping_sets=[["k", "g"], ["k"]],
        emit={"early": "10s", "eager": {"column": "n", "below": 2}},
        state_ttl="1m",
    )
    m = Messages(tmp_path / "events.jsonl")
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([m(5, g="x"), m(50, g="y")])
        .advance_watermark_to(70)  # ("a", "x") leaves
        .add_elements([m(71, g="x")])  # a new ("a", "x"); ("a") was 2: waits
        .advance_watermark_to(200)  # all leave; ("a") writes its pending row first
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    out = run(stream, view, clock=LATER)
    rows = [(r["grouping_set"], r["g"], r["pane_index"], r["n"]) for r in out["rows"]]
    assert sorted(rows) == [
        (0, "x", 0, 1),
        (0, "x", 0, 1),  # after it left state
        (0, "y", 0, 1),
        (1, None, 0, 2),
        (1, None, 1, 3),  # written as it leaves
    ]
    assert {r["pane_timing"] for r in out["rows"]} == {"EARLY"}
