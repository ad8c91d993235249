"""The Kafka source without a broker: offsets, restrictions, watermarks, group requests and
options.

``VIEW`` is shared with tests/integration/test_kafka.py, which reads a real broker.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import orjson
import pytest
from apache_beam.internal import pickler
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.utils.timestamp import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from liveagg.loader import parse_view
from liveagg.spec import ViewSpec
from liveagg.transforms.kafka.sink import GroupingKey, ProduceToKafka
from liveagg.transforms.kafka.source import (
    NO_TIME,
    UNBOUNDED,
    KafkaSource,
    PartitionRanges,
    PartitionRead,
    PartitionTracker,
    PartitionWatermark,
    ReadPartitions,
    ViewEventTime,
    ViewsEventTime,
    coordinated,
    event_time_of,
    shares,
)
from liveagg.transforms.sinks import Connections
from tests.engine.test_columns import HOSTILE, clean_line

ck = pytest.importorskip("confluent_kafka")

VIEW: dict[str, Any] = {
    "name": "per_key",
    "event_time": {"field": "ts", "format": "epoch_s"},
    "grouping_cols": ["key"],
    "window": {"size": "10m"},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "n"},
        {"aggregation": "sum", "col_name": "value", "aggregated_col_name": "total"},
    ],
}


def view_spec() -> ViewSpec:
    return parse_view(VIEW)


def test_tracker_tolerates_gaps_and_ends_at_stop() -> None:
    tracker = PartitionTracker(OffsetRange(10, 20))
    assert tracker.is_bounded()
    assert tracker.try_claim(10) and tracker.try_claim(13) and tracker.try_claim(17)
    with pytest.raises(ValueError, match="not done"):
        tracker.check_done()
    assert not tracker.try_claim(20)  # trailing offsets 18 and 19 are gaps
    tracker.check_done()


def test_unbounded_tracker_only_checkpoints() -> None:
    tracker = PartitionTracker(OffsetRange(5, UNBOUNDED))
    assert not tracker.is_bounded()
    assert tracker.try_claim(5) and tracker.try_claim(9)
    assert tracker.try_split(0.5) is None
    assert tracker.current_progress().completed_work == 4
    primary, residual = tracker.try_split(0)
    assert (primary, residual) == (OffsetRange(5, 10), OffsetRange(10, UNBOUNDED))
    tracker.check_done()
    assert not tracker.try_claim(10)


def test_restriction_provider_keeps_one_restriction_per_partition() -> None:
    provider = PartitionRanges()
    bounded, unbounded = PartitionRead("t", 0, 3, 9), PartitionRead("t", 1, 3, None)
    assert list(provider.split(bounded, provider.initial_restriction(bounded))) == [
        OffsetRange(3, 9)
    ]
    assert provider.restriction_size(bounded, OffsetRange(3, 9)) == 6
    assert provider.restriction_size(unbounded, provider.initial_restriction(unbounded)) == 1
    assert provider.truncate(unbounded, provider.initial_restriction(unbounded)) is None


def test_watermark_follows_max_event_time_then_idles_with_injected_clock() -> None:
    now = [1000.0]
    wm = PartitionWatermark(timedelta(seconds=10), clock=lambda: now[0])
    assert wm.current_us() is None
    wm.observe(5_000_000)
    wm.observe(3_000_000)  # out of order: the watermark does not go back
    wm.observe(None)  # no event time: counts as data, moves nothing
    wm.reached_end()
    assert wm.current_us() == 5_000_000
    now[0] += 9.9
    assert wm.current_us() == 5_000_000
    now[0] += 0.1
    assert wm.current_us() == (now[0] - 10) * 1_000_000
    wm.observe(2_000_000_000)  # data again, ahead of the wall clock: whichever is later
    wm.reached_end()
    now[0] += 30
    assert wm.current_us() == 2_000_000_000
    now[0] += 1000
    assert wm.current_us() == (now[0] - 10) * 1_000_000


def test_a_partition_with_unread_records_is_slow_not_idle() -> None:
    """A stalled read of a backlog keeps the backlog's event times, however long it waits."""
    now = [1000.0]
    wm = PartitionWatermark(timedelta(seconds=10), clock=lambda: now[0])
    assert wm.current_us() is None  # nothing read yet, and not at the end: no idle guess
    now[0] += 60
    assert wm.current_us() is None
    wm.observe(5_000_000)
    now[0] += 600  # a long stall before the end of the partition
    assert wm.current_us() == 5_000_000
    wm.reached_end()  # the end: quiet from the last record on
    assert wm.current_us() == (now[0] - 10) * 1_000_000
    wm.observe(6_000_000)  # more data: not at the end any more
    now[0] += 600
    assert wm.current_us() == 6_000_000


