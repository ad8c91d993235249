"""Put the benchmark events on a Kafka topic: all at once (a backlog) or paced at a rate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` afresh (deleting an older one of that name)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        for future in admin.delete_topics([topic]).values():
            future.result()
        deadline = time.monotonic() + 30
        while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
            time.sleep(0.2)
    for attempt in range(20):  # deletion is asynchronous on the broker
        try:
            for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
                future.result()
            return
        except Exception:
            if attempt == 19:
                raise
            time.sleep(0.5)


def lines(dataset: Path) -> Iterator[bytes]:
    with dataset.open("rb") as f:
        for line in f:
            yield line.rstrip(b"\n")


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[bytes],
    *,
    partitions: int,
    rate: float | None = None,
    batch: int = 10_000,
    on_sent: Callable[[int], None] | None = None,
    key: Callable[[bytes], bytes] | None = None,
) -> int:
    """Send ``messages`` round-robin over ``partitions``: message ``i`` to ``i mod n``.

    Round-robin, not librdkafka's sticky partitioner, which fills one partition at a time:
    with a backlog, one partition would then run hours of event time ahead of the others,
    and an event-time reader would see the rest as late. ``batch`` caps messages per
    produce request (small batches interleave partitions finely); ``rate`` caps messages
    per second. With ``key``, messages are keyed instead and placed by the Java client's
    murmur2 partitioner, where a Java producer or Kafka Streams would put them. Returns how
    many were sent, once the broker has acknowledged all of them.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.num.messages": batch,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "partitioner": "murmur2_random",
        }
    )
    started = time.monotonic()
    sent = 0
    for message in messages:
        where = {"partition": sent % partitions} if key is None else {"key": key(message)}
        while True:
            try:
                producer.produce(topic, message, **where)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)
            if on_sent:
                on_sent(sent)
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    producer.flush(60)
    return sent
