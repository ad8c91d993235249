"""Kafka topics for tests: created and served before use, read back to their end.

Every function takes a client configuration (``KafkaConnection.client_config()``, or just
``bootstrap.servers``) and waits out the states of a topic just created, as
:mod:`tests.support.waiting` names them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from liveagg.transforms.kafka.source import coordinated
from tests.support.waiting import eventually, kafka_metadata_settling, kafka_records, retrying

Offsets = dict[int, int]  # partition -> offset


def create_topics(
    config: Mapping[str, Any], names: Sequence[str], partitions: int, timeout_s: float = 60.0
) -> None:
    """Create ``names`` and return once the broker serves each with a leader per partition."""
    admin = AdminClient(dict(config))
    for future in admin.create_topics([NewTopic(t, partitions, 1) for t in names]).values():
        future.result(30)
    for name in names:
        eventually(
            lambda name=name: _served(admin, name, partitions),
            what=f"metadata of new topic {name!r}",
            timeout_s=timeout_s,
            every_s=0.2,
            transient=kafka_metadata_settling,
        )


def produce(
    config: Mapping[str, Any], topic: str, values: Sequence[bytes], per_second: float | None = None
) -> None:
    """Write ``values`` to ``topic`` in order, one message each, and wait until all are stored;
    at ``per_second`` when given, so that a job reads them mid-stream."""
    producer = ck.Producer({**config, "linger.ms": 20, "enable.idempotence": True})
    started = time.monotonic()
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value=value)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.1)
        producer.poll(0)
        if per_second and i % 100 == 0:
            ahead = i / per_second - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    assert producer.flush(60) == 0


def _served(admin: AdminClient, topic: str, partitions: int) -> None:
    metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None:
        raise ck.KafkaException(ck.KafkaError(ck.KafkaError._UNKNOWN_TOPIC))
    if metadata.error is not None:
        raise ck.KafkaException(metadata.error)
    assert len(metadata.partitions) == partitions, metadata.partitions
    for p in metadata.partitions.values():
        if p.error is not None:
            raise ck.KafkaException(p.error)
        assert p.leader >= 0, f"partition {p.id} has no leader yet"


def end_offsets(config: Mapping[str, Any], topic: str, timeout_s: float = 60.0) -> Offsets:
    """Each partition's end (high watermark) offset, read now."""

    def read() -> Offsets:
        consumer = ck.Consumer({**config, "group.id": f"liveagg-test-{uuid.uuid4().hex[:8]}"})
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None:
                raise ck.KafkaException(
                    metadata.error if metadata else ck.KafkaError(ck.KafkaError._UNKNOWN_TOPIC)
                )
            return {
                p: consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1]
                for p in sorted(metadata.partitions)
            }
        finally:
            consumer.close()

    return retrying(
        read,
        what=f"end offsets of {topic!r}",
        transient=kafka_metadata_settling,
        timeout_s=timeout_s,
    )


def committed(config: Mapping[str, Any], topic: str, group: str, partitions: int) -> list[int]:
    """The offsets ``group`` has committed on each partition (negative where none)."""
    consumer = ck.Consumer({**config, "group.id": group})
    try:
        tps = [ck.TopicPartition(topic, p) for p in range(partitions)]
        done = retrying(
            lambda: coordinated(lambda: consumer.committed(tps, timeout=10)),
            what=f"offsets of group {group!r} on {topic!r}",
            transient=kafka_metadata_settling,
        )
        return [tp.offset for tp in done]
    finally:
        consumer.close()


def read_to(
    config: Mapping[str, Any], topic: str, ends: Offsets, timeout_s: float = 120.0
) -> list[Any]:
    """Every record of ``topic`` from the start up to ``ends`` (from :func:`end_offsets`)."""
    consumer = ck.Consumer(
        {
            **config,
            "group.id": f"liveagg-test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    records: list[Any] = []
    pending = {p for p, end in ends.items() if end > 0}

    def read_more() -> None:
        batch = consumer.consume(1000, timeout=1.0)
        for msg in batch:  # an end of partition at or past the end: nothing more to come
            error = msg.error()
            eof = error is not None and error.code() == ck.KafkaError._PARTITION_EOF
            if eof and msg.offset() >= ends.get(msg.partition(), 0):
                pending.discard(msg.partition())
        for msg in kafka_records(batch):
            if msg.offset() < ends[msg.partition()]:
                records.append(msg)
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
        assert not pending, f"partitions {sorted(pending)} not read to their end yet"

    try:
        consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in pending])
        if pending:
            eventually(read_more, what=f"topic {topic!r}", timeout_s=timeout_s, every_s=0)
    finally:
        consumer.close()
    return records
