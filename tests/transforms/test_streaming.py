"""Event-time semantics of the streaming window operator, driven by TestStream.

Timestamps are written relative to the window: window [0s, 60s), lateness 120s, early 10s.
"""

from __future__ import annotations

import marshal
import random
from typing import Any

import apache_beam as beam
import numpy as np
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from liveagg.engine.windows import GLOBAL
from liveagg.loader import parse_view
from liveagg.spec import ViewSpec
from liveagg.transforms import streaming
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.plan import ViewPlan
from liveagg.transforms.streaming import StreamingAggregate, _Route, window_operator
from liveagg.transforms.windowstate import MAX_DELTAS, Bucket, BucketCoder, Delta, bucket_of
from tests.support.operator_state import Cell, Timers


def view_of(name: str, window: dict, lateness: str, **extra: Any) -> ViewSpec:
    """A view counting and summing ``v`` per ``k``, event time ``t`` in epoch seconds."""
    return parse_view(
        {
            "name": name,
            "event_time": {"field": "t", "format": "epoch_s"},
            "grouping_cols": ["k"],
            "window": window,
            "allowed_lateness": lateness,
            "aggregation_info": [
                {"aggregation": "count", "aggregated_col_name": "n"},
                {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "total"},
            ],
            **extra,
        }
    )


VIEW = view_of("clicks", {"size": "1m"}, "2m", emit={"early": "10s"})


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
    view = view_of("strict", {"size": "1m"}, "0s")
    check(stream, rows=[("a", W0, "ON_TIME", 0, 1, 1)], dead=[("strict", "too_late", 6)], view=view)


SESSIONS = view_of("sessions", {"type": "session", "gap": "6s"}, "0s")


@pytest.mark.parametrize(
    "bundles",
    [
        pytest.param([[1], [5]], id="apart"),
        pytest.param([[5], [1]], id="apart-reversed"),
        pytest.param([[1, 5]], id="together"),
        pytest.param([[5, 1]], id="together-reversed"),
    ],
)
@pytest.mark.parametrize("located", [False, True], ids=["no-source", "kafka-watermark"])
def test_a_session_message_is_too_late_by_its_own_session(
    bundles: list[list[int]], located: bool
) -> None:
    """Key "b"'s session [2s, 8s) fires and expires at 10.5s: the operator knows the
    watermark passed 8s. "a" at 1s (its session [1s, 7s) has expired) is too late and "a" at
    5s (session [5s, 11s)) is on time, whether the two arrive in one bundle or two: Beam
    judges each element by the window it is assigned, before merging
    (apache_beam/transforms/trigger.py, ``GeneralTriggerDriver.process_elements`` skips an
    expired window, then merges). Messages without a source may all be late; a Kafka
    record carries its partition's watermark, which tells the router which may be."""

    def sent(k: str, t: int, watermark_s: float) -> TimestampedValue:
        if not located:
            return msg(k, t)
        meta = {"topic": "t", "partition": 0, "offset": t, "watermark": int(watermark_s * 1e6)}
        return TimestampedValue((orjson.dumps({"k": k, "t": t, "v": 1}).decode(), meta), t)

    stream = TestStream().advance_watermark_to(0).add_elements([sent("b", 2, 0)])
    stream = stream.advance_watermark_to(10.5)
    for bundle in bundles:
        stream = stream.add_elements([sent("a", t, 10.5) for t in bundle])
    stream = stream.advance_watermark_to(END).advance_watermark_to_infinity()
    check(
        stream,
        rows=[
            ("b", "1970-01-01T00:00:02Z", "ON_TIME", 0, 1, 1),
            ("a", "1970-01-01T00:00:05Z", "ON_TIME", 0, 1, 1),
        ],
        dead=[("sessions", "too_late", 1)],
        view=SESSIONS,
    )


LATE_SESSIONS = view_of("sessions", {"type": "session", "gap": "6s"}, "12s")


def check_after_c(bundles: list[list[TimestampedValue]], rows: list[tuple]) -> None:
    """Key "c"'s session [2s, 8s) fires and expires (20s) before ``bundles`` arrive at the
    watermark 20.5s, so the operator knows the watermark; then the panes are ``rows``."""
    stream = TestStream().advance_watermark_to(0).add_elements([msg("c", 2)])
    stream = stream.advance_watermark_to(20.5)
    for bundle in bundles:
        stream = stream.add_elements(bundle)
    stream = stream.advance_watermark_to(END).advance_watermark_to_infinity()
    c = ("c", "1970-01-01T00:00:02Z", "ON_TIME", 0, 1, 1)
    check(stream, rows=[c, *rows], dead=[], view=LATE_SESSIONS)


