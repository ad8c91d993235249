"""Sources: where messages come from. A source is read once per pipeline, for all its views.

A source's ``read`` yields the raw messages, as single elements or as batches:

* one element per message: the raw payload (``str`` or ``bytes``), or ``(payload, meta)``
  where ``meta`` locates the message for dead letters (a dict with the Kafka topic,
  partition and offset, or a file line's :data:`~.files.Where`); what a caller's stream or
  a ``TestStream`` gives;
* a batch of messages read together: :class:`KafkaRecords` (one ``consume()`` of one
  partition) or :class:`~.files.LineBatch` (a block of a file's lines). Both hold
  ``lines`` and locate line ``i`` with ``where(i)``. Beam's work per element is a few
  microseconds of Python, more than decoding a message costs, so Kafka reads and files
  hand their messages on in batches and the aggregations decode each batch at once.

``bounded`` says whether the input ends; bounded input takes the fast bounded path,
unbounded input the streaming window operator. A source may also offer ``read_batches``,
which the bounded path prefers.

A Kafka batch also carries the watermark its partition had reported when it was read; the
streaming router uses it to tell which records cannot be too late (a single ``meta`` may
carry it under :data:`WATERMARK`, and the router drops it before ``meta`` reaches a dead
letter).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

#: The ``meta`` key of a record's partition watermark (microseconds since the epoch).
WATERMARK = "watermark"


@dataclass(frozen=True, slots=True)
class KafkaRecords:
    """Records of one Kafka partition read together, in offset order: one element for all.

    ``lines[i]`` is the payload of offset ``offsets[i]`` (``b""`` for a tombstone), written
    at ``timestamps_ms[i]`` (None: the record has none). ``watermark_us``: the watermark
    the partition reported with these records (an unbounded read), their own event times
    included: the streaming operator's was at most that when they were emitted.
    """

    topic: str
    partition: int
    offsets: list[int]
    timestamps_ms: list[int | None]
    lines: list[bytes]
    watermark_us: int | None = None

    @property
    def origin(self) -> str:
        """``topic/partition``: a level-1 shard of a two-level run."""
        return f"{self.topic}/{self.partition}"

    def where(self, i: int) -> dict[str, Any]:
        """Record ``i``'s ``meta`` (topic, partition, offset, timestamp_ms)."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offsets[i],
            "timestamp_ms": self.timestamps_ms[i],
        }

    def messages(self) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """One ``(payload, meta)`` per record, for a caller that wants single messages."""
        for i, line in enumerate(self.lines):
            yield line, self.where(i)


@dataclass(frozen=True)
class FileSource:
    """JSON Lines files (a path or glob; local, ``s3://`` or ``gs://``). Bounded."""

    pattern: str
    bounded: bool = True

    def read(self, pipeline: beam.Pipeline, label: str) -> beam.PCollection:
        """One ``(line, where)`` element per line: the lines of ``read_batches``, as bytes.

        Not ``ReadFromText``: it decodes UTF-8 strictly (its default coder is
        ``StrUtf8Coder``, apache_beam/io/textio.py:764, whose ``decode`` is
        ``value.decode('utf-8')``, apache_beam/coders/coders.py:416), so a line of invalid
        UTF-8 would fail the run instead of becoming a ``not_json`` dead letter; and it
        knows no line numbers.
        """
        from liveagg.transforms.sources.files import LineBatch

        batches = self.read_batches(pipeline, label)
        return batches | f"{label}/Messages" >> beam.FlatMap(LineBatch.messages)

    def read_batches(self, pipeline: beam.PBegin, label: str) -> beam.PCollection:
        """The file's lines as :class:`~.files.LineBatch` elements (the bounded fast path)."""
        from liveagg.transforms.sources.files import ReadLineBatches

        return pipeline | label >> ReadLineBatches(self.pattern)

    def describe(self) -> str:
        return f"files {self.pattern}"


@dataclass(frozen=True)
class CreateSource:
    """In-memory messages, for tests and notebooks. Bounded."""

    messages: tuple[str, ...]
    bounded: bool = True

    def read(self, pipeline: beam.Pipeline, label: str) -> beam.PCollection:
        return pipeline | label >> beam.Create(list(self.messages), reshuffle=False)

    def describe(self) -> str:
        return f"{len(self.messages)} in-memory messages"
