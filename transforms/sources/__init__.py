"""Sources: where messages come from. A source is read once per pipeline, for all its views.

A source's ``read`` yields one element per message: the raw payload (``str`` or ``bytes``),
or ``(payload, meta)`` where ``meta`` locates the message for dead letters (a dict with the
Kafka topic, partition and offset, or a file line's :data:`~.files.Where`). ``bounded`` says
whether the input ends; bounded input takes the fast bounded path, unbounded input the
streaming window operator. A source may also offer ``read_batches``, giving ``list`` elements
of payloads or :class:`~.files.LineBatch` elements, which the bounded path prefers.

A Kafka record's ``meta`` also carries, under :data:`WATERMARK`, the watermark its partition
had reported when the record was read; the streaming router uses it to tell which records
cannot be too late, and drops it before ``meta`` reaches a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

#: The ``meta`` key of a record's partition watermark (microseconds since the epoch).
WATERMARK = "watermark"


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