def test_late_messages_that_merge_in_one_bundle_show_one_late_pane() -> None:
    """Two late messages of "b" in one bundle, each within the allowed lateness, merge into
    the session [8s, 19s): one LATE pane, as Beam merges a bundle's windows before firing,
    though the router hands the operator each of them apart (either may have been too late)."""
    late = ("b", "1970-01-01T00:00:08Z", "LATE", 0, 2, 6)
    check_after_c([[msg("b", 13), msg("b", 8, 5)]], [late])


def test_a_late_session_merged_into_an_open_one_in_its_bundle_is_on_time() -> None:
    """ "a" at 12s alone would be late (its session [12s, 18s) ended before the watermark,
    20.5s), but "a" at 16s in the same bundle merges it into the open session [20s, 26s):
    Beam merges the bundle's windows first, so [12s, 26s) is on time, one ON_TIME pane."""
    check_after_c(
        [[msg("a", 20)], [msg("a", 12), msg("a", 16)]],
        [("a", "1970-01-01T00:00:12Z", "ON_TIME", 0, 3, 3)],
    )


A = b'["a"]'
BUCKET = ("clicks", 0, bucket_of(A))  # a state key: (view, variant, bucket)


def test_a_bucket_keeps_its_keys_windows_encoded_apart_and_its_coder_round_trips() -> None:
    bucket = Bucket()
    bucket.windows(A)[(0, 60_000_000)] = [b"acc", 2, True, False, None, False, None]
    bucket.windows(b'["b"]')[(0, 60_000_000)] = [b"acc", 0, False, True, None, False, None]
    bucket.settle()
    assert bucket.members((0, 60_000_000)) == {A, b'["b"]'}
    assert bucket.dirty((0, 60_000_000)) == {b'["b"]'}
    assert bucket.due((0, 60_000_000), 120_000_000) == 59_999_999  # "b" has not fired yet
    coder = BucketCoder()
    again = coder.decode(coder.encode(bucket))
    assert again.windows(A) == {(0, 60_000_000): [b"acc", 2, True, False, None, False, None]}
    assert again.members((0, 60_000_000)) == {A, b'["b"]'}
    again.windows(b'["b"]').clear()  # "b" closes its window: only "a" holds it, fired
    again.settle()
    assert again.due((0, 60_000_000), 120_000_000) == 179_999_999
    assert len(again) == 1


def test_a_global_windows_timer_is_due_when_its_first_key_expires() -> None:
    """``state_ttl``: each key's expiry is indexed, kept by the coder and by the deltas of
    a cell's log, and the window's timer is due at the earliest; a state of the format
    before the index (no key held a global window) still reads."""
    window = GLOBAL
    b = b'["b"]'
    cell = Cell(cached=False)
    bucket = Bucket()
    bucket.windows(A)[window] = [b"acc", 1, False, True, None, None, None, 90]
    bucket.windows(b)[window] = [b"acc", 1, False, True, None, None, None, 70]
    bucket.store(cell, bucket.closed_upto)
    assert cell.value.due(window, 0) == 70
    again = cell.value
    again.windows(b)[window][7] = 120  # "b" got a later message
    again.store(cell, again.closed_upto)
    assert isinstance(cell.parts[-1], Delta) and cell.value.due(window, 0) == 90
    again.windows(A).clear()  # "a" left state
    again.store(cell, again.closed_upto)
    assert cell.value.due(window, 0) == 120
    old = b"S" + marshal.dumps((2, 1, 5, {}, {}, {}, {}))  # format 2: no expiry index
    assert BucketCoder().decode(old).closed_upto == 5


def test_the_milestones_of_a_key_that_left_state_are_kept_until_it_comes_back() -> None:
    """What a key fired before its state_ttl passed is kept by the coder and by the deltas
    of a cell's log, and handed back once; a state of format 4 (none kept) still reads."""
    window = GLOBAL
    cell = Cell(cached=False)
    bucket = Bucket()
    bucket.windows(A)[window] = [b"acc", 1, False, True, None, None, [2], 90]
    bucket.store(cell, bucket.closed_upto)
    bucket = Bucket.load(cell)
    bucket.windows(A).clear()  # "a" leaves state
    bucket.spend(A, window, [2])
    bucket.store(cell, bucket.closed_upto)
    assert isinstance(cell.parts[-1], Delta) or len(cell.parts) == 1
    for read in (Bucket.load(cell), BucketCoder().decode(BucketCoder().encode(Bucket.load(cell)))):
        assert len(read) == 0 and read.take_spent(b'["b"]', window) is None
        assert read.take_spent(A, window) == [2] and read.take_spent(A, window) is None
    bucket = Bucket.load(cell)
    assert bucket.take_spent(A, window) == [2]
    bucket.store(cell, bucket.closed_upto)
    assert Bucket.load(cell).take_spent(A, window) is None
    format_4 = b"S" + marshal.dumps((4, 1, 5, {}, {}, {}, {}))
    assert BucketCoder().decode(format_4).take_spent(A, window) is None


