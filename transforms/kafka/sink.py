"""Kafka sink: one JSON message per row, keyed by the row's grouping key.

The key is the JSON array of the view's grouping column values, in order (``["fr", 3]``;
``[]`` for a view without grouping columns). It is deterministic, so all the rows of a
grouping key land on the same partition, in the order they were produced. It leaves out the
window (and ``grouping_set``, ``granularity``): it places rows, it does not identify them, so
log compaction must not be enabled on such a topic; upsert by key and ``window_start``.

Delivery is confirmed per bundle: ``finish_bundle`` flushes the producer and raises if any
message failed, so the runner retries the bundle instead of marking it done. That is
at-least-once (a retried bundle sends its rows again); the idempotent producer only removes
the duplicates of librdkafka's own retries. Rows are accumulating panes, so a consumer that
upserts by key ends with the final value either way.

Rows are encoded with orjson. A row holding an integer beyond 64 bits (a ``sum`` of huge ints,
say), which orjson refuses, is written by the standard ``json`` module instead, the integer as
an exact JSON number (readers that parse numbers as doubles round it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from liveagg.engine.compiled import CompiledView, RunContext, as_compiled
from liveagg.settings import Connections, revealed
from liveagg.spec import Sink, ViewSpec
from liveagg.transforms.deadletter import NAMESPACE, result_dead_letter
from liveagg.transforms.envelope import EnvelopeKey, envelope
from liveagg.transforms.kafka.client import check_kafka, confluent_kafka
from liveagg.transforms.plan import ViewPlan
from liveagg.transforms.sinks import register_sink


class KafkaDeliveryError(RuntimeError):
    """Some messages of a bundle were not acknowledged by the broker."""


def encode_json(value: Any) -> bytes:
    """Compact JSON (a row, a key); integers beyond 64 bits stay exact JSON numbers."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False).encode()


