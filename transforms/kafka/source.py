"""Kafka source: one topic, every partition, read once for all the views on it.

Pure Python on confluent-kafka (librdkafka), so that it runs on every Beam runner, portable
ones included, without a Java expansion service or Java SDK harness (docs/kafka.md says why
and what it measured). Each element is a :class:`~liveagg.transforms.sources.KafkaRecords`,
the records of one partition that one ``consume()`` returned, so that Beam's per-element
work is paid per batch, not per record; payloads go on untouched, so a bad message becomes a
dead letter downstream that says where it came from (its topic, partition and offset).

Two modes:

* **bounded** (DirectRunner, tests, backfills): the partitions' start and end offsets are
  taken when the pipeline starts; partitions are read in parallel after a ``Reshuffle``;
  each commits the group offset it reached when done, so ``kafka-consumer-groups`` shows lag.
* **unbounded** (streaming runners): a splittable DoFn with one restriction per partition, an
  event-time watermark per partition, idle partitions advanced after ``idle_timeout``, and
  offsets committed by the bundle finalizer, i.e. only after the runner made the bundle's
  output durable.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
from apache_beam.io.iobase import RestrictionProgress
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from liveagg.engine.columns import MIN_SPLIT, column_times, message_lines, misread, read_table
from liveagg.settings import revealed
from liveagg.spec import ViewSpec
from liveagg.transforms import eventtime
from liveagg.transforms.deadletter import NAMESPACE
from liveagg.transforms.eventtime import EventTimeError
from liveagg.transforms.fields import getter
from liveagg.transforms.kafka.client import check_kafka, confluent_kafka, topic_partitions
from liveagg.transforms.plan import accepted_times
from liveagg.transforms.sources import KafkaRecords

if TYPE_CHECKING:
    from liveagg.settings import Connections

_LOGGER = logging.getLogger(__name__)

#: The stop offset of a partition that is read for ever.
UNBOUNDED = 2**63 - 1
STARTS = ("committed", "earliest", "latest")
_METADATA_TIMEOUT_S = 30.0
LAG_REPORT_S = 5.0

TimestampFn = Callable[[bytes], "int | None"]
#: A payload without event time in :meth:`ViewEventTime.many`.
NO_TIME = np.iinfo(np.int64).min
T = TypeVar("T")


@dataclass(frozen=True)
class PartitionRead:
    """One partition's share of a read: offsets ``[start, stop)``; ``stop=None`` never ends."""

    topic: str
    partition: int
    start: int
    stop: int | None
    #: How many partitions the read has, and an id shared by them (see ``one_process``).
    partitions: int = 1
    read_id: str = ""


