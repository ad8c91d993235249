"""The Kafka source and sink against a real broker, and their offset and watermark logic.

Expected rows are computed here from the produced messages with plain arithmetic, not with
liveagg's own code, so that a bug shared by the pipeline and the check cannot hide.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.utils.timestamp import Duration, Timestamp

from integration.services import KafkaConnection
from liveagg.loader import parse_view
from liveagg.pipelines.compile import build
from liveagg.spec import Sink
from liveagg.transforms.bounded import BoundedAggregate
from liveagg.transforms.kafka.sink import (
    KafkaSink,
    WriteDeadLettersToKafka,
    WriteMilestonesToKafka,
)
from liveagg.transforms.kafka.source import (
    UNBOUNDED,
    KafkaSource,
    PartitionRanges,
    PartitionTracker,
    ReadPartitions,
    ViewEventTime,
    plan_reads,
)
from liveagg.transforms.plan import MILESTONES
from liveagg.transforms.sinks import Connections, build_sink
from liveagg.transforms.sources import KafkaRecords
from tests.support.cli import liveagg
from tests.support.waiting import eventually, kafka_records

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient  # noqa: E402

from tests.support import kafka_topics  # noqa: E402
from tests.support.compare import (  # noqa: E402
    assert_fired_at_first_pane,
    assert_milestones_match,
    assert_rows_match,
)
from tests.support.kafka_topics import create_topics  # noqa: E402
from tests.support.oracle import expected_milestones, milestone_id  # noqa: E402
from tests.support.oracle import expected_rows as oracle_rows  # noqa: E402
from tests.transforms.kafka.test_source import VIEW, view_spec  # noqa: E402

pytestmark = pytest.mark.integration

PARTITIONS = 3
MESSAGES = 20_000
KEYS = 20
BASE_TS = 1_700_000_000  # 2023-11-14T22:13:20Z, not on a 10-minute boundary
WINDOW_S = 600
# --- the broker -----------------------------------------------------------------------------


@dataclass
class Produced:
    """Where each produced message landed and what the view must make of it."""

    topic: str
    good: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    bad: dict[tuple[int, int], tuple[str | None, str]] = field(default_factory=dict)


@pytest.fixture
def bootstrap(kafka: KafkaConnection) -> str:
    return kafka.bootstrap_servers


@pytest.fixture
def topic(bootstrap: str) -> Iterator[Callable[..., str]]:
    """Makes topics with unique names and deletes them after the test."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    made: list[str] = []

    def make(partitions: int = PARTITIONS) -> str:
        name = f"liveagg-test-{uuid.uuid4().hex[:12]}"
        create_topics({"bootstrap.servers": bootstrap}, [name], partitions)
        made.append(name)
        return name

    yield make
    if made:
        for future in admin.delete_topics(made).values():
            future.result(30)


def _malformed(i: int, key: str) -> tuple[bytes, tuple[str | None, str]]:
    """The i-th bad message, with the (view, reason) its dead letter must carry."""
    kind = i % 4
    if kind == 0:
        return b'{"ts": 17000, "key": ', (None, "not_json")
    if kind == 1:
        return b"[1, 2, 3]", (None, "not_an_object")
    if kind == 2:
        return orjson.dumps({"key": key, "value": 1}), ("per_key", "missing_event_time")
    return orjson.dumps({"ts": BASE_TS, "key": key, "value": "many"}), ("per_key", "not_numeric")