def _finite(value: Any) -> Any:
    """NaN and infinities become null, as orjson writes them, so both encodings agree."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class GroupingKey:
    """The message key of a row: JSON array of its grouping column values, in order."""

    def __init__(self, columns: Iterable[str]) -> None:
        self.columns = tuple(columns)

    def __call__(self, row: Mapping[str, Any]) -> bytes:
        return encode_json([row.get(c) for c in self.columns])


class DeadLetterKey:
    """The message key of a dead letter: its view, or ``_input`` when no view saw it."""

    def __call__(self, dead: Mapping[str, Any]) -> bytes:
        return (dead.get("view") or "_input").encode()


class MilestoneKey:
    """The message key of a milestone event: its ``milestone_id``. A milestone delivered
    twice (a retried bundle) has one key, so a compacted topic keeps it once."""

    def __call__(self, event: Mapping[str, Any]) -> bytes:
        return str(event["milestone_id"]).encode()


#: librdkafka's default ``message.max.bytes``: ``produce`` refuses a larger message.
_MAX_MESSAGE_BYTES = 1_000_000
#: What a message's key and framing may take beside its value, kept free under that limit.
_MESSAGE_OVERHEAD = 4096


def message_limit(config: Mapping[str, Any]) -> int:
    """The largest value (with its key) a producer of ``config`` sends without refusing it."""
    return int(config.get("message.max.bytes", _MAX_MESSAGE_BYTES)) - _MESSAGE_OVERHEAD


class ProduceToKafka(beam.DoFn):
    """Produces each element as one message; a bundle ends only when all are acknowledged.

    ``config`` holds credentials as :class:`~liveagg.settings.Secret`; they are
    revealed only for the producer, in ``setup``. An element too large for one message
    (:func:`message_limit`) would fail the run at ``produce``: ``too_large`` says what
    becomes of it instead, a smaller element to send (a dead letter's payload cut) or a
    dead letter that this DoFn outputs in its place (a row).
    """

    def __init__(
        self,
        topic: str,
        config: Mapping[str, Any],
        key_fn: Callable[[Any], bytes],
        flush_timeout: timedelta = timedelta(seconds=60),
        too_large: Callable[[Any, int, int], tuple[Any, Any]] | None = None,
    ) -> None:
        self._topic = topic
        self._config = dict(config)
        self._key_fn = key_fn
        self._flush_timeout = flush_timeout
        self._too_large = too_large
        self._limit = message_limit(self._config)

    def setup(self) -> None:
        ck = confluent_kafka()
        self._producer = ck.Producer(
            {"enable.idempotence": True, "linger.ms": 20, "compression.type": "lz4"}
            | revealed(self._config)
        )
        self._failures: list[str] = []

    def start_bundle(self) -> None:
        self._failures = []

    def _on_delivery(self, error: Any, msg: Any) -> None:
        if error is not None:
            self._failures.append(f"{msg.key()!r}: {error}")

    def process(self, element: Any) -> Iterator[Any]:
        value, key = encode_json(element), self._key_fn(element)
        size = len(value) + len(key)
        if size > self._limit and self._too_large is not None:
            smaller, letter = self._too_large(element, size, self._limit)
            if letter is not None:
                yield letter
            if smaller is None:
                return
            value = encode_json(smaller)
        while True:
            try:
                self._producer.produce(
                    self._topic, value=value, key=key, on_delivery=self._on_delivery
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.1)
        self._producer.poll(0)

    def finish_bundle(self) -> None:
        left = self._producer.flush(self._flush_timeout.total_seconds())
        failures, self._failures = self._failures, []
        if left:
            raise KafkaDeliveryError(
                f"Kafka topic {self._topic!r}: {left} messages not acknowledged within "
                f"{self._flush_timeout}"
            )
        if failures:
            raise KafkaDeliveryError(
                f"Kafka topic {self._topic!r}: {len(failures)} messages failed, first: "
                f"{failures[0]}"
            )

    def teardown(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.flush(self._flush_timeout.total_seconds())


def _bootstrap(connections: Connections, what: str) -> str:
    if not connections.kafka_bootstrap:
        raise ValueError(
            f"{what}: no Kafka bootstrap servers; set LIVEAGG_KAFKA_BOOTSTRAP or pass them in "
            "the run's connection options"
        )
    return connections.kafka_bootstrap


class _RowTooLarge:
    """A row too large for one Kafka message: a ``too_large`` result dead letter instead, as
    the Cassandra sink gives for a row it cannot store."""

    def __init__(self, topic: str, view: str, values: frozenset[str]) -> None:
        self._topic, self._view, self._values = topic, view, values

    def __call__(self, row: Mapping[str, Any], size: int, limit: int) -> tuple[Any, Any]:
        detail = (
            f"not written to Kafka topic {self._topic!r}: its message is {size} bytes, more "
            f"than the producer's {limit} (message.max.bytes, less room for the key)"
        )
        return None, result_dead_letter(row, self._values, self._view, "too_large", detail)


class _LetterTooLarge:
    """A dead letter too large for one Kafka message (a payload near the limit, whose JSON
    escapes can make it six times longer): sent with its payload cut, and said so."""

    def __call__(self, letter: Mapping[str, Any], size: int, limit: int) -> tuple[Any, Any]:
        payload = letter.get("payload")
        if not isinstance(payload, str):
            return None, None  # nothing to cut: left to the broker's answer
        keep = limit // 8  # a character takes at most 6 bytes as JSON (\u0001), 4 as UTF-8
        cut = {
            **letter,
            "payload": payload[:keep],
            "detail": f"{letter.get('detail')} (payload cut to its first {keep} of "
            f"{len(payload)} characters for Kafka's message size limit)",
        }
        return cut, None


@dataclass(frozen=True)
class KafkaSink:
    """Writes a view's rows to ``topic``, one JSON message per row keyed by grouping key.

    Args:
        topic: The output topic (it must exist unless the broker creates topics).
        bootstrap_servers: librdkafka ``bootstrap.servers``.
        config: Extra librdkafka producer settings; they win over ours.
        flush_timeout: How long ``finish_bundle`` waits for acknowledgements.

    Example::

        KafkaSink("clicks_per_minute", "127.0.0.1:9092").write(rows, view, bounded=True)
    """

    topic: str
    bootstrap_servers: str
    config: Mapping[str, Any] = field(default_factory=dict)
    flush_timeout: timedelta = timedelta(seconds=60)
    #: ``write`` returns the dead letters of the rows too large for a message.
    gives_dead_letters: ClassVar[bool] = True

    @classmethod
    def from_connections(cls, topic: str, connections: Connections) -> KafkaSink:
        bootstrap = _bootstrap(connections, f"kafka sink to topic {topic!r}")
        return cls(topic, bootstrap, dict(connections.kafka_config))

    def producer_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **self.config}

    def write(
        self, rows: beam.PCollection, view: CompiledView | ViewSpec, *, bounded: bool
    ) -> beam.PCollection:
        check_kafka(self.producer_config(), f"kafka sink to topic {self.topic!r}")
        compiled = as_compiled(view)
        spec = compiled.spec
        fn = ProduceToKafka(
            self.topic,
            self.producer_config(),
            GroupingKey(spec.grouping_cols),
            self.flush_timeout,
            too_large=_RowTooLarge(self.topic, spec.name, compiled.value_columns),
        )
        return rows | f"{view.name}/WriteKafka/{self.topic}" >> beam.ParDo(fn)


@register_sink("kafka")
def kafka_sink(sink: Sink, connections: Connections) -> KafkaSink:
    """The sink of a view's ``{"type": "kafka", "topic": ...}`` entry."""
    return KafkaSink.from_connections(sink.options["topic"], connections)


class _ProduceRecords(beam.PTransform):
    """Sends a run's records that are not rows to ``topic`` as JSON, at least once; ``_what``
    names them in errors, ``_key`` gives each message's key."""

    _what: str
    _key: Callable[[], Callable[[Mapping[str, Any]], bytes]]
    _cut: Callable[[Any, int, int], tuple[Any, Any]] | None = None

    def __init__(self, topic: str, connections: Connections) -> None:
        super().__init__()
        self._topic = topic
        bootstrap = _bootstrap(connections, f"{self._what} to topic {topic!r}")
        self._config = {"bootstrap.servers": bootstrap, **connections.kafka_config}

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        check_kafka(self._config, f"{self._what} to topic {self._topic!r}")
        return records | "Produce" >> beam.ParDo(
            ProduceToKafka(self._topic, self._config, type(self)._key(), too_large=self._cut)
        )


class WriteDeadLettersToKafka(_ProduceRecords):
    """Sends dead letters to ``topic`` as JSON, keyed by view name (``_input`` for none).

    Example::

        compiled.dead_letters | WriteDeadLettersToKafka("liveagg-dead", connections)
    """

    _what = "dead letters"
    _key = DeadLetterKey
    _cut = _LetterTooLarge()


class WriteMilestonesToKafka(_ProduceRecords):
    """Sends milestone events to ``topic`` as JSON, keyed by ``milestone_id``, at least once
    (a consumer deduplicates by the key).

    Example::

        compiled.milestones | WriteMilestonesToKafka("liveagg-milestones", connections)
    """

    _what = "milestones"
    _key = MilestoneKey


class _Envelope(beam.DoFn):
    """A level-1 partial as its JSON envelope, counted as ``liveagg/partials/<view>``."""

    def __init__(self, view: CompiledView) -> None:
        self._view = view

    def setup(self) -> None:
        self._plan = ViewPlan(self._view)
        self._definition = self._view.fingerprint
        self._counter = Metrics.counter(NAMESPACE, f"partials/{self._view.name}")

    def process(self, partial: tuple) -> Iterator[dict[str, Any]]:
        self._counter.inc()
        yield envelope(self._plan, self._definition, partial)


class WriteEnvelopes(beam.PTransform):
    """Level 1 of a two-level run: sends one view's partials to the intermediate topic.

    Keyed by the view, final window and final grouping key
    (:class:`~liveagg.transforms.envelope.EnvelopeKey`), at least once, like every Kafka sink
    here: level 2 merges a shard's pane once however often it arrives.
    """

    def __init__(self, topic: str, connections: Connections, view: CompiledView | ViewSpec) -> None:
        super().__init__()
        self._topic = topic
        self._view = as_compiled(view, RunContext(level=1))
        bootstrap = _bootstrap(connections, f"partials to --intermediate-topic {topic!r}")
        self._config = {"bootstrap.servers": bootstrap, **connections.kafka_config}

    def expand(self, partials: beam.PCollection) -> beam.PCollection:
        check_kafka(self._config, f"partials to --intermediate-topic {self._topic!r}")
        return (
            partials
            | "Envelope" >> beam.ParDo(_Envelope(self._view))
            | "Produce"
            >> beam.ParDo(ProduceToKafka(self._topic, self._config, EnvelopeKey([self._view])))
        )