def _bundle(cell: Cell, rng: random.Random, keys: int) -> None:
    """One bundle's worth of changes to a bucket: some keys gain or lose windows."""
    bucket = Bucket.load(cell)
    closed = bucket.closed_upto
    for _ in range(rng.randint(0, 6)):
        windows = bucket.windows(b"k%d" % rng.randrange(keys))
        window = (rng.randrange(4) * 60, rng.randrange(4) * 60 + 60)
        if rng.random() < 0.3:
            windows.pop(window, None)
        else:
            entry = windows.setdefault(window, [b"", 0, False, False, None, False, None])
            entry[0] += b"x"
            entry[2], entry[3] = rng.random() < 0.5, rng.random() < 0.5
    if rng.random() < 0.2:  # a key leaves a window by its state_ttl, or comes back
        group, window = b"k%d" % rng.randrange(keys), (rng.randrange(4) * 60, 60)
        if bucket.take_spent(group, window) is None:
            bucket.spend(group, window, [rng.randrange(1, 4)])
    if rng.random() < 0.1:
        bucket.closed_upto = max(closed, rng.randrange(10**6))
    bucket.store(cell, closed)


@pytest.mark.parametrize("seed", range(5))
def test_a_cell_log_reads_the_same_from_the_cache_and_from_the_runner(seed: int) -> None:
    """The cached bucket (changed in place) and the one replayed from a snapshot and its
    deltas agree after every bundle, across rewrites of the snapshot."""
    rng = random.Random(seed)
    cached, stored = Cell(cached=True), Cell(cached=False)
    snapshots = 0
    for _ in range(600):
        state = rng.getstate()
        _bundle(cached, rng, 40)
        rng.setstate(state)
        _bundle(stored, rng, 40)
        assert Bucket.load(stored).state() == Bucket.load(cached).state()
        for bucket in (Bucket.load(cached), Bucket.load(stored)):  # each key's windows index
            blobs = bucket.state()[3]
            held = {g: {w for w, keys in blobs.items() if g in keys} for g in bucket.groups()}
            assert held == {g: set(bucket._held_by(g)) for g in bucket.groups()}
            assert set(held) == {g for keys in blobs.values() for g in keys}
        assert len(stored.parts) <= MAX_DELTAS + 1
        snapshots += bool(stored.parts) and len(stored.parts) == 1
    assert snapshots > 2


def test_a_bundle_appends_only_the_keys_it_touched() -> None:
    """A bundle's write costs the keys it changed, not the keys its bucket holds."""
    cell = Cell(cached=False)
    bucket = Bucket()
    for i in range(5_000):
        bucket.windows(b"k%d" % i)[(0, 60)] = [b"acc", 0, False, True, None, False, None]
    bucket.store(cell, bucket.closed_upto)
    (snapshot,) = cell.parts
    bucket = Bucket.load(cell)
    bucket.windows(b"k7")[(0, 60)][0] = b"acc2"
    bucket.store(cell, bucket.closed_upto)
    delta = cell.parts[-1]
    assert isinstance(delta, Delta) and list(delta.changes) == [(b"k7", (0, 60))]
    assert len(BucketCoder().encode(delta)) < 100 < len(BucketCoder().encode(snapshot)) // 100
    assert len(Bucket.load(cell)) == 5_000
    # A bucket left by all its keys keeps a snapshot of no keys, and the watermark it saw.
    bucket = Bucket.load(cell)
    for i in range(5_000):
        bucket.windows(b"k%d" % i).clear()
    bucket.closed_upto = 42
    bucket.store(cell, -1)
    (empty,) = cell.parts
    assert len(BucketCoder().encode(empty)) < 100
    assert Bucket.load(cell).closed_upto == 42 and len(Bucket.load(cell)) == 0


