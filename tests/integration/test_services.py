"""Round trips through each real service, and reuse of a running one by ``ensure()``."""

from __future__ import annotations

import uuid

import pytest

from integration import services
from tests.support.waiting import eventually, kafka_records

pytestmark = pytest.mark.integration

N_MESSAGES = 1_000


def _unique(prefix: str) -> str:
    """Names that do not collide with an earlier run against a reused service."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def test_kafka_produce_consume_round_trip(kafka: services.KafkaConnection) -> None:
    ck = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = _unique("liveagg-it-")
    admin = AdminClient(kafka.client_config())
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(
        timeout=30
    )
    sent = {f"key-{i}": f"value-{i}" for i in range(N_MESSAGES)}
    errors: list[object] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer = ck.Producer({**kafka.client_config(), "linger.ms": 5, "acks": "all"})
    for key, value in sent.items():
        producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still in the producer queue after 30 s"
    assert errors == []

    consumer = ck.Consumer(
        {
            **kafka.client_config(),
            "group.id": _unique("liveagg-it-group-"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: dict[str, str] = {}

    def read_more() -> None:
        for msg in kafka_records(consumer.consume(num_messages=500, timeout=1.0)):
            received[msg.key().decode()] = msg.value().decode()
        assert len(received) >= N_MESSAGES, f"{len(received)} of {N_MESSAGES} messages"

    try:
        consumer.subscribe([topic])
        eventually(read_more, what=f"topic {topic!r}", timeout_s=60, every_s=0)
    finally:
        consumer.close()
    assert received == sent
    admin.delete_topics([topic])[topic].result(timeout=30)


def test_cassandra_keyspace_table_insert_select(cassandra: services.CassandraConnection) -> None:
    pytest.importorskip("cassandra")
    from cassandra.cluster import Cluster

    keyspace = _unique("liveagg_it_")
    cluster = Cluster(**cassandra.cluster_kwargs())
    try:
        session = cluster.connect()
        session.execute(
            f"CREATE KEYSPACE {keyspace} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.set_keyspace(keyspace)
        session.execute(
            "CREATE TABLE views (view_name text, window_start timestamp, clicks bigint, "
            "PRIMARY KEY ((view_name), window_start))"
        )
        insert = session.prepare(
            "INSERT INTO views (view_name, window_start, clicks) VALUES (?, ?, ?)"
        )
        base_ms = 1_356_998_400_000  # 2013-01-01T00:00:00Z
        for i in range(100):
            session.execute(insert, ("clicks_10m", base_ms + i * 600_000, i * 3))
        # An upsert by primary key replaces the row, as the Cassandra sink relies on.
        session.execute(insert, ("clicks_10m", base_ms, 42))
        rows = list(session.execute("SELECT clicks FROM views WHERE view_name = 'clicks_10m'"))
        assert [r.clicks for r in rows] == [42] + [i * 3 for i in range(1, 100)]
        session.execute(f"DROP KEYSPACE {keyspace}")
    finally:
        cluster.shutdown()


def test_s3_put_get(s3: services.S3Connection) -> None:
    boto3 = pytest.importorskip("boto3")
    client = boto3.client("s3", **s3.boto3_kwargs())
    bucket = _unique("liveagg-it-")
    client.create_bucket(Bucket=bucket)
    payload = bytes(range(256)) * 4096  # 1 MiB
    client.put_object(Bucket=bucket, Key="views/clicks/part-0.jsonl", Body=payload)
    got = client.get_object(Bucket=bucket, Key="views/clicks/part-0.jsonl")["Body"].read()
    assert got == payload
    listed = client.list_objects_v2(Bucket=bucket, Prefix="views/")
    assert [o["Key"] for o in listed["Contents"]] == ["views/clicks/part-0.jsonl"]


def test_gcs_upload_download(gcs: services.GcsConnection) -> None:
    pytest.importorskip("google.cloud.storage")
    from google.cloud import storage

    client = storage.Client(**gcs.client_kwargs())
    bucket = client.create_bucket(_unique("liveagg-it-"))
    small = b'{"view": "clicks", "clicks": 3}\n'
    large = bytes(range(256)) * 40_000  # 10 MB: goes through a resumable upload
    bucket.blob("views/small.jsonl").upload_from_string(small)
    bucket.blob("views/large.bin").upload_from_string(large)
    fresh = client.bucket(bucket.name)
    assert fresh.blob("views/small.jsonl").download_as_bytes() == small
    assert fresh.blob("views/large.bin").download_as_bytes() == large
    names = sorted(b.name for b in client.list_blobs(bucket.name, prefix="views/"))
    assert names == ["views/large.bin", "views/small.jsonl"]


def test_ensure_reuses_the_running_service(s3: services.S3Connection) -> None:
    service = services.get("s3")
    before = service.live_record()
    first = services.ensure("s3")
    second = services.ensure("s3")
    assert not first.started_here
    assert not second.started_here
    assert first.connection == second.connection == s3
    after = service.live_record()
    if before is None:
        # The session reuses an s3 the harness did not start: ensure() must not start one.
        assert after is None
        assert first.pid is None
    else:
        assert after is not None
        assert after.pid == before.pid == first.pid == second.pid