@dataclass(frozen=True)
class KafkaSource:
    """A Kafka topic as a liveagg source.

    Args:
        topic: The topic; all its partitions are read.
        bootstrap_servers: librdkafka ``bootstrap.servers``; see :meth:`from_connections`.
        group_id: Consumer group whose offsets are read (``start="committed"``) and
            committed; default ``liveagg-<topic>``.
        config: Extra librdkafka settings (security, fetch sizes); they win over ours.
            Credentials among them are :class:`~liveagg.settings.Secret`.
        start: ``committed`` (the group's offsets, else earliest), ``earliest`` or ``latest``.
        bounded: Read up to the end offsets seen at start and stop (True), or for ever.
        max_records: Read at most this many offsets in all, spread over the partitions
            (fewest-first, so the total is exact when there is enough data). Also makes an
            unbounded read stop, at offsets fixed when it starts.
        stop_at_end: Unbounded mode only: stop at the end offsets seen at start (streaming
            runners replaying a backlog, tests).
        timestamp_fn: Event time of a payload in microseconds, or None when it has none
            (views on a source share the event-time field: :class:`ViewEventTime`). Default:
            the Kafka message timestamp. Unbounded mode only; the bounded path reads event
            time itself.
        idle_timeout: Unbounded mode: once a partition is read to its end and then gets no
            data for this long, its watermark moves to wall-clock now minus ``idle_timeout`` so
            it does not hold windows back.
        batch_size: Messages per ``consume()`` call.
        one_process: Unbounded mode: every partition is read in this one process (Prism's
            LOOPBACK environment), so each partition reports the minimum watermark of all of
            them. Prism takes a splittable DoFn's output watermark from the last bundle's
            residuals alone (``ElementManager.PersistBundle`` sets ``estimatedOutput``), so a
            partition that runs ahead, or goes idle, would otherwise move the watermark past
            the unread records of the others and turn them too late.
        poll_timeout: How long one ``consume()`` waits for data. Short, because on Flink a
            checkpoint barrier waits for the read's open bundle, which holds one ``consume()``
            per partition, and the read's watermark only moves downstream at a barrier.
        idle_poll: Unbounded mode: once a partition has been read to its end and got nothing
            for this long, it is polled about this often instead of again at once. Each poll
            is a resumption of the splittable read, which costs the runner: on Beam 2.62's
            Flink runner a bundle, a timer and a state entry that stays in every later
            checkpoint (docs/flink.md, "An idle job").
        stall_timeout: Bounded mode: fail when a partition delivers nothing for this long
            before its end offset (broker gone, say) instead of waiting for ever.

    Example::

        source = KafkaSource.from_connections("clicks", Connections(), bounded=True)
        messages = source.read(pipeline, "Read/clicks")
    """

    topic: str
    bootstrap_servers: str
    group_id: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    start: str = "committed"
    bounded: bool = True
    max_records: int | None = None
    stop_at_end: bool = False
    timestamp_fn: TimestampFn | None = None
    idle_timeout: timedelta = timedelta(seconds=10)
    batch_size: int = 10_000
    poll_timeout: timedelta = timedelta(milliseconds=100)
    idle_poll: timedelta = timedelta(seconds=2)
    stall_timeout: timedelta = timedelta(seconds=120)
    one_process: bool = False

    def __post_init__(self) -> None:
        if not self.topic:
            raise ValueError("KafkaSource needs a topic")
        if not self.bootstrap_servers:
            raise ValueError(
                f"Kafka topic {self.topic!r}: no bootstrap servers; set LIVEAGG_KAFKA_BOOTSTRAP "
                "or pass them in the run's connection options"
            )
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.max_records is not None and self.max_records < 0:
            raise ValueError(f"max_records must be >= 0, got {self.max_records}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        for name in ("idle_timeout", "poll_timeout", "idle_poll", "stall_timeout"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def from_connections(cls, topic: str, connections: Connections, **options: Any) -> KafkaSource:
        """Build from the run's :class:`~liveagg.settings.Connections`."""
        config = {**connections.kafka_config, **options.pop("config", {})}
        return cls(topic, connections.kafka_bootstrap or "", config=config, **options)

    @property
    def group(self) -> str:
        return self.group_id or f"liveagg-{self.topic}"

    @property
    def ends(self) -> bool:
        """Whether the read stops at offsets fixed when it starts."""
        return self.bounded or self.stop_at_end or self.max_records is not None

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka settings: manual commits only, so offsets mean "processed".

        Credentials are revealed here, for the client: never log the result.
        """
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",  # a start offset deleted by retention
            "enable.partition.eof": True,
        }
        if self.ends:
            # A backlog is read to a known end: the broker's 500 ms long poll only slows it
            # (100k small messages: 75k/s with it, 150-200k/s at 10 ms on the test machine).
            config["fetch.wait.max.ms"] = 10
        return config | revealed(self.config)

    def read(self, pipeline: beam.Pipeline, label: str) -> beam.PCollection:
        confluent_kafka()
        # A topic that does not exist fails here, in one line, not in a worker's traceback.
        check_kafka(
            {"bootstrap.servers": self.bootstrap_servers, **self.config},
            f"Kafka topic {self.topic!r}",
            topic=self.topic,
        )
        return pipeline | label >> ReadFromKafkaTopic(self)

    def describe(self) -> str:
        mode = "bounded" if self.bounded else "unbounded"
        return f"kafka topic {self.topic} at {self.bootstrap_servers} ({mode}, start {self.start})"


class ViewEventTime:
    """A view's event time read from a raw payload, as ``KafkaSource.timestamp_fn``.

    Returns None for anything the view would dead-letter, so that a bad message never moves
    the watermark (an event time whose windows end after year 9999 included).
    """

    def __init__(self, view: ViewSpec) -> None:
        self._field = view.event_time.field
        self._format = view.event_time.format
        self._first, self._last = accepted_times(view)

    @property
    def key(self) -> tuple:
        """What the reader's result depends on: equal keys read every payload alike."""
        return (self._field, self._format, self._first, self._last)

    def __call__(self, payload: bytes) -> int | None:
        if not hasattr(self, "_parse"):
            self._get = getter(self._field)
            self._parse = eventtime.parser(self._field, self._format)
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        raw = self._get(msg) if isinstance(msg, dict) else None
        if raw is None:
            return None
        try:
            event_us = self._parse(raw)
        except EventTimeError:
            return None
        return event_us if self._first <= event_us <= self._last else None

    def many(self, payloads: Sequence[bytes]) -> np.ndarray:
        """``self(p)`` of every payload as int64 microseconds, :data:`NO_TIME` for None.

        Read as one batch where it can be: the field's column by Arrow's JSON reader and
        :func:`~liveagg.engine.columns.column_times`, as the engine reads event times.
        Messages that those do not read as ``self`` does (:func:`misread`, a time the cast
        refuses or the view does not accept, a batch the reader refuses) go through
        ``self`` one by one, so the result is the same, message for message.
        """
        out = np.full(len(payloads), NO_TIME, dtype=np.int64)
        slow: list[int] = []
        if "." in self._field:  # a literal dotted key wins over the path: one by one
            slow = list(range(len(payloads)))
        else:
            lines, index, _ = message_lines(payloads)
            if lines:
                odd, joined = misread(lines)
                rows = np.asarray(index, dtype=np.int64)
                if odd.any():
                    slow += rows[odd].tolist()
                    rest = np.flatnonzero(~odd)
                    lines, rows, joined = [lines[r] for r in rest], rows[rest], None
                self._fast(lines, rows, joined, out, slow)
        for i in slow:
            event_us = self(payloads[i])
            if event_us is not None:
                out[i] = event_us
        return out

    def _fast(
        self,
        lines: list[bytes],
        rows: np.ndarray,
        joined: bytes | None,
        out: np.ndarray,
        slow: list[int],
    ) -> None:
        """Event times of ``lines`` (payloads ``rows``) into ``out``; rows the column does not
        settle into ``slow``. Halves of a batch the reader refuses are read again."""
        if not lines:
            return
        joined = b"\n".join(lines) if joined is None else joined
        column = self._column(joined, len(lines))
        if column is None:
            if len(lines) <= MIN_SPLIT:
                slow += rows.tolist()
                return
            half = len(lines) // 2
            self._fast(lines[:half], rows[:half], None, out, slow)
            self._fast(lines[half:], rows[half:], None, out, slow)
            return
        ts, ok = column_times(self._format, column)
        ok &= (ts >= self._first) & (ts <= self._last)
        out[rows[ok]] = ts[ok]
        null = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        slow += rows[~ok & ~null].tolist()  # null: the view has no time (absent, or null)

    def _column(self, joined: bytes, n: int) -> pa.Array | None:
        """The field's column, of the type it had last (strings for ISO 8601 times, integers
        or doubles for epochs); None when the reader refuses the batch as every type."""
        kinds = getattr(self, "_kinds", None)
        if kinds is None:
            iso, epoch = [pa.string()], [pa.int64(), pa.float64()]
            kinds = self._kinds = {"iso8601": iso, None: iso + epoch}.get(self._format, epoch)
        for j, kind in enumerate(kinds):
            table = read_table(joined, pa.schema([(self._field, kind)]))
            if table is not None and table.num_rows == n:
                if j:
                    kinds.insert(0, kinds.pop(j))  # the next batch tries it first
                return table.column(0).combine_chunks()
        return None

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("_field", "_format", "_first", "_last")}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ViewEventTime) and self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self._field, self._format, self._first, self._last))


