"""Event-time semantics of the streaming window operator, driven by TestStream.

Timestamps are written relative to the window: window [0s, 60s), lateness 120s, early 10s.
"""

from __future__ import annotations

import apache_beam as beam
import orjson
import pytest
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from liveagg.loader import parse_view
from liveagg.spec import ViewSpec
from liveagg.transforms import streaming
from liveagg.transforms.streaming import (
    _NEVER,
    StreamingAggregate,
    _load,
    _Route,
    _store,
    window_operator,
)

VIEW = parse_view(
    {
        "name": "clicks",
        "event_time": {"field": "t", "format": "epoch_s"},
        "grouping_cols": ["k"],
        "window": {"size": "1m"},
        "allowed_lateness": "2m",
        "emit": {"early": "10s"},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "total"},
        ],
    }
)


def msg(k: str, t: float, v: int = 1) -> TimestampedValue:
    return TimestampedValue(orjson.dumps({"k": k, "t": t, "v": v}).decode(), t)


def _pane(row: dict) -> tuple:
    return (
        row["k"],
        row["window_start"],
        row["pane_timing"],
        row["pane_index"],
        row["n"],
        row["total"],
    )


def _dead(letter: dict) -> tuple:
    try:
        t = orjson.loads(letter["payload"]).get("t")
    except orjson.JSONDecodeError:
        t = None
    return (letter["view"], letter["reason"], t)


def check(stream: TestStream, rows: list[tuple], dead: list[tuple], view: ViewSpec = VIEW) -> None:
    """Run the stream through the operator; assert every pane and every dead letter."""
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | stream | StreamingAggregate([view], clock=lambda: 0.0)
        panes = out["views"][view.name] | "Panes" >> beam.Map(_pane)
        letters = out["dead_letters"] | "Letters" >> beam.Map(_dead)
        assert_that(panes, equal_to(rows), label="panes")
        assert_that(letters, equal_to(dead), label="dead_letters")


# Timers fire while the watermark is finite: Beam's Python DirectRunner does not hold the
# downstream watermark for timer output, and assert_that's global window closes at infinity.
END = 10_000

W0 = "1970-01-01T00:00:00Z"
W1 = "1970-01-01T00:01:00Z"


def test_on_time_only() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([msg("a", 5, 2), msg("a", 50, 3), msg("b", 59.5)])
        .add_elements([msg("a", 65)])
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    check(
        stream,
        rows=[
            ("a", W0, "ON_TIME", 0, 2, 5),
            ("b", W0, "ON_TIME", 0, 1, 1),
            ("a", W1, "ON_TIME", 0, 1, 1),
        ],
        dead=[],
    )


def test_early_on_time_late_and_too_late() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([msg("a", 5), msg("a", 10)])
        .advance_processing_time(11)  # early pane: 2 so far
        .advance_processing_time(11)  # nothing new: no pane
        .advance_watermark_to(60)  # on time: still 2
        .add_elements([msg("a", 30)])  # late within lateness: 3
        .advance_watermark_to(100)
        .add_elements([msg("a", 40, 10)])  # late within lateness: 4, total 12
        .advance_watermark_to(181)  # window expired at 60s + 120s
        .add_elements([msg("a", 45)])  # too late: dead letter
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    check(
        stream,
        rows=[
            ("a", W0, "EARLY", 0, 2, 2),
            ("a", W0, "ON_TIME", 1, 2, 2),
            ("a", W0, "LATE", 2, 3, 3),
            ("a", W0, "LATE", 3, 4, 13),
        ],
        dead=[("clicks", "too_late", 45)],
    )


def test_too_late_for_a_closed_window_while_the_next_is_open() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([msg("a", 5), msg("a", 70)])
        .advance_watermark_to(200)  # [0, 60) closed at 180; [60, 120) open until 240
        .add_elements([msg("a", 6), msg("a", 80)])
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    check(
        stream,
        rows=[
            ("a", W0, "ON_TIME", 0, 1, 1),
            ("a", W1, "ON_TIME", 0, 1, 1),
            ("a", W1, "LATE", 1, 2, 2),
        ],
        dead=[("clicks", "too_late", 6)],
    )


def test_bad_messages_are_dead_letters_and_other_keys_continue() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements(
            [
                TimestampedValue("{not json", 1),
                TimestampedValue(orjson.dumps({"k": "a", "v": 1}).decode(), 1),
                TimestampedValue(orjson.dumps({"k": "a", "t": 2, "v": "many"}).decode(), 2),
                msg("a", 3, 7),
            ]
        )
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    check(
        stream,
        rows=[("a", W0, "ON_TIME", 0, 1, 7)],
        dead=[
            (None, "not_json", None),
            ("clicks", "missing_event_time", None),
            ("clicks", "not_numeric", 2),
        ],
    )