def test_sdf_never_moves_the_estimator_back() -> None:
    estimator = ManualWatermarkEstimator(Timestamp(100))
    now = [50.0]
    wm = PartitionWatermark(timedelta(seconds=1), clock=lambda: now[0])
    wm.observe(10_000_000)
    ReadPartitions._advance(estimator, wm)
    assert estimator.current_watermark() == Timestamp(100)
    now[0] = 200.0
    wm.reached_end()
    ReadPartitions._advance(estimator, wm)
    assert estimator.current_watermark() == Timestamp(199)


def test_group_requests_wait_for_a_starting_coordinator_and_raise_other_errors() -> None:
    """A broker just started answers group requests with NOT_COORDINATOR for a while (seen
    as a failed ``committed()`` at a job's start); other errors are not waited out."""
    answers: list[Any] = [
        ck.KafkaException(ck.KafkaError(ck.KafkaError.NOT_COORDINATOR)),
        ck.KafkaException(ck.KafkaError(ck.KafkaError.COORDINATOR_LOAD_IN_PROGRESS)),
        "offsets",
    ]

    def starting() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert coordinated(starting) == "offsets"
    assert answers == []

    calls = []

    def denied() -> str:
        calls.append(1)
        raise ck.KafkaException(ck.KafkaError(ck.KafkaError.GROUP_AUTHORIZATION_FAILED))

    with pytest.raises(ck.KafkaException):
        coordinated(denied)
    assert len(calls) == 1


def test_shares_are_even_and_capped_by_what_partitions_hold() -> None:
    assert shares([100, 100, 100], 1001) == [100, 100, 100]
    assert shares([1000, 1000, 1000], 1001) == [333, 334, 334]
    assert shares([5, 1000, 1000], 1001) == [5, 498, 498]
    assert shares([0, 7], 3) == [0, 3]
    assert shares([], 10) == []


def test_view_event_time_is_none_for_what_the_view_rejects() -> None:
    fn = ViewEventTime(view_spec())
    assert fn(b'{"ts": 60}') == 60_000_000
    assert fn(b"{bad") is None
    assert fn(b"[1]") is None
    assert fn(b'{"ts": "soon"}') is None
    assert fn(b'{"key": 1}') is None


EVENT_TIMES = [
    {"field": "ts", "format": "iso8601"},
    {"field": "ts"},  # ISO 8601 strings or epoch seconds
    {"field": "ms", "format": "epoch_ms"},
    {"field": "ts", "format": "epoch_s"},
    {"field": "meta.at", "format": "epoch_ms"},
]
TIMES = [
    b'{"ts": 1709251200.25}',
    b'{"ts": 1709251200, "ms": 1709251200000}',
    b'{"ts": 9007199254740993, "ms": 9007199254740993.0}',
    b'{"ts": 1e300, "ms": -1e300}',
    b'{"ts": true, "ms": false}',
    b'{"ts": "1709251200", "ms": "1709251200000"}',
    b'{"ts": 253402300800, "ms": 253402300799999}',
    b'{"ts": -62135596800, "ms": -62135596800001}',
    b'{"ts": null, "ms": null, "meta": {"at": null}}',
    b'{"ts": "2024-03-01T00:00:00.123456789+05:30", "ms": 1.5}',
    b'{"ts": "2024-03-01", "ms": 1709251200000.4}',
    b'{"ts": {"$date": 1}, "ms": [1]}',
    b'{"ts": 5, "ts": "2024-03-01T00:00:00Z", "ms": 1, "ms": null}',
    # Arrow's cast refuses these; the view's parser reads them.
    b'{"ts": "2024-03-01T00:00:00,5Z"}',
    b'{"ts": "2024-03-01t00:00:00z"}',
    b'{"ts": "2024-03-01T00:00Z"}',
    # The view's daily windows of these would end past year 9999.
    b'{"ts": "9999-12-31T23:00:00Z", "ms": 253402297200000}',
    b'{"ts": 253402297200, "meta": {"at": 253402297200000}}',
]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.sampled_from(EVENT_TIMES),
    st.integers(0, 10**6),
    st.lists(st.sampled_from(HOSTILE + TIMES), max_size=40),
    st.integers(1, 300),
)
def test_a_batch_of_event_times_is_each_messages_event_time(
    event_time: dict[str, str], seed: int, hostile: list[bytes], size: int
) -> None:
    """The Kafka read takes a batch's event times at once (:meth:`ViewEventTime.many`, the
    engine's column reader), and gets for each record what the view's own parser gives it
    alone: the watermark moves as it did message by message."""
    daily = {**VIEW, "event_time": event_time, "window": {"size": ["10m", "1d"]}}
    fn = ViewEventTime(parse_view(daily))
    rng = random.Random(seed)
    lines = [clean_line(rng, i) for i in range(size)]
    for line in hostile:
        lines.insert(rng.randrange(len(lines) + 1), line)
    for start in range(0, len(lines), 150):  # one instance over batches, as a reader has it
        batch = lines[start : start + 150]
        expected = [fn(p) for p in batch]
        got = fn.many(batch).tolist()
        assert [None if t == NO_TIME else t for t in got] == expected


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.lists(st.sampled_from(EVENT_TIMES), min_size=2, max_size=4),
    st.lists(st.sampled_from(HOSTILE + TIMES), max_size=60),
)
def test_views_reading_other_fields_move_the_watermark_by_the_earliest_time_any_reads(
    event_times: list[dict[str, str]], lines: list[bytes]
) -> None:
    """Views of one topic may read event time from other fields: the watermark followed the
    first view's alone, so the others' windows stayed open, or closed by unrelated times."""
    views = [
        parse_view({**VIEW, "name": f"v{i}", "event_time": event_time})
        for i, event_time in enumerate(event_times)
    ]
    fn = ViewsEventTime(views)
    for payload in lines:
        each = [t for v in views if (t := ViewEventTime(v)(payload)) is not None]
        assert fn(payload) == (min(each) if each else None)
    got = fn.many(lines).tolist()
    assert [None if t == NO_TIME else t for t in got] == [fn(p) for p in lines]