def test_state_of_the_previous_format_reads_as_the_same_bucket() -> None:
    """Format 3 kept each key's windows as one blob: a snapshot and a delta of it, as an
    earlier build stored them, read as the bucket this build writes for the same entries."""
    w0, w1 = (0, 60), (60, 120)
    b = b'["b"]'
    fired, dirty = [b"x", 1, True, False, None, None, None, None], [b"y", 0, False, True]
    per_key = {A: marshal.dumps({w0: fired, w1: dirty}), b: marshal.dumps({w0: dirty})}
    snapshot = (3, 1, 7, per_key, {w0: {A, b}, w1: {A}}, {w0: {A}}, {w0: {b}, w1: {A}}, {})
    # The delta: "a" leaves w0 and keeps w1; "b" leaves state.
    delta = (2, 9, {A: marshal.dumps({w1: dirty}), b: None})
    cell = Cell(cached=False)
    cell.parts = [BucketCoder().decode(b"S" + marshal.dumps(snapshot))]
    cell.parts.append(BucketCoder().decode(b"D" + marshal.dumps(delta)))
    old = Bucket.load(cell)
    new = Bucket(9)
    new.windows(A)[w1] = dirty
    new.settle()

    def read(bucket: Bucket) -> tuple:  # marshal's bytes depend on reference counts
        _, _, closed, blobs, *indexes = bucket.state()
        entries = {w: {g: marshal.loads(blob) for g, blob in e.items()} for w, e in blobs.items()}
        return (closed, entries, *indexes)

    assert read(old) == read(new) == (9, {w1: {A: dirty}}, {}, {w1: {A}}, {}, {})
    assert old.seq == 2 and len(old) == 1 and old.due(w1, 5) == 119


def test_a_timer_decodes_only_the_window_it_fires_and_drops_fired_entries_undecoded(
    monkeypatch: Any,
) -> None:
    """A key holding two windows: the first window's ON_TIME timer decodes that entry
    alone (not the key's other), and its timer at end + allowed lateness drops it without
    decoding it (decoding only the second window's entry, which fires then)."""
    from liveagg.transforms import windowstate

    operator = window_operator(VIEW, clock=lambda: 0.0)
    operator.setup()
    cell, timers = Cell(), Timers()
    minute = 60_000_000
    for t in (5, 65):
        list(operator._process((BUCKET, [_item(operator, t)]), cell, timers, None))
    decoded: list[object] = []

    class Counting:
        dumps = staticmethod(marshal.dumps)

        @staticmethod
        def loads(blob: bytes) -> object:
            decoded.append(value := marshal.loads(blob))
            return value

    monkeypatch.setattr(windowstate, "marshal", Counting)

    def fire(at: int) -> list[tuple]:
        rows = list(operator._on_watermark(BUCKET, Timestamp(micros=at), "", cell, timers))
        return [(r["window_start"], r["pane_timing"]) for r in rows]

    assert fire(minute) == [(W0, "ON_TIME")]
    assert len(decoded) == 1  # W0's entry alone
    decoded.clear()
    assert fire(3 * minute - 1) == [(W1, "ON_TIME")]  # W0's end + allowed lateness (2m)
    assert len(decoded) == 1  # W1's entry; W0's left undecoded
    assert list(cell.value.windows(A)) == [(minute, 2 * minute)]


def _item(
    operator: object, t: float, group: bytes = A, count: int = 1, candidates: list | None = None
) -> tuple:
    """One key's window of a router batch: the window of ``t``, ``count`` ones in it."""
    combine = operator._plan.combine  # type: ignore[attr-defined]
    acc = combine.add_inputs(combine.create_accumulator(), [(1, 1)] * count)
    start = int(t) // 60 * 60_000_000
    return (group, start, start + 60_000_000, combine.encode(acc), candidates or [])


def test_each_window_has_its_own_timer_so_a_watermark_jump_fires_them_all() -> None:
    """A timer per window: one jump of the watermark fires every due window of a key."""
    operator = window_operator(VIEW, clock=lambda: 0.0)
    operator.setup()
    cell, timers = Cell(), Timers()
    minute = 60_000_000
    for t in (5, 65, 125):  # three windows of one key
        assert list(operator._process((BUCKET, [_item(operator, t)]), cell, timers, None)) == []
    assert timers.due == {
        f"{m * minute}/{(m + 1) * minute}": (m + 1) * minute - 1 for m in range(3)
    }
    # The watermark jumps past all three windows' ends; the first window's timer fires.
    first = f"0/{minute}"
    timers.due.pop(first)
    rows = list(operator._on_watermark(BUCKET, Timestamp(micros=3 * minute), first, cell, timers))
    assert [(r["window_start"], r["pane_timing"]) for r in rows] == [
        (W0, "ON_TIME"),
        (W1, "ON_TIME"),
        ("1970-01-01T00:02:00Z", "ON_TIME"),
    ]
    # The first window's lateness has passed too: dropped at once; the others wait for
    # their end + allowed lateness (2 minutes).
    assert timers.due == {f"{m * minute}/{(m + 1) * minute}": (m + 3) * minute - 1 for m in (1, 2)}
    bucket = cell.value
    assert sorted(bucket.windows(A)) == [(minute, 2 * minute), (2 * minute, 3 * minute)]
    assert bucket.closed_upto == 3 * minute + 999  # the timer's millisecond, all of it