def shares(available: Sequence[int], total: int) -> list[int]:
    """Split ``total`` over partitions holding ``available`` records, as evenly as they allow."""
    out = [0] * len(available)
    left = min(total, sum(available))
    order = sorted(range(len(available)), key=lambda i: (available[i], i))
    for done, i in enumerate(order):
        out[i] = min(available[i], left // (len(order) - done))
        left -= out[i]
    return out


def coordinated(call: Callable[[], T]) -> T:
    """``call``, a consumer-group request, retried while the group coordinator is starting.

    A broker that has just started answers group requests with ``NOT_COORDINATOR`` or
    ``COORDINATOR_LOAD_IN_PROGRESS`` until it has loaded its offsets topic: a job started
    then would fail at once. Other errors, and these after ``_METADATA_TIMEOUT_S``, raise.
    """
    ck = confluent_kafka()
    starting = {
        ck.KafkaError.NOT_COORDINATOR,
        ck.KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        ck.KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
    deadline = time.monotonic() + _METADATA_TIMEOUT_S
    while True:
        try:
            return call()
        except ck.KafkaException as e:
            error = e.args[0] if e.args else None
            code = getattr(error, "code", lambda: None)()
            if code not in starting or time.monotonic() > deadline:
                raise
            _LOGGER.info("Kafka group coordinator not ready (%s); retrying", error)
            time.sleep(0.5)


def _partitions(consumer: Any, source: KafkaSource) -> list[int]:
    """The topic's partitions, or a ValueError that says why there are none."""
    metadata = consumer.list_topics(source.topic, timeout=_METADATA_TIMEOUT_S)
    return topic_partitions(metadata, source.topic, source.bootstrap_servers)


def partitions(source: KafkaSource) -> list[int]:
    """The topic's partitions now (what the read will plan, for reports that list them)."""
    consumer = confluent_kafka().Consumer(source.consumer_config())
    try:
        return _partitions(consumer, source)
    finally:
        consumer.close()


def plan_reads(source: KafkaSource) -> list[PartitionRead]:
    """Every partition's start offset (and stop offset when the read ends), taken now."""
    ck = confluent_kafka()
    consumer = ck.Consumer(source.consumer_config())
    try:
        tps = [ck.TopicPartition(source.topic, p) for p in _partitions(consumer, source)]
        committed = (
            coordinated(lambda: consumer.committed(tps, timeout=_METADATA_TIMEOUT_S))
            if source.start == "committed"
            else tps
        )
        starts, ends = [], []
        for tp, done in zip(tps, committed, strict=True):
            low, high = consumer.get_watermark_offsets(
                tp, timeout=_METADATA_TIMEOUT_S, cached=False
            )
            if source.start == "latest":
                start = high
            elif source.start == "committed" and done.offset >= 0:
                start = min(max(done.offset, low), high)
            else:
                start = low
            starts.append(start)
            ends.append(high)
    finally:
        consumer.close()
    stops: list[int | None] = list(ends) if source.ends else [None] * len(tps)
    if source.max_records is not None:
        budget = shares([e - s for s, e in zip(starts, ends, strict=True)], source.max_records)
        stops = [s + b for s, b in zip(starts, budget, strict=True)]
    read_id = uuid.uuid4().hex
    return [
        PartitionRead(source.topic, tp.partition, start, stop, len(tps), read_id)
        for tp, start, stop in zip(tps, starts, stops, strict=True)
    ]


class _Batch:
    """The records of a ``consume()`` that a read keeps, gathered for one element."""

    __slots__ = ("lines", "offsets", "stamps")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.offsets: list[int] = []
        self.stamps: list[int | None] = []

    def add(self, msg: Any) -> None:
        value = msg.value()
        kind, ms = msg.timestamp()
        self.lines.append(b"" if value is None else value)  # a tombstone carries no message
        self.offsets.append(msg.offset())
        self.stamps.append(None if kind == 0 else ms)  # 0: TIMESTAMP_NOT_AVAILABLE

    def records(self, key: tuple[str, int], watermark_us: int | None = None) -> KafkaRecords:
        return KafkaRecords(key[0], key[1], self.offsets, self.stamps, self.lines, watermark_us)


class _ReadBounded(beam.DoFn):
    """Reads one partition from its start to its stop offset, then commits the stop offset."""

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def setup(self) -> None:
        self._consumer: Any = None

    def process(self, read: PartitionRead) -> Iterator[KafkaRecords]:
        ck = confluent_kafka()
        if self._consumer is None:
            self._consumer = ck.Consumer(self._source.consumer_config())
        consumer, source = self._consumer, self._source
        stop = read.start if read.stop is None else read.stop
        position = read.start
        if position < stop:
            consumer.assign([ck.TopicPartition(read.topic, read.partition, position)])
        last_data = time.monotonic()
        while position < stop:
            # consume() waits for its whole count: ask no more than the range still holds.
            batch = consumer.consume(
                num_messages=min(source.batch_size, stop - position),
                timeout=source.poll_timeout.total_seconds(),
            )
            if not batch:
                if time.monotonic() - last_data > source.stall_timeout.total_seconds():
                    raise TimeoutError(
                        f"Kafka {read.topic}[{read.partition}]: nothing after offset "
                        f"{position} for {source.stall_timeout}, expected data up to {stop}"
                    )
                continue
            last_data = time.monotonic()
            kept = _Batch()
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if error.code() != ck.KafkaError._PARTITION_EOF:
                        raise ck.KafkaException(error)
                    position = max(position, msg.offset())  # the offsets left are gaps
                    continue
                offset = msg.offset()
                if offset < position:
                    continue
                if offset >= stop:
                    position = stop
                    break
                position = offset + 1
                kept.add(msg)
            if kept.lines:
                yield kept.records((read.topic, read.partition))
        coordinated(
            lambda: consumer.commit(
                offsets=[ck.TopicPartition(read.topic, read.partition, stop)], asynchronous=False
            )
        )

    def teardown(self) -> None:
        if getattr(self, "_consumer", None) is not None:
            self._consumer.close()
            self._consumer = None


class PartitionTracker(OffsetRestrictionTracker):
    """Offsets of one partition, possibly without end.

    Claims may skip offsets (compacted records, transaction markers); a claim at or past the
    stop ends the restriction, which is how the reader closes a range whose last offsets are
    gaps. An unbounded range is only checkpointed (split at the next offset), never split
    by fraction: a partition is one ordered stream, read by one consumer.
    """

    def try_split(self, fraction_of_remainder: float) -> tuple[OffsetRange, OffsetRange] | None:
        if fraction_of_remainder > 0 and not self.is_bounded():
            return None
        return super().try_split(fraction_of_remainder)

    def is_bounded(self) -> bool:
        return self._range.stop != UNBOUNDED

    def current_progress(self) -> RestrictionProgress:
        if self.is_bounded():
            return super().current_progress()
        position = self._range.start if self._current_position is None else self._current_position
        return RestrictionProgress(completed=position - self._range.start, remaining=1)


class PartitionRanges(RestrictionProvider):
    """One restriction per partition: ``OffsetRange(start, stop or UNBOUNDED)``, not split."""

    def initial_restriction(self, read: PartitionRead) -> OffsetRange:
        return OffsetRange(read.start, UNBOUNDED if read.stop is None else read.stop)

    def create_tracker(self, restriction: OffsetRange) -> PartitionTracker:
        return PartitionTracker(restriction)

    def restriction_size(self, read: PartitionRead, restriction: OffsetRange) -> int:
        return 1 if restriction.stop == UNBOUNDED else restriction.size()


class _WatermarkState(WatermarkEstimatorProvider):
    """A :class:`ManualWatermarkEstimator` per partition, restored from its last watermark."""

    def initial_estimator_state(self, element: Any, restriction: Any) -> None:
        return None

    def create_watermark_estimator(self, state: Timestamp | None) -> ManualWatermarkEstimator:
        return ManualWatermarkEstimator(state)


class PartitionWatermark:
    """Event-time watermark of one partition, with an idle timeout.

    The watermark is the largest event time seen. Once the partition has been read to its end
    and then ``idle_timeout`` passes without data, it is wall-clock now minus
    ``idle_timeout``, whichever is later. A partition that still holds unread records is slow,
    not idle: however long the read stalls (a busy worker, a checkpoint), its watermark stays
    at its records' event times, or a backlog of old events would turn late all at once.
    ``clock`` returns seconds since the epoch; tests inject one.
    """

    def __init__(self, idle_timeout: timedelta, clock: Callable[[], float]) -> None:
        self._idle_s = idle_timeout.total_seconds()
        self._clock = clock
        self.max_event_us: int | None = None
        self._last_data_s = clock()
        self._at_end = False

    def observe(self, event_us: int | None) -> None:
        """A record arrived; ``event_us`` is its event time (None: unknown)."""
        self._last_data_s = self._clock()
        self._at_end = False
        if event_us is not None and (self.max_event_us is None or event_us > self.max_event_us):
            self.max_event_us = event_us

    def reached_end(self) -> None:
        """The consumer read to the partition's end (librdkafka's end-of-partition event)."""
        self._at_end = True

    def quiet_s(self) -> float:
        """How long the partition has been read to its end without new data (0: it has not)."""
        return self._clock() - self._last_data_s if self._at_end else 0.0

    def current_us(self) -> int | None:
        """The watermark to hold now, in microseconds; None until anything is known."""
        now = self._clock()
        candidates = [] if self.max_event_us is None else [self.max_event_us]
        if self._at_end and now - self._last_data_s >= self._idle_s:
            candidates.append(int((now - self._idle_s) * 1_000_000))
        return max(candidates) if candidates else None


_RANGES = beam.DoFn.RestrictionParam(PartitionRanges())
_WATERMARK = beam.DoFn.WatermarkEstimatorParam(_WatermarkState())


class ReadPartitions(beam.DoFn):
    """Splittable DoFn: reads one Kafka partition per restriction, one batch per call.

    Each call consumes one batch, emits it with event-time timestamps, moves the partition's
    watermark, registers the offset commit with the bundle finalizer and checkpoints
    (``defer_remainder``), so runners get small bundles and checkpoints they can resume from.
    Consumers are made lazily, one per partition this instance reads, and never pickled.
    """

    def __init__(self, source: KafkaSource, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock

    def setup(self) -> None:
        self._consumers: dict[tuple[str, int], list[Any]] = {}  # -> [consumer, next offset]
        self._watermarks: dict[tuple[str, int], PartitionWatermark] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._lag_reported: dict[tuple[str, int], float] = {}

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        read: PartitionRead,
        finalizer: Any = beam.DoFn.BundleFinalizerParam,  # first: Beam passes it by position
        tracker: Any = _RANGES,
        watermark: Any = _WATERMARK,
    ) -> Iterator[TimestampedValue]:
        ck = confluent_kafka()
        key = (read.topic, read.partition)
        # Registered first, on every call, also one that reads nothing: Prism finalizes every
        # bundle of a stage that asks for a finalizer, while the Python SDK releases a bundle
        # that registered nothing at once and answers a later FinalizeBundle with an ERROR and
        # a traceback (docs/runners.md quotes both). The offset is filled in below.
        commit = _Commit(self, key, None)
        finalizer.register(commit)
        restriction = tracker.current_restriction()
        if restriction.start >= restriction.stop:
            return
        consumer = self._consumer(ck, key, restriction.start)
        clock = self._watermarks.setdefault(
            key, PartitionWatermark(self._source.idle_timeout, self._clock)
        )
        batch = consumer[0].consume(
            num_messages=min(self._source.batch_size, restriction.stop - restriction.start),
            timeout=self._source.poll_timeout.total_seconds(),
        )
        next_offset, done = None, False
        kept = _Batch()
        for msg in batch:
            error = msg.error()
            if error is not None:
                if error.code() != ck.KafkaError._PARTITION_EOF:
                    raise ck.KafkaException(error)
                consumer[1] = max(consumer[1], msg.offset())
                clock.reached_end()
                if msg.offset() >= restriction.stop:  # trailing gaps up to the stop
                    done = not tracker.try_claim(restriction.stop)
                continue
            offset = msg.offset()
            if offset < consumer[1]:
                continue
            if not tracker.try_claim(offset):
                done = True
                consumer[1] = -1  # consumed past the claim: seek before reading again
                break
            consumer[1] = next_offset = offset + 1
            kept.add(msg)
        stamped = self._timestamped(kept.records(key), clock) if kept.lines else None
        self._advance(watermark, clock, read if self._source.one_process else None)
        if stamped is not None:
            # The hint: the watermark this partition reports with these records, their own
            # event times included. The watermark that judges them where they are aggregated
            # (the minimum over partitions) was at most that when they were emitted; the
            # watermark before the batch could be lower than the one published with it.
            reported = watermark.current_watermark()
            hint = reported.micros if reported is not None else MIN_TIMESTAMP.micros
            records = replace(stamped.value, watermark_us=hint)
            yield TimestampedValue(records, stamped.timestamp)
        commit.offset = next_offset
        self._report_lag(ck, consumer, key)
        if not done:
            tracker.defer_remainder(self._pause(next_offset is None, clock))

    def _pause(self, empty: bool, clock: PartitionWatermark) -> Duration | None:
        """How long to wait before reading the partition again: at once while it has data,
        about ``idle_poll`` once it has been quiet that long. Beam 2.62's Flink runner waits
        whole seconds of the delay asked for (``BundleCheckpointHandlers``:
        ``getRequestedTimeDelay().getSeconds() * 1000``), and Beam's SDK subtracts the time
        since ``defer_remainder`` (``sdf_utils.py``, ``deferred_status``): half a second more
        keeps ``idle_poll`` whole."""
        idle_s = self._source.idle_poll.total_seconds()
        if not empty or clock.quiet_s() < idle_s:
            return None
        return Duration(seconds=idle_s + 0.5)

    def _timestamped(self, records: KafkaRecords, clock: PartitionWatermark) -> TimestampedValue:
        """``records`` stamped with their earliest event time; the partition's watermark
        moves to their latest. A record without one (a bad message, dead-lettered later)
        moves nothing."""
        fn = self._source.timestamp_fn
        if fn is None:
            stamps = [NO_TIME if ms is None else ms * 1000 for ms in records.timestamps_ms]
            times = np.asarray(stamps, dtype=np.int64)
        elif isinstance(fn, ViewEventTime | ViewsEventTime):
            times = fn.many(records.lines)
        else:
            times = np.fromiter(map(_event_time(fn), records.lines), np.int64, len(records.lines))
        known = times[times != NO_TIME]
        clock.observe(int(known.max()) if len(known) else None)
        if len(known):
            event_us = int(known.min())
        elif clock.max_event_us is not None:
            event_us = clock.max_event_us
        else:
            stamps_ms = [ms for ms in records.timestamps_ms if ms is not None]
            event_us = min(stamps_ms) * 1000 if stamps_ms else None
        ts = MIN_TIMESTAMP if event_us is None else Timestamp(micros=event_us)
        return TimestampedValue(records, ts)

    def _report_lag(self, ck: Any, consumer: list[Any], key: tuple[str, int]) -> None:
        """Offsets behind the partition's end, as a gauge; asks the broker at most every 5 s."""
        now = self._clock()
        if consumer[1] < 0 or now - self._lag_reported.get(key, -LAG_REPORT_S) < LAG_REPORT_S:
            return
        self._lag_reported[key] = now
        try:
            _, high = consumer[0].get_watermark_offsets(
                ck.TopicPartition(*key), timeout=1.0, cached=False
            )
        except ck.KafkaException:  # a metric never fails the read
            return
        topic, partition = key
        Metrics.gauge(NAMESPACE, f"kafka_lag_offsets/{topic}/{partition}").set(
            max(0, high - consumer[1])
        )

    @staticmethod
    def _advance(
        estimator: Any, clock: PartitionWatermark, shared: PartitionRead | None = None
    ) -> None:
        target = clock.current_us()
        if shared is not None:
            target = _process_watermark(shared, target)
        if target is None:
            return
        current = estimator.current_watermark()
        if current is None or Timestamp(micros=target) > current:
            estimator.set_watermark(Timestamp(micros=target))

    def _consumer(self, ck: Any, key: tuple[str, int], start: int) -> list[Any]:
        entry = self._consumers.get(key)
        if entry is None:
            entry = [ck.Consumer(self._source.consumer_config()), -1]
            self._consumers[key] = entry
        if entry[1] != start:  # a new restriction, or a resume elsewhere: seek
            entry[0].assign([ck.TopicPartition(key[0], key[1], start)])
            entry[1] = start
        return entry

    def commit(self, key: tuple[str, int], offset: int | None) -> None:
        """Commit ``offset`` (the next to read) for the group; called once a bundle is durable.

        ``None``: the bundle read nothing, there is nothing to commit.
        """
        if offset is None or offset <= self._committed.get(key, -1) or key not in self._consumers:
            return
        ck = confluent_kafka()
        try:
            self._consumers[key][0].commit(
                offsets=[ck.TopicPartition(key[0], key[1], offset)], asynchronous=False
            )
        except ck.KafkaException as e:  # the next bundle's commit covers this one
            _LOGGER.warning("Kafka %s[%d]: commit of offset %d failed: %s", *key, offset, e)
            return
        self._committed[key] = offset

    def teardown(self) -> None:
        for consumer, _ in getattr(self, "_consumers", {}).values():
            consumer.close()
        self._consumers = {}


_PROCESS_WATERMARKS: dict[str, dict[int, int | None]] = {}
_PROCESS_WATERMARKS_LOCK = threading.Lock()


def _process_watermark(read: PartitionRead, own_us: int | None) -> int | None:
    """The minimum watermark of every partition of ``read``'s read in this process, ``None``
    until each has reported one (``KafkaSource.one_process``)."""
    with _PROCESS_WATERMARKS_LOCK:
        seen = _PROCESS_WATERMARKS.setdefault(read.read_id, {})
        seen[read.partition] = own_us
        known = [us for us in seen.values() if us is not None]
        if len(known) < read.partitions:
            return None
        return min(known)


class ViewsEventTime:
    """The event time of a payload for several views of one source, as
    ``KafkaSource.timestamp_fn``: the earliest that any of them reads (None when none does).

    Views of one topic may read their event time from different fields (``timestamp_ms`` for
    ad views, ``ts`` for CDN views). Following only one view's field, the watermark ignored
    the other views' messages (their windows stayed open while data flowed) or closed their
    windows by unrelated times (their in-order messages became too late). The earliest time
    moves the watermark no further than any view that reads the message would.
    """

    def __init__(self, views: Sequence[ViewSpec]) -> None:
        readers: dict[tuple, ViewEventTime] = {}
        for view in views:
            reader = ViewEventTime(view)
            readers.setdefault(reader.key, reader)
        self.readers = list(readers.values())  # one per distinct key, in the views' order

    def __call__(self, payload: bytes) -> int | None:
        times = [t for reader in self.readers if (t := reader(payload)) is not None]
        return min(times) if times else None

    def many(self, payloads: Sequence[bytes]) -> np.ndarray:
        """``self(p)`` of every payload as int64 microseconds, :data:`NO_TIME` for None."""
        out = self.readers[0].many(payloads)
        for reader in self.readers[1:]:
            other = reader.many(payloads)
            known = other != NO_TIME
            take = known & ((out == NO_TIME) | (other < out))
            out[take] = other[take]
        return out


def event_time_of(views: Sequence[ViewSpec]) -> ViewEventTime | ViewsEventTime:
    """The ``timestamp_fn`` of a source that ``views`` read: one view's reader when they all
    read the same field the same way, else :class:`ViewsEventTime`."""
    combined = ViewsEventTime(views)
    return combined.readers[0] if len(combined.readers) == 1 else combined


def _event_time(fn: TimestampFn) -> Callable[[bytes], int]:
    """A caller's ``timestamp_fn`` with :data:`NO_TIME` for None and for what it raises: a
    bad message never stops the read; it is dead-lettered later."""

    def call(payload: bytes) -> int:
        try:
            event_us = fn(payload)
        except Exception:
            return NO_TIME
        return NO_TIME if event_us is None else event_us

    return call


class _Commit:
    """A bundle-finalizer callback: a plain object, not a closure, so it is easy to inspect."""

    def __init__(self, fn: ReadPartitions, key: tuple[str, int], offset: int | None) -> None:
        self.fn, self.key, self.offset = fn, key, offset

    def __call__(self) -> None:
        self.fn.commit(self.key, self.offset)


class ReadFromKafkaTopic(beam.PTransform):
    """Reads a :class:`KafkaSource`: plan partitions at run time, reshuffle, read each.

    Example::

        messages = pipeline | ReadFromKafkaTopic(KafkaSource("clicks", "127.0.0.1:9092"))
    """

    def __init__(self, source: KafkaSource) -> None:
        super().__init__()
        self._source = source

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        source = self._source
        reads = (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "Partitions" >> beam.FlatMap(lambda _: plan_reads(source))
            | "Reshuffle" >> beam.Reshuffle()
        )
        if source.bounded:
            return reads | "ReadPartition" >> beam.ParDo(_ReadBounded(source))
        return reads | "ReadPartition" >> beam.ParDo(ReadPartitions(source))