def test_zero_lateness_sends_late_data_to_dead_letters() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([msg("a", 5)])
        .advance_watermark_to(60)
        .add_elements([msg("a", 6)])
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    view = parse_view(
        {
            "name": "strict",
            "event_time": {"field": "t", "format": "epoch_s"},
            "grouping_cols": ["k"],
            "window": {"size": "1m"},
            "allowed_lateness": "0s",
            "aggregation_info": [
                {"aggregation": "count", "aggregated_col_name": "n"},
                {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "total"},
            ],
        }
    )
    check(stream, rows=[("a", W0, "ON_TIME", 0, 1, 1)], dead=[("strict", "too_late", 6)], view=view)


class _Cell:
    """A key's ReadModifyWriteState as the operator sees it: read, write, clear."""

    def __init__(self, value: object = None) -> None:
        self.value = value

    def read(self) -> object:
        return self.value

    def write(self, value: object) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


BUCKET = ("clicks", 0, 7)  # a state key: (view, variant, bucket)
LEGACY = ("clicks", 0, b'["a"]')  # a state key of builds keyed by grouping key


def test_a_bucket_keeps_its_state_in_one_cell_that_its_coder_round_trips() -> None:
    groups = {b'["a"]': {(0, 60_000_000): [b"acc", 2, True, False, None]}}
    cell = _Cell()
    assert _load(cell, BUCKET) == ({}, _NEVER, False)
    _store(cell, BUCKET, groups, 59_999_999, True)
    coder = FastPrimitivesCoder()
    cell.value = coder.decode(coder.encode(cell.value))
    assert _load(cell, BUCKET) == (groups, 59_999_999, True)
    _store(cell, BUCKET, {}, 179_999_999, False)  # no window open, but how far it closed stays
    assert _load(cell, BUCKET) == ({}, 179_999_999, False)
    _store(cell, BUCKET, {}, _NEVER, False)
    assert cell.value is None


def test_state_keyed_by_grouping_key_in_earlier_builds_keeps_its_open_windows() -> None:
    windows = {(0, 60_000_000): [b"acc", 1, False, True, None]}
    assert _load(_Cell(windows), LEGACY) == ({b'["a"]': windows}, _NEVER, False)  # three cells
    cell = _Cell((windows, 59_999_999, 1))  # one cell
    assert _load(cell, LEGACY) == ({b'["a"]': windows}, 59_999_999, True)
    _store(cell, LEGACY, {b'["a"]': windows}, 59_999_999, False)
    assert cell.value == (windows, 59_999_999, 0)  # written back in the layout it was read


class _Timers:
    """A watermark TimerParam that records each tag's timer, as the runner keeps them."""

    def __init__(self) -> None:
        self.due: dict[str, int] = {}

    def set(self, ts: Timestamp, dynamic_timer_tag: str = "") -> None:
        self.due[dynamic_timer_tag] = ts.micros

    def clear(self, dynamic_timer_tag: str = "") -> None:
        self.due.pop(dynamic_timer_tag, None)


def test_each_window_has_its_own_timer_so_a_watermark_jump_fires_them_all() -> None:
    """One timer per key fired a key's windows one watermark step apart (minutes on Flink
    for a backlog); a timer per window lets one jump of the watermark fire them all."""
    operator = window_operator(VIEW, clock=lambda: 0.0)
    operator.setup()
    cell, timers = _Cell(), _Timers()
    key = BUCKET
    minute = 60_000_000
    for t in (5, 65, 125):  # three windows of one key
        element = (key, [(b'["a"]', t * 1_000_000, (1, 1), b"{}", None)])
        assert list(operator._process(element, cell, timers, None)) == []
    assert timers.due == {
        f"{m * minute}/{(m + 1) * minute}": (m + 1) * minute - 1 for m in range(3)
    }

    # The watermark jumps past all three windows' ends; the first window's timer fires.
    first = f"0/{minute}"
    fire = Timestamp(micros=timers.due.pop(first))
    rows = list(operator._on_watermark(key, Timestamp(micros=3 * minute), first, cell, timers))
    assert [(r["window_start"], r["pane_timing"]) for r in rows] == [
        (W0, "ON_TIME"),
        (W1, "ON_TIME"),
        ("1970-01-01T00:02:00Z", "ON_TIME"),
    ]
    # The first window's lateness has passed too: it is dropped at once. The others wait
    # for their end + allowed lateness (2 minutes).
    assert timers.due == {f"{m * minute}/{(m + 1) * minute}": (m + 3) * minute - 1 for m in (1, 2)}
    assert fire.micros == minute - 1
    assert _load(cell, key)[1] == 3 * minute - 1

    # The second window's timer fires at its expiry: it is dropped, the third stays.
    second = f"{minute}/{2 * minute}"
    at = Timestamp(micros=timers.due.pop(second))
    assert list(operator._on_watermark(key, at, second, cell, timers)) == []
    groups, closed_upto, _ = _load(cell, key)
    assert list(groups[b'["a"]']) == [(2 * minute, 3 * minute)]
    assert closed_upto == 4 * minute - 1
    assert list(timers.due) == [f"{2 * minute}/{3 * minute}"]