def test_a_window_no_key_holds_is_too_late_once_any_key_saw_its_expiry() -> None:
    """The watermark a stateful DoFn knows is the timers it fired: one key's expiry timer
    tells every key of the operator that the window has closed (SPEC section 2)."""
    operator = window_operator(VIEW, clock=lambda: 0.0)
    operator.setup()
    minute = 60_000_000
    a, b = Cell(), Cell()
    timers = Timers()
    assert list(operator._process((BUCKET, [_item(operator, 5)]), a, timers, None)) == []
    at = Timestamp(micros=3 * minute - 1)  # past end + lateness of [0, 60s)
    rows = list(operator._on_watermark(BUCKET, at, f"0/{minute}", a, timers))
    assert [r["pane_timing"] for r in rows] == ["ON_TIME"]
    other_key = b'["b"]'
    other = ("clicks", 0, bucket_of(other_key) + 100)  # another bucket, never seen a timer
    payload = b'{"k": "b", "t": 6, "v": 1}'
    late = _item(operator, 6, other_key, candidates=[(0, 6_000_000, payload, None)])
    (letter,) = operator._process((other, [late]), b, timers, None)
    assert letter.tag == "dead_letter" and letter.value["reason"] == "too_late"
    assert b.parts == []  # nothing was kept for it


def test_each_key_gets_its_early_pane_emit_early_after_its_own_first_data() -> None:
    """Two keys of one bucket: the window's one EARLY timer fires for the first key's pane,
    then again for the second's, each ``emit.early`` (10 s) after that key's first data."""
    now = [0.0]
    operator = window_operator(VIEW, clock=lambda: now[0], early=True)
    operator.setup()
    other = next(k for i in range(1000) if bucket_of(k := b'["x%d"]' % i) == bucket_of(A))
    cell, watermark, early = Cell(), Timers(), Timers()
    tag = f"0/{60_000_000}"
    assert list(operator._process((BUCKET, [_item(operator, 5)]), cell, watermark, early)) == []
    assert early.due == {tag: 10_000_000}
    now[0] = 8.0
    list(operator._process((BUCKET, [_item(operator, 6, other)]), cell, watermark, early))
    assert early.due == {tag: 10_000_000}  # set for the earliest pending pane
    now[0] = 10.0
    del early.due[tag]
    rows = list(operator._on_early(BUCKET, tag, cell, early))
    assert [(r["k"], r["pane_timing"]) for r in rows] == [("a", "EARLY")]
    assert early.due == {tag: 18_000_000}
    now[0] = 18.0
    del early.due[tag]
    rows = list(operator._on_early(BUCKET, tag, cell, early))
    assert [(r["k"], r["pane_timing"]) for r in rows] == [(other.decode()[2:-2], "EARLY")]
    assert early.due == {}


def test_where_instances_have_their_own_watermarks_a_bucket_judges_by_its_own_timers() -> None:
    """On Flink the parallel instances of the operator in one process have watermarks of
    their own: a timer of one bucket tells nothing of another bucket's watermark, so data for
    a bucket whose timers have not passed the window's expiry is kept (never lost), and data
    for the bucket that saw the expiry is too late."""
    operator = window_operator(VIEW, clock=lambda: 0.0, shared_floor=False)
    operator.setup()
    minute = 60_000_000
    a, b = Cell(), Cell()
    timers = Timers()
    list(operator._process((BUCKET, [_item(operator, 5)]), a, timers, None))
    list(operator._process((BUCKET, [_item(operator, 65)]), a, timers, None))
    at = Timestamp(micros=3 * minute - 1)  # past end + lateness of [0, 60s)
    list(operator._on_watermark(BUCKET, at, f"0/{minute}", a, timers))
    other_key = b'["b"]'
    other = ("clicks", 0, bucket_of(other_key) + 100)
    payload = b'{"k": "b", "t": 6, "v": 1}'
    late = _item(operator, 6, other_key, candidates=[(0, 6_000_000, payload, None)])
    assert list(operator._process((other, [late]), b, timers, None)) == []
    assert list(Bucket.load(b).windows(other_key)) == [(0, minute)]  # kept, fires on its timer
    again = _item(operator, 7, candidates=[(1, 7_000_000, payload, None)])
    (letter,) = operator._process((BUCKET, [again]), a, timers, None)
    assert letter.tag == "dead_letter" and letter.value["reason"] == "too_late"


def test_the_runners_with_one_watermark_per_stage() -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from liveagg.transforms.streaming import one_watermark_per_stage

    def runs_as_one(*args: str) -> bool:
        return one_watermark_per_stage(beam.Pipeline(options=PipelineOptions(list(args))))

    from liveagg.runners import direct

    assert runs_as_one() and runs_as_one("--runner=DirectRunner")
    assert runs_as_one(*direct.beam_args()) and runs_as_one(*direct.beam_args(2))
    assert runs_as_one("--runner=BundleBasedDirectRunner")
    # Prism fires one key's timers while another key's older data waits (the constant says
    # where in Prism); Flink and Spark run parallel instances.
    assert not runs_as_one("--runner=PrismRunner")
    assert not runs_as_one("--runner=FlinkRunner") and not runs_as_one("--runner=SparkRunner")