def produce(bootstrap: str, topic: str, count: int = MESSAGES, ordered: bool = False) -> Produced:
    """``count`` messages over two hours of event time; every 97th is bad.

    Event times are shuffled unless ``ordered``, when they only grow.
    """
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    produced = Produced(topic)
    failures: list[str] = []
    for i in range(count):
        key = f"k{i % KEYS}"
        if i % 97 == 13:
            payload, expected = _malformed(i // 97, key)
        else:
            offset_s = i * 7200 // count if ordered else (i * 7919) % 7200
            expected = {"ts": BASE_TS + offset_s, "key": key, "value": i % 1000 - 100}
            payload = orjson.dumps(expected)

        def delivered(error: Any, msg: Any, expected: Any = expected) -> None:
            if error is not None:
                failures.append(str(error))
            elif isinstance(expected, dict):
                produced.good.append((msg.partition(), msg.offset(), expected))
            else:
                produced.bad[(msg.partition(), msg.offset())] = expected

        producer.produce(topic, payload, key=key.encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not failures, failures[:3]
    assert len(produced.good) + len(produced.bad) == count
    return produced


def end_offsets(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> list[int]:
    ends = kafka_topics.end_offsets({"bootstrap.servers": bootstrap}, topic)
    assert sorted(ends) == list(range(partitions)), ends
    return [ends[p] for p in range(partitions)]


def committed(bootstrap: str, topic: str, group: str, partitions: int = PARTITIONS) -> list[int]:
    return kafka_topics.committed({"bootstrap.servers": bootstrap}, topic, group, partitions)


def read_back(bootstrap: str, topic: str, count: int) -> list[Any]:
    """Every message of ``topic`` (``count`` of them expected), from the start."""
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"liveagg-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []

    def read_more() -> None:
        messages.extend(kafka_records(consumer.consume(num_messages=1000, timeout=1.0)))
        assert len(messages) >= count, f"{len(messages)} of {count} messages"

    try:
        eventually(read_more, what=f"topic {topic!r}", timeout_s=60, every_s=0)
        extra = kafka_records(consumer.consume(num_messages=10, timeout=1.0))  # none may come
    finally:
        consumer.close()
    assert len(messages) + len(extra) == count, (len(messages), len(extra), count)
    return messages


# --- expectations, by hand ------------------------------------------------------------------


def rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_rows(produced: Produced) -> dict[tuple[str, str], tuple[int, int]]:
    """(key, window_start) -> (count, sum of value) over the good messages."""
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for _, _, msg in produced.good:
        start = msg["ts"] // WINDOW_S * WINDOW_S
        entry = totals[(msg["key"], rfc3339(start))]
        entry[0] += 1
        entry[1] += msg["value"]
    return {k: (n, s) for k, (n, s) in totals.items()}


def row_totals(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    out = {}
    for row in rows:
        start = datetime.fromisoformat(row["window_start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(row["window_end"].replace("Z", "+00:00"))
        assert end - start == timedelta(seconds=WINDOW_S), row
        assert (row["key"], row["window_start"]) not in out, f"duplicate row {row}"
        out[(row["key"], row["window_start"])] = (row["n"], row["total"])
    return out


# --- running pipelines ----------------------------------------------------------------------


def options(**extra: Any) -> PipelineOptions:
    return PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1"], **extra)


class _WriteBundles(beam.DoFn):
    """Writes each bundle's elements to its own JSON Lines file under ``folder``.

    Per-element state (``ToList`` after a trigger, which unbounded input needs) makes the
    local runner slow; a file per bundle works for bounded and unbounded input alike.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def start_bundle(self) -> None:
        self._lines: list[bytes] = []

    def process(self, element: Any) -> None:
        self._lines.append(orjson.dumps(element, option=orjson.OPT_NON_STR_KEYS))

    def finish_bundle(self) -> None:
        if self._lines:
            path = self._folder / f"{uuid.uuid4().hex}.jsonl"
            path.write_bytes(b"\n".join(self._lines) + b"\n")


def collect(pcoll: beam.PCollection, folder: Path, label: str) -> None:
    """Collects a PCollection into ``folder``; :func:`loaded` reads it back after the run."""
    folder.mkdir()
    _ = pcoll | label >> beam.ParDo(_WriteBundles(folder))


def loaded(folder: Path) -> list[Any]:
    return [orjson.loads(line) for p in folder.iterdir() for line in p.read_bytes().splitlines()]


def source(bootstrap: str, topic: str, **options: Any) -> KafkaSource:
    connections = Connections(kafka_bootstrap=bootstrap)
    options.setdefault("group_id", f"liveagg-test-{uuid.uuid4().hex[:8]}")
    return KafkaSource.from_connections(topic, connections, **options)


def assert_dead_letters(dead: list[dict[str, Any]], produced: Produced) -> None:
    found = {}
    for d in dead:
        src = d["source"]
        assert src["topic"] == produced.topic
        assert isinstance(src["timestamp_ms"], int)
        found[(src["partition"], src["offset"])] = (d["view"], d["reason"])
        assert isinstance(d["payload"], str) and d["payload"]
    assert found == produced.bad
    assert len(dead) == len(produced.bad)


# --- bounded reads --------------------------------------------------------------------------


def test_bounded_read_aggregates_dead_letters_and_commits(
    bootstrap: str, topic: Callable[..., str], tmp_path: Path
) -> None:
    produced = produce(bootstrap, topic())
    src = source(bootstrap, produced.topic)
    with beam.Pipeline(options=options()) as pipeline:
        out = src.read(pipeline, "Read") | "Aggregate" >> BoundedAggregate([view_spec()])
        collect(out["views"]["per_key"], tmp_path / "rows", "Rows")
        collect(out["dead_letters"], tmp_path / "dead", "Dead")

    rows = loaded(tmp_path / "rows")
    assert {(r["pane_timing"], r["pane_index"]) for r in rows} == {("ON_TIME", 0)}
    assert row_totals(rows) == expected_rows(produced)
    assert sum(r["n"] for r in rows) == len(produced.good)
    assert_dead_letters(loaded(tmp_path / "dead"), produced)
    ends = end_offsets(bootstrap, produced.topic)
    assert sum(ends) == MESSAGES
    assert committed(bootstrap, produced.topic, src.group) == ends

    # The group now starts at its committed offsets: nothing is left to read.
    assert [(r.start, r.stop) for r in plan_reads(src)] == [(e, e) for e in ends]


def test_max_records_spreads_over_partitions_and_commits_what_it_read(
    bootstrap: str, topic: Callable[..., str], tmp_path: Path
) -> None:
    produced = produce(bootstrap, topic(), count=3000)
    src = source(bootstrap, produced.topic, max_records=1001)
    with beam.Pipeline(options=options()) as pipeline:
        messages = (
            src.read(pipeline, "Read")
            | beam.FlatMap(KafkaRecords.messages)
            | beam.Map(lambda m: (m[1], len(m[0])))
        )
        collect(messages, tmp_path / "meta", "Meta")

    metas = [m for m, _ in loaded(tmp_path / "meta")]
    assert len(metas) == 1001
    per_partition = defaultdict(list)
    for meta in metas:
        per_partition[meta["partition"]].append(meta["offset"])
    counts = sorted(len(v) for v in per_partition.values())
    assert counts == [333, 334, 334]  # even, the remainder on the larger partitions
    for offsets in per_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))  # from the start, no gaps
    assert committed(bootstrap, produced.topic, src.group) == [
        len(per_partition[p]) for p in range(PARTITIONS)
    ]


def test_start_latest_and_missing_topic(bootstrap: str, topic: Callable[..., str]) -> None:
    name = topic()
    produce(bootstrap, name, count=300)
    ends = end_offsets(bootstrap, name)
    reads = plan_reads(source(bootstrap, name, start="latest"))
    assert [(r.start, r.stop) for r in reads] == [(e, e) for e in ends]
    reads = plan_reads(source(bootstrap, name, start="earliest", bounded=False))
    assert [(r.partition, r.start, r.stop) for r in reads] == [(p, 0, None) for p in range(3)]
    missing = f"liveagg-test-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match=f"cannot read Kafka topic '{missing}'.*create it"):
        plan_reads(source(bootstrap, missing))


def test_a_missing_topic_fails_the_run_in_one_line(bootstrap: str, tmp_path: Path) -> None:
    """Checked where the pipeline is built: it was a worker's traceback of about 100 lines
    (the same message at its end)."""
    missing = f"liveagg-test-missing-{uuid.uuid4().hex[:8]}"
    view = tmp_path / "v.json"
    view.write_text(orjson.dumps(VIEW).decode())
    args = ["run", "--views", str(view), "--kafka-topic", missing, "--kafka-bootstrap", bootstrap]
    result = liveagg(*args, "--output", str(tmp_path / "out"), ok=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"cannot read Kafka topic '{missing}' at {bootstrap}: "
        'KafkaError{code=UNKNOWN_TOPIC_OR_PART,val=3,str="Broker: Unknown topic or partition"}'
        "; create it or check the topic name"
    ]
    # This broker creates topics a client asks for (auto.create.topics.enable): the check's
    # metadata request did not ask it to.
    listed = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    assert missing not in listed


# --- sinks ----------------------------------------------------------------------------------


def test_kafka_sink_writes_every_row_keyed_by_grouping_key(
    bootstrap: str, topic: Callable[..., str]
) -> None:
    produced = produce(bootstrap, topic(), count=5000)
    out_topic = topic()
    spec = view_spec()
    sink = build_sink(Sink("kafka", {"topic": out_topic}), Connections(kafka_bootstrap=bootstrap))
    assert isinstance(sink, KafkaSink)
    with beam.Pipeline(options=options()) as pipeline:
        out = source(bootstrap, produced.topic).read(pipeline, "Read") | BoundedAggregate([spec])
        sink.write(out["views"]["per_key"], spec, bounded=True)

    expected = expected_rows(produced)
    messages = read_back(bootstrap, out_topic, len(expected))
    rows = [orjson.loads(m.value()) for m in messages]
    assert row_totals(rows) == expected
    partition_of: dict[bytes, int] = {}
    for msg, row in zip(messages, rows, strict=True):
        assert msg.key() == orjson.dumps([row["key"]])
        assert partition_of.setdefault(msg.key(), msg.partition()) == msg.partition()


def test_dead_letters_to_kafka_keyed_by_view(bootstrap: str, topic: Callable[..., str]) -> None:
    produced = produce(bootstrap, topic(), count=2000)
    dead_topic = topic()
    connections = Connections(kafka_bootstrap=bootstrap)
    with beam.Pipeline(options=options()) as pipeline:
        out = source(bootstrap, produced.topic).read(pipeline, "Read") | BoundedAggregate(
            [view_spec()]
        )
        out["dead_letters"] | WriteDeadLettersToKafka(dead_topic, connections)

    messages = read_back(bootstrap, dead_topic, len(produced.bad))
    found = {}
    for msg in messages:
        dead = orjson.loads(msg.value())
        assert msg.key() == (dead["view"] or "_input").encode()
        found[(dead["source"]["partition"], dead["source"]["offset"])] = (
            dead["view"],
            dead["reason"],
        )
    assert found == produced.bad


def test_what_is_too_large_for_a_kafka_message_is_a_dead_letter_not_a_failed_run(
    bootstrap: str, topic: Callable[..., str], tmp_path: Path
) -> None:
    """A 200 KB record of control bytes is a ``not_json`` dead letter six times its size as
    JSON: sent with its payload cut, and said so. A row over the message limit (a
    ``collect_set`` of two 600 KB strings) is a ``too_large`` result dead letter, as the
    Cassandra sink makes of a row it cannot store. Each used to fail the run at ``produce``."""
    source, rows_topic, dead_topic = topic(), topic(), topic()
    pad = "x" * 600_000
    values = [
        b"\x01" * 200_000,
        *(orjson.dumps({"ts": BASE_TS + i, "k": "a", "pad": f"{i}{pad}"}) for i in range(2)),
        orjson.dumps({"ts": BASE_TS, "k": "b", "pad": "small"}),
    ]
    kafka_topics.produce({"bootstrap.servers": bootstrap}, source, values)
    view = {
        "name": "big_rows",
        "event_time": {"field": "ts", "format": "epoch_s"},
        "grouping_cols": ["k"],
        "window": {"size": "1m"},
        "aggregation_info": [
            {"aggregation": "collect_set", "col_name": "pad", "aggregated_col_name": "pads"}
        ],
        "sinks": [{"type": "kafka", "topic": rows_topic}],
    }
    path = tmp_path / "v.json"
    path.write_text(orjson.dumps(view).decode())
    out = tmp_path / "out"
    args = ["run", "--views", str(path), "--kafka-topic", source, "--kafka-bootstrap", bootstrap]
    liveagg(*args, "--output", str(out), "--dead-letter-topic", dead_topic)
    letters = [
        orjson.loads(line)
        for file in (out / "_dead_letter").glob("*.jsonl")
        for line in file.read_bytes().splitlines()
    ]
    assert sorted(letter["reason"] for letter in letters) == ["not_json", "too_large"]
    [too_large] = [letter for letter in letters if letter["reason"] == "too_large"]
    assert orjson.loads(too_large["payload"])["k"] == "a"
    assert f"not written to Kafka topic {rows_topic!r}" in too_large["detail"]
    [row] = [orjson.loads(m.value()) for m in read_back(bootstrap, rows_topic, 1)]
    assert (row["k"], row["pads"]) == ("b", ["small"])
    sent = {
        orjson.loads(m.value())["reason"]: orjson.loads(m.value())
        for m in read_back(bootstrap, dead_topic, 2)
    }
    assert sorted(sent) == ["not_json", "too_large"]
    cut = sent["not_json"]
    assert cut["payload"] == "\x01" * len(cut["payload"]) and 0 < len(cut["payload"]) < 200_000
    assert cut["detail"].endswith(
        f"(payload cut to its first {len(cut['payload'])} of 200000 characters for Kafka's "
        "message size limit)"
    )


def test_running_totals_and_a_cumulative_hour_from_a_topic_with_milestones_to_another(
    bootstrap: str, topic: Callable[..., str], tmp_path: Path
) -> None:
    """A global and a cumulative view over one bounded read. The global view: one row per key
    with its total over the topic, each threshold a total reaches once on the milestone topic,
    keyed by its id. The cumulative view: the prefixes of each hour, and one milestone per
    (key, hour, threshold), as the DuckDB oracle has them from the same messages."""
    produced = produce(bootstrap, topic(), count=6000)
    spec = parse_view(
        {
            **VIEW,
            "name": "per_key_total",
            "window": {"type": "global"},
            "emit": {"early": "10s"},
            "state_ttl": "7d",
            "milestones": [{"column": "n", "at": [50, 250, 297, 5000]}],
        }
    )
    hourly = parse_view(
        {
            **VIEW,
            "name": "per_key_hour",
            "window": {"type": "cumulative", "size": "1h", "step": "15m"},
            "milestones": [{"column": "n", "at": [20, 100, 150]}],
        }
    )
    out_topic = topic()
    with beam.Pipeline(options=options()) as pipeline:
        out = source(bootstrap, produced.topic).read(pipeline, "Read") | BoundedAggregate(
            [spec, hourly]
        )
        collect(out["views"]["per_key_total"], tmp_path / "rows", "Rows")
        collect(out["views"]["per_key_hour"], tmp_path / "hourly", "Hourly")
        out[MILESTONES] | WriteMilestonesToKafka(out_topic, Connections(kafka_bootstrap=bootstrap))

    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _, _, msg in produced.good:
        totals[msg["key"]][0] += 1
        totals[msg["key"]][1] += msg["value"]
    rows = loaded(tmp_path / "rows")
    assert {r["key"]: [r["n"], r["total"]] for r in rows} == totals
    assert all(set(r) == {"view", "key", "n", "total", "pane_timing", "pane_index"} for r in rows)
    reached = {
        (key, t): n for key, (n, _) in totals.items() for t in (50, 250, 297, 5000) if n >= t
    }
    # 297 splits the keys (two have 296); 5000 is beyond every one.
    assert {t for _, t in reached} == {50, 250, 297} and len(reached) == 58

    events_file = tmp_path / "good.jsonl"
    events_file.write_bytes(b"".join(orjson.dumps(m) + b"\n" for _, _, m in produced.good))
    expected_hourly = oracle_rows(hourly, events_file)
    assert_rows_match(loaded(tmp_path / "hourly"), expected_hourly, hourly)
    hourly_milestones = expected_milestones(hourly, expected_hourly)
    assert {e["threshold"] for e in hourly_milestones} == {20, 100, 150}

    messages = read_back(bootstrap, out_topic, len(reached) + len(hourly_milestones))
    events = [orjson.loads(m.value()) for m in messages]
    totals_events = [e for e in events if e["view"] == "per_key_total"]
    assert {(e["key"], e["threshold"]): e["value"] for e in totals_events} == reached
    assert len(totals_events) == len(reached)
    assert_milestones_match([e for e in events if e["view"] == "per_key_hour"], hourly_milestones)
    for message, event in zip(messages, events, strict=True):
        if event["view"] == "per_key_total":
            parts = ["per_key_total", None, None, [event["key"]], None, None, "n"]
            assert event["milestone_id"] == milestone_id([*parts, event["threshold"]])
        assert message.key() == event["milestone_id"].encode()


# --- unbounded reads ------------------------------------------------------------------------


def test_unbounded_read_stops_at_end_with_event_time_timestamps(
    bootstrap: str, topic: Callable[..., str], tmp_path: Path
) -> None:
    produced = produce(bootstrap, topic(), count=3000)
    spec = view_spec()
    src = source(
        bootstrap,
        produced.topic,
        bounded=False,
        stop_at_end=True,
        timestamp_fn=ViewEventTime(spec),
        batch_size=400,
    )

    class Stamp(beam.DoFn):
        def process(self, element: Any, ts: Any = beam.DoFn.TimestampParam) -> Iterator[Any]:
            yield (
                element.partition,
                element.offsets,
                [x.decode("utf-8", "replace") for x in element.lines],
                ts.micros,
            )

    with beam.Pipeline(options=options(streaming=True)) as pipeline:
        stamped = src.read(pipeline, "Read") | beam.ParDo(Stamp())
        collect(stamped, tmp_path / "stamped", "Stamped")

    stamped = loaded(tmp_path / "stamped")
    read = {(p, o) for p, offsets, _, _ in stamped for o in offsets}
    assert len(read) == sum(len(offsets) for _, offsets, _, _ in stamped) == 3000
    assert max(len(offsets) for _, offsets, _, _ in stamped) <= 400
    # Each batch is stamped with its earliest event time (a record's own integer "ts").
    for partition, offsets, lines, ts in stamped:
        times = [m["ts"] for m in map(_object, lines) if type(m.get("ts")) is int]
        if times:
            assert ts == min(times) * 1_000_000, (partition, offsets[0])
    # The bundle finalizer committed every offset read.
    assert committed(bootstrap, produced.topic, src.group) == end_offsets(bootstrap, produced.topic)


def test_unbounded_read_through_the_streaming_path(
    bootstrap: str, topic: Callable[..., str], tmp_path: Path
) -> None:
    # In event-time order: whether out-of-order messages are late depends on when the runner
    # fires timers, which the test does not control.
    produced = produce(bootstrap, topic(), count=5000, ordered=True)
    spec = view_spec()
    src = source(
        bootstrap, produced.topic, bounded=False, stop_at_end=True, timestamp_fn=ViewEventTime(spec)
    )
    with beam.Pipeline(options=options(streaming=True)) as pipeline:
        compiled = build(pipeline, [spec], {"events": src})
        collect(compiled.views["per_key"], tmp_path / "rows", "Rows")
        collect(compiled.dead_letters, tmp_path / "dead", "Dead")

    final: dict[tuple[str, str], dict[str, Any]] = {}
    for row in loaded(tmp_path / "rows"):
        key = (row["key"], row["window_start"])
        if key not in final or row["pane_index"] > final[key]["pane_index"]:
            final[key] = row
    assert row_totals(list(final.values())) == expected_rows(produced)
    assert_dead_letters(loaded(tmp_path / "dead"), produced)


def test_unbounded_read_fires_milestones_from_panes_and_eager_panes_below_the_threshold(
    bootstrap: str, topic: Callable[..., str], tmp_path: Path
) -> None:
    """The streaming window operator over an unbounded read: each threshold the final values
    reach fires once on the milestone topic, from the first pane that reached it; while a
    key's count is below 3, each bundle for the key gives an EARLY pane (eager panes need no
    processing-time timer, so the direct runner gives them on an unbounded read)."""
    produced = produce(bootstrap, topic(), count=3000, ordered=True)
    spec = parse_view(
        {
            **VIEW,
            "emit": {"eager": {"column": "n", "below": 3}},
            "milestones": [{"column": "n", "at": [1, 3, 10, 1000]}],
        }
    )
    src = source(
        bootstrap, produced.topic, bounded=False, stop_at_end=True, timestamp_fn=ViewEventTime(spec)
    )
    out_topic = topic()
    with beam.Pipeline(options=options(streaming=True)) as pipeline:
        compiled = build(pipeline, [spec], {"events": src})
        collect(compiled.views["per_key"], tmp_path / "rows", "Rows")
        assert compiled.milestones is not None
        compiled.milestones | WriteMilestonesToKafka(
            out_topic, Connections(kafka_bootstrap=bootstrap)
        )

    rows = loaded(tmp_path / "rows")
    events_file = tmp_path / "good.jsonl"
    events_file.write_bytes(b"".join(orjson.dumps(m) + b"\n" for _, _, m in produced.good))
    expected = expected_milestones(spec, oracle_rows(spec, events_file))
    assert {e["threshold"] for e in expected} == {1, 3, 10}
    messages = read_back(bootstrap, out_topic, len(expected))
    events = [orjson.loads(m.value()) for m in messages]
    assert_milestones_match(events, expected, values=False)
    assert_fired_at_first_pane(rows, events, spec.grouping_cols)
    assert all(m.key() == e["milestone_id"].encode() for m, e in zip(messages, events, strict=True))

    panes: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        panes[(row["key"], row["window_start"])].append(row)
    eager = 0
    for window in panes.values():
        window.sort(key=lambda r: r["pane_index"])
        for before, row in zip([None, *window], window, strict=False):
            if row["pane_timing"] == "EARLY":
                assert before is None or before["n"] < 3, window
                eager += 1
    assert eager > 0
    assert any(w[0]["pane_timing"] == "EARLY" and w[-1]["n"] >= 3 for w in panes.values())


def test_partition_reader_by_hand_commits_on_finalize_and_advances_idle_watermark(
    bootstrap: str, topic: Callable[..., str]
) -> None:
    name = topic(partitions=1)
    producer = ck.Producer({"bootstrap.servers": bootstrap})
    for ts in (BASE_TS + 60, BASE_TS, BASE_TS + 30):
        producer.produce(name, orjson.dumps({"ts": ts, "key": "a", "value": 1}))
    producer.produce(name, b"not json")
    assert producer.flush(10) == 0

    now = [1_800_000_000.0]
    src, fn, read = _reader_by_hand(bootstrap, name, now)
    assert (read.start, read.stop) == (0, None)
    estimator = ManualWatermarkEstimator(None)
    restriction = PartitionRanges().initial_restriction(read)
    assert restriction == OffsetRange(0, UNBOUNDED)

    out: list[Any] = []

    def fetched() -> None:  # the first polls may come back before the fetch does
        nonlocal restriction
        got, restriction, callbacks = _call(fn, read, restriction, estimator)
        out.extend(got)
        # Each batch carries the watermark published with it, its own event times included:
        # the aggregation's watermark may be that when the batch reaches it.
        for v in got:
            assert v.value.watermark_us == estimator.current_watermark().micros
        for callback in callbacks:
            callback()
        assert sum(len(v.value.offsets) for v in out) >= 4, out

    eventually(fetched, what="the partition's four records", timeout_s=60, every_s=0)
    assert [o for v in out for o in v.value.offsets] == [0, 1, 2, 3]
    # Each batch is stamped with its earliest event time; one without any (the bad
    # message alone) with the partition's latest.
    times = {0: BASE_TS + 60, 1: BASE_TS, 2: BASE_TS + 30}
    latest = None
    for v in out:
        known = [times[o] for o in v.value.offsets if o in times]
        latest = max([*known, latest or 0])
        assert v.timestamp.micros // 1_000_000 == (min(known) if known else latest)
    assert out[0].value.watermark_us >= (BASE_TS + 60) * 1_000_000  # read with the first
    assert restriction == OffsetRange(4, UNBOUNDED)
    assert estimator.current_watermark() == Timestamp(BASE_TS + 60)
    assert committed(bootstrap, name, src.group, partitions=1) == [4]

    now[0] += 9  # quiet, but not yet idle
    got, restriction, _ = _call(fn, read, restriction, estimator)
    assert got == [] and restriction == OffsetRange(4, UNBOUNDED)
    assert estimator.current_watermark() == Timestamp(BASE_TS + 60)
    now[0] += 2  # idle: now minus the idle timeout
    _call(fn, read, restriction, estimator)
    assert estimator.current_watermark() == Timestamp(now[0] - 10)
    fn.teardown()


def test_a_quiet_partition_is_polled_every_idle_poll_not_at_once(
    bootstrap: str, topic: Callable[..., str]
) -> None:
    """Each resumption of the read costs the runner (on Flink a bundle, a timer and a state
    entry): a partition read to its end and quiet for ``idle_poll`` waits before the next."""
    name = topic(partitions=1)
    producer = ck.Producer({"bootstrap.servers": bootstrap})
    producer.produce(name, orjson.dumps({"ts": BASE_TS, "key": "a", "value": 1}))
    assert producer.flush(10) == 0
    now = [1_800_000_000.0]
    _, fn, read = _reader_by_hand(bootstrap, name, now, idle_poll=timedelta(seconds=3))
    restriction = PartitionRanges().initial_restriction(read)
    estimator = ManualWatermarkEstimator(None)
    for _ in range(50):  # the first polls may come back before the fetch does
        got, restriction, _, delay = _call(fn, read, restriction, estimator, with_delay=True)
        if got:
            break
    assert got and delay == Duration(0)  # data: again at once
    _, restriction, _, delay = _call(fn, read, restriction, estimator, with_delay=True)
    assert delay == Duration(0)  # at the end, but quiet for less than idle_poll
    now[0] += 3
    _, restriction, _, delay = _call(fn, read, restriction, estimator, with_delay=True)
    # 3 s and a half: Beam's Flink runner waits whole seconds of what is asked (kafka.py)
    assert Duration(seconds=3.4) < delay <= Duration(seconds=3.5)
    producer.produce(name, orjson.dumps({"ts": BASE_TS + 1, "key": "a", "value": 1}))
    assert producer.flush(10) == 0
    for _ in range(50):
        got, restriction, _, delay = _call(fn, read, restriction, estimator, with_delay=True)
        if got:
            break
    assert delay == Duration(0)  # data again: read on at once
    fn.teardown()


def test_partition_reader_stalled_in_a_backlog_keeps_its_event_times(
    bootstrap: str, topic: Callable[..., str]
) -> None:
    """Minutes between reads of a backlog of old events: never the idle watermark."""
    name = topic(partitions=1)
    producer = ck.Producer({"bootstrap.servers": bootstrap})
    for i in range(6):
        producer.produce(name, orjson.dumps({"ts": BASE_TS + i, "key": "a", "value": 1}))
    assert producer.flush(10) == 0
    now = [1_800_000_000.0]  # years after BASE_TS: an idle guess would pass every record
    _, fn, read = _reader_by_hand(bootstrap, name, now, batch_size=2)
    restriction: OffsetRange | None = PartitionRanges().initial_restriction(read)
    estimator = ManualWatermarkEstimator(None)
    seen: list[int] = []

    def stalled_read() -> None:
        nonlocal restriction
        assert restriction is not None
        out, restriction, _ = _call(fn, read, restriction, estimator)
        seen.extend(o for v in out for o in v.value.offsets)
        if restriction is None:  # an unbounded read always defers its remainder
            pytest.fail(f"the read ended at {seen}")
        if seen and estimator.current_watermark() != Timestamp(BASE_TS + seen[-1]):
            # the watermark is the newest record's event time, never now - idle
            pytest.fail(f"watermark {estimator.current_watermark()} after {seen}")
        now[0] += 60  # a long stall before every call, empty polls (fetch not back) included
        assert len(seen) >= 6, seen

    eventually(stalled_read, what="six records read in a backlog", timeout_s=60, every_s=0)
    assert seen == list(range(6))
    fn.teardown()


def _object(line: str) -> dict[str, Any]:
    """A line's JSON object, empty when it holds none."""
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
    return msg if isinstance(msg, dict) else {}


def _reader_by_hand(
    bootstrap: str, topic: str, now: list[float], **options: Any
) -> tuple[KafkaSource, ReadPartitions, Any]:
    """An unbounded partition reader set up outside a pipeline, on ``now[0]`` as its clock:
    its source, the set-up DoFn and the partition's read."""
    src = source(
        bootstrap,
        topic,
        bounded=False,
        start="earliest",
        timestamp_fn=ViewEventTime(view_spec()),
        poll_timeout=timedelta(milliseconds=300),
        **options,
    )
    fn = ReadPartitions(src, clock=lambda: now[0])
    fn.setup()
    return src, fn, plan_reads(src)[0]


def _call(
    fn: ReadPartitions,
    read: Any,
    restriction: OffsetRange,
    estimator: ManualWatermarkEstimator,
    with_delay: bool = False,
) -> Any:
    """One ``process`` call as a runner makes it: (outputs, deferred remainder, finalizers),
    and ``with_delay`` the delay asked for the remainder."""
    tracker = ThreadsafeRestrictionTracker(PartitionTracker(restriction))
    finalizer = _Finalizer()
    out = list(fn.process(read, finalizer, RestrictionTrackerView(tracker), estimator))
    tracker.check_done()
    deferred = tracker.deferred_status()
    remainder = None if deferred is None else deferred[0]
    if with_delay:
        return out, remainder, finalizer.callbacks, None if deferred is None else deferred[1]
    return out, remainder, finalizer.callbacks


class _Finalizer:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def register(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)