def test_an_untagged_timer_of_the_earlier_layout_arms_every_open_window() -> None:
    operator = window_operator(VIEW, clock=lambda: 0.0)
    operator.setup()
    combine = operator._plan.combine
    acc = combine.encode(combine.add_input(combine.create_accumulator(), (1, 1)))
    minute = 60_000_000
    cell = _Cell(
        {
            (0, minute): [acc, 0, False, True, None],
            (minute, 2 * minute): [acc, 0, False, True, None],
        }
    )
    timers = _Timers()
    key = LEGACY
    rows = list(operator._on_watermark(key, Timestamp(micros=minute - 1000), "", cell, timers))
    assert [(r["window_start"], r["pane_timing"], r["n"]) for r in rows] == [(W0, "ON_TIME", 1)]
    assert timers.due == {f"0/{minute}": 3 * minute - 1, f"{minute}/{2 * minute}": 2 * minute - 1}


def test_the_keys_of_a_bucket_share_its_window_timers_and_how_far_it_has_closed() -> None:
    operator = window_operator(VIEW, clock=lambda: 0.0)
    operator.setup()
    cell, timers = _Cell(), _Timers()
    minute = 60_000_000
    window = f"0/{minute}"

    def message(group: bytes, t: float) -> list:
        element = (BUCKET, [(group, int(t * 1_000_000), (1, 1), b"{}", None)])
        return list(operator._process(element, cell, timers, None))

    assert message(b'["a"]', 5) == []
    assert message(b'["b"]', 6) == []
    assert timers.due == {window: minute - 1}
    at = Timestamp(micros=timers.due.pop(window))
    rows = list(operator._on_watermark(BUCKET, at, window, cell, timers))
    assert sorted((r["k"], r["pane_timing"]) for r in rows) == [("a", "ON_TIME"), ("b", "ON_TIME")]
    assert timers.due == {window: 3 * minute - 1}  # both wait for end + allowed lateness

    # A key new to the window after it fired: the shared timer moves back to the window's end,
    # the new key's pane fires then, and the timer returns to the others' expiry.
    assert message(b'["c"]', 7) == []
    assert timers.due == {window: minute - 1}
    at = Timestamp(micros=timers.due.pop(window))
    rows = list(operator._on_watermark(BUCKET, at, window, cell, timers))
    assert [(r["k"], r["pane_timing"], r["pane_index"]) for r in rows] == [("c", "ON_TIME", 0)]
    assert timers.due == {window: 3 * minute - 1}

    # Expiry drops the window for every key; a message for it, from any key, is too late.
    at = Timestamp(micros=timers.due.pop(window))
    assert list(operator._on_watermark(BUCKET, at, window, cell, timers)) == []
    assert _load(cell, BUCKET) == ({}, 3 * minute - 1, False)
    (letter,) = message(b'["d"]', 8)
    assert letter.tag == "dead_letter" and letter.value["reason"] == "too_late"
    assert timers.due == {}


def test_the_router_sends_a_bundle_as_batches_per_state_key_in_parts_of_bounded_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One element per state key and bundle, not per message (each element crosses to the
    runner and back on Flink); a large bundle leaves in parts, so memory stays bounded."""
    monkeypatch.setattr(streaming, "MAX_BATCHED", 4)
    router = _Route([VIEW])
    router.setup()
    router.start_bundle()
    sent = []
    for i in range(6):
        payload = orjson.dumps({"k": "a" if i % 2 else "b", "t": 100 - i, "v": i})
        sent += list(router.process(payload))
    sent += list(router.finish_bundle())
    batches = [(out.value.value, out.value.timestamp.micros) for out in sent]
    assert {out.tag for out in sent} == {"view/clicks"}
    assert streaming.bucket_of(b'["a"]') != streaming.bucket_of(b'["b"]')
    # Two flushes (after 4 messages, then the bundle's end), each one batch per key.
    assert [
        (state_key[2], [ts // 10**6 for _, ts, _, _, _ in items], earliest // 10**6)
        for (state_key, items), earliest in batches
    ] == [
        (streaming.bucket_of(b'["b"]'), [100, 98], 98),
        (streaming.bucket_of(b'["a"]'), [99, 97], 97),
        (streaming.bucket_of(b'["b"]'), [96], 96),
        (streaming.bucket_of(b'["a"]'), [95], 95),
    ]
    assert [row for (_, items), _ in batches for _, _, row, _, _ in items] == [
        (1, 0),
        (1, 2),
        (1, 1),
        (1, 3),
        (1, 4),
        (1, 5),
    ]