def test_a_merged_session_keeps_its_earliest_pending_early_pane() -> None:
    """Session [10s, 16s) gets data at processing time 0s: its EARLY pane is due at 5s. At
    4s, data at 14s merges it into [10s, 20s), whose pane holds data since 0s: its EARLY pane
    is still due at 5s, ``emit.early`` after the pane's first data. Beam keeps the merged
    windows' timers (apache_beam/transforms/trigger.py, ``AfterProcessingTime.on_merge``:
    "timers will be kept through merging"; ``on_element`` sets none while the merged
    ``has_timer`` state is set), so its merged window fires at 5s."""
    view = view_of("sessions", {"type": "session", "gap": "6s"}, "0s", emit={"early": "5s"})
    now = [0.0]
    operator = window_operator(view, clock=lambda: now[0], early=True)
    operator.setup()
    combine = operator._plan.combine
    acc = combine.encode(combine.add_inputs(combine.create_accumulator(), [(1, 1)]))
    state_key = ("sessions", 0, bucket_of(A))
    cell, watermark, early = Cell(), Timers(), Timers()
    for t in (10, 14):
        item = (A, t * 1_000_000, (t + 6) * 1_000_000, acc, [])
        assert list(operator._process((state_key, [item]), cell, watermark, early)) == []
        now[0] = 4.0
    assert sorted(cell.value.windows(A)) == [(10_000_000, 20_000_000)]
    assert early.due.get("10000000/20000000") == 5_000_000


def test_late_data_opening_a_window_is_a_late_pane() -> None:
    """A pane is LATE whenever the watermark had passed the window's end, also the first."""
    operator = window_operator(VIEW, clock=lambda: 0.0)
    operator.setup()
    minute = 60_000_000
    timers = Timers()
    cell = Cell()
    operator._process((BUCKET, [_item(operator, 70)]), cell, timers, None)
    list(
        operator._on_watermark(
            BUCKET, Timestamp(micros=2 * minute - 1), f"{minute}/{2 * minute}", cell, timers
        )
    )
    b = b'["b"]'
    other = ("clicks", 0, bucket_of(b))
    rows = list(operator._process((other, [_item(operator, 10, b)]), Cell(), timers, None))
    assert [(r["k"], r["window_start"], r["pane_timing"], r["pane_index"]) for r in rows] == [
        ("b", W0, "LATE", 0)
    ]