def test_views_reading_one_field_share_one_reader() -> None:
    same = [view_spec(), parse_view({**VIEW, "name": "other"})]
    assert type(event_time_of(same)) is ViewEventTime
    ads = parse_view({**VIEW, "name": "ads", "event_time": {"field": "ms", "format": "epoch_ms"}})
    both = event_time_of([view_spec(), ads])
    assert type(both) is ViewsEventTime
    assert both(b'{"ms": 120000}') == 120_000_000  # the second view's field only
    assert both(b'{"ts": 60, "ms": 120000}') == 60_000_000


def test_clean_event_times_are_read_as_a_column(monkeypatch: pytest.MonkeyPatch) -> None:
    fn = ViewEventTime(parse_view({**VIEW, "event_time": {"field": "ms", "format": "epoch_ms"}}))
    rng = random.Random(1)
    lines = [clean_line(rng, i) for i in range(500)]
    alone: list[bytes] = []
    one_by_one = ViewEventTime.__call__
    monkeypatch.setattr(ViewEventTime, "__call__", lambda s, p: alone.append(p) or one_by_one(s, p))
    times = fn.many(lines)
    assert alone == []
    assert times.tolist() == [orjson.loads(line)["ms"] * 1000 for line in lines]


def test_readers_pickle_without_clients() -> None:
    """Runners ship DoFns pickled; Kafka clients are made on workers, in setup or later."""
    src = KafkaSource("t", "h:1", bounded=False, timestamp_fn=ViewEventTime(view_spec()))
    fn = pickler.loads(pickler.dumps(ReadPartitions(src)))
    assert fn._source == src
    assert not hasattr(fn, "_consumers")
    assert fn._source.timestamp_fn(b'{"ts": 1}') == 1_000_000
    sink_fn = pickler.loads(pickler.dumps(ProduceToKafka("t", {}, GroupingKey(["a"]))))
    assert not hasattr(sink_fn, "_producer")


def test_source_options_are_checked() -> None:
    with pytest.raises(ValueError, match="no bootstrap servers; set LIVEAGG_KAFKA_BOOTSTRAP"):
        KafkaSource.from_connections("t", Connections(kafka_bootstrap=None))
    with pytest.raises(ValueError, match="start must be one of committed, earliest, latest"):
        KafkaSource("t", "h:1", start="beginning")
    with pytest.raises(ValueError, match="idle_timeout must be positive"):
        KafkaSource("t", "h:1", idle_timeout=timedelta(0))
    src = KafkaSource("t", "h:1", config={"fetch.wait.max.ms": 100, "client.id": "me"})
    assert src.group == "liveagg-t"
    assert src.consumer_config()["fetch.wait.max.ms"] == 100
    assert KafkaSource("t", "h:1", bounded=False).consumer_config().get("fetch.wait.max.ms") is None
    assert src.describe() == "kafka topic t at h:1 (bounded, start committed)"


def test_a_read_stored_under_the_modules_old_name_still_decodes() -> None:
    """State of a build before ``transforms/kafka/`` names the read's elements by their old
    module (Beam's pickling fallback encodes them): they still decode, to the class of now."""
    from apache_beam.coders import FastPrimitivesCoder

    from liveagg.transforms.kafka.source import PartitionRead

    read = PartitionRead("events", 3, 10, 20)
    PartitionRead.__module__ = "liveagg.transforms.sources.kafka"  # as the old build named it
    try:
        stored = FastPrimitivesCoder().encode(read)
    finally:
        PartitionRead.__module__ = "liveagg.transforms.kafka.source"
    assert b"liveagg.transforms.sources.kafka" in stored
    assert FastPrimitivesCoder().decode(stored) == read