def test_the_router_sends_one_element_per_key_and_batch_in_parts_of_bounded_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One element per grouping key and batch, holding its windows' partial accumulators
    (each element crosses to the runner and back on Flink); a large bundle leaves in
    parts, so memory stays bounded."""
    monkeypatch.setattr(streaming, "MAX_BATCHED", 4)
    router = _Route([VIEW])
    router.setup()
    router.start_bundle()
    sent = []
    for i in range(6):
        payload = orjson.dumps({"k": "a" if i % 2 else "b", "t": 100 - i, "v": i})
        sent += list(router.process(payload))
    sent += list(router.finish_bundle())
    assert {out.tag for out in sent} == {"view/clicks"}
    combine = ViewPlan(VIEW).combine
    batches = [
        (
            state_key[2],
            [(g, s, combine.extract_output(combine.decode(acc))) for g, s, _, acc, _ in items],
        )
        for state_key, items in (out.value.value for out in sent)
    ]
    # Two flushes (after 4 messages, then the bundle's end), each one element per bucket.
    a, b = b'["a"]', b'["b"]'
    assert bucket_of(a) != bucket_of(b)
    assert batches == [
        (bucket_of(b), [(b, 60_000_000, (2, 2))]),
        (bucket_of(a), [(a, 60_000_000, (2, 4))]),
        (bucket_of(b), [(b, 60_000_000, (1, 4))]),
        (bucket_of(a), [(a, 60_000_000, (1, 5))]),
    ]


def test_the_router_sends_only_the_messages_that_may_be_too_late() -> None:
    """A record whose windows all close after its partition's watermark cannot be too late:
    its payload stays behind (SPEC section 2; the module doc says why the bound holds)."""
    router = _Route([VIEW])
    router.setup()
    router.start_bundle()
    minute = 60_000_000
    wm = 4 * minute  # the partition's watermark
    for t in (30, 5 * 60 + 1):  # expired by the watermark (60s + 120s <= 240s), and not
        meta = {"topic": "t", "partition": 0, "offset": t, streaming.WATERMARK: wm}
        list(router.process((orjson.dumps({"k": "a", "t": t, "v": 1}), meta)))
    (out,) = list(router.finish_bundle())
    _, items = out.value.value
    assert [
        (start // minute, [c[1] // 1_000_000 for c in cands]) for _, start, _, _, cands in items
    ] == [
        (0, [30]),
        (5, []),
    ]


def _routed(elements: list[Any], views: list[ViewSpec], by_source: bool = False) -> list[Any]:
    """What a router sends for ``elements`` given in one bundle, decoded to plain values."""
    router = _Route(views, by_source=by_source)
    router.setup()
    router.start_bundle()
    out = []
    for element in elements:
        out += list(router.process(element))
    out += list(router.finish_bundle())
    sent = []
    for o in out:
        value = o.value.value
        if o.tag == DEAD_LETTER:
            sent.append((o.tag, orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))
            continue
        state_key, items = value
        plan = ViewPlan(views[[streaming.view_tag(v.name) for v in views].index(o.tag)])
        decoded = [
            (g, s, e, plan.combine.extract_output(plan.combine.decode(acc)), cands, *rest)
            for g, s, e, acc, cands, *rest in items
        ]
        sent.append((o.tag, state_key, o.value.timestamp.micros, repr(decoded)))
    return sorted(sent, key=repr)


@pytest.mark.parametrize("by_source", [False, True], ids=["one shard", "level 1"])
def test_a_kafka_batch_routes_as_its_records_one_by_one(by_source: bool) -> None:
    """A Kafka read hands the router one :class:`KafkaRecords` per ``consume()``; the router
    sends what it sends for the same records as single ``(payload, meta)`` messages: the same
    partials, the same too-late candidates (payload and meta, without the watermark) and the
    same dead letters, which say where each record came from."""
    from liveagg.transforms.sources import KafkaRecords

    rng = random.Random(7)
    minute = 60_000_000
    session = view_of("sessions", {"type": "session", "gap": "1m"}, "1m")
    batches = []
    for partition, watermark in ((0, 4 * minute), (1, 2 * minute), (0, 9 * minute)):
        lines = []
        for _ in range(40):
            t = rng.randrange(0, 12 * 60)
            lines.append(orjson.dumps({"k": rng.choice("ab"), "t": t, "v": rng.randrange(9)}))
        lines[5] = b"not json"
        lines[9] = b'{"k": "a", "t": "soon"}'
        lines[11] = b""
        offsets = [100 * partition + 3 * i for i in range(len(lines))]  # with gaps
        stamps = [None if i % 7 == 0 else 1_000 + i for i in range(len(lines))]
        batches.append(KafkaRecords("t", partition, offsets, stamps, lines, watermark))
    singles = [
        (payload, {**meta, streaming.WATERMARK: batch.watermark_us})
        for batch in batches
        for payload, meta in batch.messages()
    ]
    views = [VIEW, session]
    as_batches = _routed(batches, views, by_source)
    assert as_batches == _routed(singles, views, by_source)
    assert any(tag == DEAD_LETTER for tag, *_ in as_batches)
    assert any(b'"offset":15' in sent[1] for sent in as_batches if sent[0] == DEAD_LETTER)
    # Some records travel on as too-late candidates (their payload in the item).
    assert any('b\'{"k"' in sent[3] for sent in as_batches if sent[0] != DEAD_LETTER)


def test_a_flush_locates_each_message_of_batches_and_singles() -> None:
    from liveagg.transforms.sources import KafkaRecords
    from liveagg.transforms.sources.files import LineBatch
    from liveagg.transforms.streaming import Messages

    kafka = KafkaRecords("t", 3, [7, 9], [None, 5], [b"a", b"b"], 100)
    lines = LineBatch("f.jsonl", 0, 10, b"c\nd\ne", 3)
    one = (b"f", {"topic": "t", "partition": 1, "offset": 4, streaming.WATERMARK: 50})
    messages = Messages([one, kafka, b"g", b"h", lines, KafkaRecords("t", 0, [], [], [])])
    assert messages.payloads == [b"f", b"a", b"b", b"g", b"h", b"c", b"d", b"e"]
    assert [messages.where(i) for i in range(8)] == [
        {"topic": "t", "partition": 1, "offset": 4},
        {"topic": "t", "partition": 3, "offset": 7, "timestamp_ms": None},
        {"topic": "t", "partition": 3, "offset": 9, "timestamp_ms": 5},
        None,
        None,
        ("f.jsonl", 0, 10),
        ("f.jsonl", 0, 11),
        ("f.jsonl", 0, 12),
    ]
    assert messages.located and messages.hints is None  # b"g" has no watermark
    watermarked = Messages([one, kafka])
    assert watermarked.hints.tolist() == [50, 100, 100]
    assert not Messages([b"x", b"y"]).located


def test_the_first_window_to_close_is_the_first_to_start() -> None:
    from liveagg.transforms.streaming import _earliest_end

    sliding = parse_view(
        {
            "name": "slide",
            "event_time": {"field": "t", "format": "epoch_s"},
            "grouping_cols": [],
            "window": {"type": "sliding", "size": "3m", "period": "1m"},
            "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "n"}],
        }
    )
    plan = ViewPlan(sliding)
    minute = 60_000_000
    ts = np.array([0, 1, minute - 1, minute, 5 * minute + 7, -1], dtype=np.int64)
    expected = [min(end for _, end in plan.variants[0].assign(int(t))) for t in ts]
    assert _earliest_end(plan.compiled.aggregator(), ts).tolist() == expected
    fixed = ViewPlan(VIEW)
    expected = [min(end for _, end in fixed.variants[0].assign(int(t))) for t in ts]
    assert _earliest_end(fixed.compiled.aggregator(), ts).tolist() == expected
    # A cumulative period's windows share a start: the first to close is the shortest.
    cumulative = ViewPlan(
        view_of("daily", {"type": "cumulative", "size": "1d", "step": "1h"}, "0s")
    )
    hour = 60 * minute
    ts = np.array([0, 1, hour - 1, hour, 23 * hour + 5, 25 * hour, -1], dtype=np.int64)
    expected = [min(end for _, end in cumulative.variants[0].assign(int(t))) for t in ts]
    assert _earliest_end(cumulative.compiled.aggregator(), ts).tolist() == expected


def test_the_state_cache_weighs_a_cell_the_same_without_scanning_modules() -> None:
    """The operator turns off objsize's per-call scan of module globals: a cell's weight
    (the bucket's running byte count and its deltas') does not change."""
    import objsize
    from apache_beam.runners.worker.statecache import get_deep_size

    from liveagg.transforms.windowstate import size_cache_entries_cheaply

    cell = Cell()
    bucket = Bucket()
    bucket.windows(A)[(0, 60)] = [b"x" * 100, 0, False, True, None, None, None]
    bucket.store(cell, bucket.closed_upto)
    bucket = Bucket.load(cell)
    bucket.windows(A)[(0, 60)][0] = b"y" * 300
    bucket.store(cell, bucket.closed_upto)
    assert [type(part) for part in cell.parts] == [Bucket, Delta]
    scanning = objsize.default_settings.exclude_modules_globals
    try:
        objsize.default_settings.update(exclude_modules_globals=True)
        before = get_deep_size(cell.parts)
        size_cache_entries_cheaply()
        assert get_deep_size(cell.parts) == before > 300
    finally:
        objsize.default_settings.update(exclude_modules_globals=scanning)


def test_an_item_no_message_of_which_may_be_too_late_is_kept() -> None:
    """The router sends no payload for messages read while their partition's watermark left
    every window of theirs open: such an item is kept even where the floor says otherwise,
    as a LATE pane, since that watermark bounds the operator's."""
    operator = window_operator(VIEW, clock=lambda: 0.0)
    operator.setup()
    minute = 60_000_000
    cell, timers = Cell(), Timers()
    list(operator._process((BUCKET, [_item(operator, 5)]), cell, timers, None))
    list(operator._on_watermark(BUCKET, Timestamp(micros=3 * minute), f"0/{minute}", cell, timers))
    other_key = b'["b"]'
    other = ("clicks", 0, bucket_of(other_key) + 100)
    rows = list(operator._process((other, [_item(operator, 6, other_key)]), Cell(), timers, None))
    assert [(r["k"], r["pane_timing"], r["n"]) for r in rows] == [("b", "LATE", 1)]


def test_a_bucket_whose_keys_all_left_still_knows_the_watermark_it_saw() -> None:
    """On Flink a bucket judges late data by its own timers: when its last key's last window
    expires, the bucket keeps how far its timers went, so that key's too-late data is a dead
    letter and not a new window."""
    operator = window_operator(VIEW, clock=lambda: 0.0, shared_floor=False)
    operator.setup()
    minute = 60_000_000
    cell, timers = Cell(cached=False), Timers()
    list(operator._process((BUCKET, [_item(operator, 5)]), cell, timers, None))
    for at in (minute - 1, 3 * minute - 1):  # ON_TIME, then expiry at end + lateness
        list(operator._on_watermark(BUCKET, Timestamp(micros=at), f"0/{minute}", cell, timers))
    assert len(Bucket.load(cell)) == 0
    payload = b'{"k": "a", "t": 30, "v": 100}'
    late = _item(operator, 30, candidates=[(0, 30_000_000, payload, None)])
    (letter,) = operator._process((BUCKET, [late]), cell, timers, None)
    assert letter.tag == "dead_letter" and letter.value["reason"] == "too_late"
