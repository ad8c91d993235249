"""``liveagg run`` from a real Kafka topic into Cassandra, Kafka, S3 and GCS, against the oracle.

One module fixture produces generated messages (malformed lines included) to a fresh topic and
runs the two example views once with every sink and a dead-letter topic. Each test reads one
sink back with that service's own client and compares its rows with the DuckDB oracle computed
from the same lines written to a local file. One test replays the topic with a fresh consumer
group and checks that the Cassandra upserts converge on the same table; the last one kills a
run part-way with SIGKILL and checks that running it again converges on the oracle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.services import (
    CassandraConnection,
    GcsConnection,
    KafkaConnection,
    S3Connection,
)
from liveagg.loader import load_views
from liveagg.spec import ViewSpec
from tests.support.cassandra_rows import select_all, stored_row
from tests.support.cli import liveagg
from tests.support.compare import assert_rows_match, latest_panes
from tests.support.datagen import generate
from tests.support.oracle import expected_rows
from tests.support.waiting import (
    cassandra_schema_settling,
    cassandra_table_missing,
    cassandra_table_opening,
    eventually,
    never,
)

ck = pytest.importorskip("confluent_kafka")
boto3 = pytest.importorskip("boto3")
storage = pytest.importorskip("google.cloud.storage")
pytest.importorskip("cassandra")
from cassandra import InvalidRequest  # noqa: E402
from cassandra.cluster import Cluster  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from tests.support.kafka_topics import (  # noqa: E402
    Offsets,
    committed,
    create_topics,
    end_offsets,
    read_to,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "view_schemas" / "examples"
VIEW_FILES = [EXAMPLES / "network_telemetry.json", EXAMPLES / "ad_impressions.json"]
MESSAGES = 100_000
SEED = 11
PARTITIONS = 3
RUN_TIMEOUT_S = 900
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Deployment:
    """Where the run read and wrote, and what the first run left in each Kafka topic."""

    events: Path
    lines: list[bytes]
    positions: dict[tuple[int, int], bytes]  # (partition, offset) -> the produced line
    input_topic: str
    output_topic: str
    dead_letter_topic: str
    keyspace: str
    bucket: str
    command: list[str]
    env: dict[str, str]
    output_end: Offsets
    dead_letter_end: Offsets


# --- helpers --------------------------------------------------------------------------------


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _views() -> list[ViewSpec]:
    return load_views([str(p) for p in VIEW_FILES])


def _view(name: str) -> ViewSpec:
    return next(v for v in _views() if v.name == name)


def _liveagg(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return liveagg(*command, env=env, timeout=RUN_TIMEOUT_S)


def _jsonl_rows(objects: Mapping[str, bytes]) -> list[dict[str, Any]]:
    assert objects, "no objects written"
    rows = []
    for name, data in objects.items():
        assert name.endswith(".jsonl"), name
        rows.extend(orjson.loads(line) for line in data.splitlines() if line.strip())
    return rows


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expected(deployment: Deployment) -> dict[str, list[dict[str, Any]]]:
    return {v.name: expected_rows(v, deployment.events) for v in _views()}


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    s3: S3Connection,
    gcs: GcsConnection,
) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("e2e_services")
    events = folder / "events.jsonl"
    generate(events, MESSAGES, seed=SEED, keys=400, span_s=4 * 3600)
    lines = events.read_bytes().splitlines()
    assert len(lines) == MESSAGES

    bootstrap = kafka.bootstrap_servers
    topics = [_name("liveagg-it-in-"), _name("liveagg-it-out-"), _name("liveagg-it-dead-")]
    create_topics(kafka.client_config(), topics, PARTITIONS)
    input_topic, output_topic, dead_letter_topic = topics

    positions: dict[tuple[int, int], bytes] = {}
    failures: list[str] = []

    def delivered(error: Any, msg: Any) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            positions[(msg.partition(), msg.offset())] = msg.value()

    producer = ck.Producer({**kafka.client_config(), "linger.ms": 20})
    for line in lines:
        while True:
            try:
                producer.produce(input_topic, value=line, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not failures, failures[:5]
    assert len(positions) == MESSAGES

    bucket = _name("liveagg-it-")
    boto3.client("s3", **s3.boto3_kwargs()).create_bucket(Bucket=bucket)
    storage.Client(**gcs.client_kwargs()).create_bucket(bucket)
    keyspace = _name("liveagg_it_")

    env = {**os.environ, **s3.env(), **gcs.env(), **cassandra.env()}  # the Cassandra login
    command = [
        "run",
        "--views",
        *map(str, VIEW_FILES),
        "--kafka-topic",
        input_topic,
        "--kafka-bootstrap",
        bootstrap,
        "--kafka-start",
        "earliest",
        "--cassandra-hosts",
        ",".join(cassandra.contact_points),
        "--cassandra-port",
        str(cassandra.port),
        "--cassandra-local-dc",
        cassandra.local_dc,
        "--s3-endpoint",
        s3.endpoint_url,
        "--gcs-endpoint",
        gcs.emulator_host,
        "--sink",
        orjson.dumps({"type": "cassandra", "keyspace": keyspace}).decode(),
        "--sink",
        orjson.dumps({"type": "kafka", "topic": output_topic}).decode(),
        "--sink",
        orjson.dumps({"type": "s3", "path": f"s3://{bucket}/views", "format": "jsonl"}).decode(),
        "--sink",
        orjson.dumps({"type": "gcs", "path": f"gs://{bucket}/views"}).decode(),
        "--dead-letter-topic",
        dead_letter_topic,
    ]
    _liveagg(command, env)
    yield Deployment(
        events=events,
        lines=lines,
        positions=positions,
        input_topic=input_topic,
        output_topic=output_topic,
        dead_letter_topic=dead_letter_topic,
        keyspace=keyspace,
        bucket=bucket,
        command=command,
        env=env,
        output_end=end_offsets(kafka.client_config(), output_topic),
        dead_letter_end=end_offsets(kafka.client_config(), dead_letter_topic),
    )

    admin = AdminClient(kafka.client_config())
    for future in admin.delete_topics(topics).values():
        future.result(30)
    cluster = Cluster(**cassandra.cluster_kwargs())
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    finally:
        cluster.shutdown()


VIEW_NAMES = [v.name for v in _views()]


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_cassandra_rows_equal_the_oracle(
    deployment: Deployment, expected: dict, cassandra: CassandraConnection, name: str
) -> None:
    view = _view(name)
    stored = select_all(cassandra, deployment.keyspace, name)
    assert expected[name], "the generated data must produce rows for every view"
    assert_rows_match([stored_row(r, view) for r in stored], expected[name], view)


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_s3_rows_equal_the_oracle(
    deployment: Deployment, expected: dict, s3: S3Connection, name: str
) -> None:
    client = boto3.client("s3", **s3.boto3_kwargs())
    prefix = f"views/{name}/"
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=deployment.bucket, Prefix=prefix
    ):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=deployment.bucket, Key=obj["Key"])["Body"].read()
            objects[obj["Key"][len(prefix) :]] = body
    assert_rows_match(_jsonl_rows(objects), expected[name], _view(name))


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_gcs_rows_equal_the_oracle(
    deployment: Deployment, expected: dict, gcs: GcsConnection, name: str
) -> None:
    client = storage.Client(**gcs.client_kwargs())
    prefix = f"views/{name}/"
    objects = {
        b.name[len(prefix) :]: b.download_as_bytes()
        for b in client.list_blobs(deployment.bucket, prefix=prefix)
    }
    assert_rows_match(_jsonl_rows(objects), expected[name], _view(name))


def test_kafka_rows_equal_the_oracle(
    deployment: Deployment, expected: dict, kafka: KafkaConnection
) -> None:
    messages = read_to(kafka.client_config(), deployment.output_topic, deployment.output_end)
    by_view: dict[str, list[dict[str, Any]]] = {name: [] for name in VIEW_NAMES}
    for msg in messages:
        row = orjson.loads(msg.value())
        view = _view(row["view"])
        assert msg.key() == orjson.dumps([row.get(c) for c in view.grouping_cols])
        by_view[view.name].append(row)
    for name, rows in by_view.items():
        view = _view(name)
        assert_rows_match(latest_panes(rows, view), expected[name], view)


def test_dead_letters_name_every_bad_message(
    deployment: Deployment, kafka: KafkaConnection
) -> None:
    messages = read_to(
        kafka.client_config(), deployment.dead_letter_topic, deployment.dead_letter_end
    )
    letters = [orjson.loads(m.value()) for m in messages]
    unusable = 0
    for line in deployment.lines:
        try:
            if not isinstance(orjson.loads(line), dict):
                unusable += 1
        except orjson.JSONDecodeError:
            unusable += line.strip() != b""
    input_letters = [d for d in letters if d["view"] is None]
    assert len(input_letters) == unusable > 0
    assert {d["reason"] for d in input_letters} == {"not_json", "not_an_object"}
    reasons = {d["reason"] for d in letters if d["view"] is not None}
    assert {"missing_event_time", "invalid_event_time", "not_numeric"} <= reasons
    for msg, letter in zip(messages, letters, strict=True):
        assert msg.key() == (letter["view"] or "_input").encode()
        assert letter["detail"], letter
        source = letter["source"]
        assert source is not None, letter
        assert source["topic"] == deployment.input_topic, letter
        produced = deployment.positions[(source["partition"], source["offset"])]
        assert letter["payload"] == produced.decode("utf-8", errors="replace"), letter


def test_a_replay_converges_on_the_same_cassandra_table(
    deployment: Deployment, expected: dict, cassandra: CassandraConnection
) -> None:
    before = {n: len(select_all(cassandra, deployment.keyspace, n)) for n in VIEW_NAMES}
    _liveagg([*deployment.command, "--kafka-group-id", _name("liveagg-replay-")], deployment.env)
    for name in VIEW_NAMES:
        view = _view(name)
        stored = select_all(cassandra, deployment.keyspace, name)
        assert len(stored) == before[name] == len(expected[name])
        assert_rows_match([stored_row(r, view) for r in stored], expected[name], view)


def _rows_left(conn: CassandraConnection, keyspace: str, table: str) -> list[dict]:
    """What a killed run left in its table: nothing when it died before creating it."""
    try:
        return select_all(conn, keyspace, table, transient=cassandra_table_opening)
    except InvalidRequest as e:
        if cassandra_table_missing(e):
            return []
        raise


def test_interrupted_run_then_rerun_converges(
    deployment: Deployment,
    expected: dict,
    cassandra: CassandraConnection,
    kafka: KafkaConnection,
) -> None:
    """SIGKILL a run part-way through, then rerun it to completion; the table equals the oracle.

    The interrupted run reads the fixture's input topic with a fresh group and writes only to a
    fresh keyspace. Every 0.2 s the test checks whether the table exists and whether the group
    has committed an offset, and kills the run at the first of the two. Waiting for rows is too
    late: the sink creates the table and writes all of a view's rows in one go close to the
    end, so the run would be killed with the whole table written. The group commits each
    partition's offset once that partition is read, which comes before any write. The test
    fails if the run ended before it was killed or left a complete table. The rerun uses the
    same group, whose committed offsets may cover part of the topic; ``--kafka-start
    earliest`` makes it read the whole topic anyway.
    """
    name = "network_telemetry"
    view = _view(name)
    keyspace = _name("liveagg_it_kill_")
    group = _name("liveagg-kill-")
    dead_letters = _name("liveagg-kill-dead-")  # a run's dead letters need a place
    create_topics(kafka.client_config(), [dead_letters], 1)
    bootstrap = deployment.command[deployment.command.index("--kafka-bootstrap") + 1]
    command = [
        "run",
        "--views",
        str(EXAMPLES / f"{name}.json"),
        "--kafka-topic",
        deployment.input_topic,
        "--kafka-bootstrap",
        bootstrap,
        "--kafka-start",
        "earliest",
        "--kafka-group-id",
        group,
        "--cassandra-hosts",
        ",".join(cassandra.contact_points),
        "--cassandra-port",
        str(cassandra.port),
        "--cassandra-local-dc",
        cassandra.local_dc,
        "--sink",
        orjson.dumps({"type": "cassandra", "keyspace": keyspace}).decode(),
        "--dead-letter-topic",
        dead_letters,
    ]

    def under_way() -> None:
        if process.poll() is not None:
            return  # ended too soon: reported below
        offsets = committed(kafka.client_config(), deployment.input_topic, group, PARTITIONS)
        if any(o >= 0 for o in offsets):
            return
        # Raises while the table is missing or being created: not yet.
        select_all(cassandra, keyspace, name, transient=never)

    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "liveagg.cli", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=deployment.env,
            cwd=ROOT,
        )
        try:
            eventually(
                under_way,
                what="a table or a committed offset from the run",
                timeout_s=RUN_TIMEOUT_S,
                every_s=0.2,
                transient=cassandra_schema_settling,
            )
            running = process.poll() is None
            process.send_signal(signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            _, stderr = process.communicate(timeout=60)
        assert running, (
            f"the run ended (exit {process.returncode}) before it was killed: "
            f"{stderr[-2000:].decode(errors='replace')}"
        )
        assert process.returncode == -signal.SIGKILL
        left = _rows_left(cassandra, keyspace, name)
        assert len(left) < len(expected[name]), "the killed run had already written every row"

        _liveagg(command, deployment.env)
        stored = select_all(cassandra, keyspace, name)
        assert len(stored) == len(expected[name])
        assert_rows_match([stored_row(r, view) for r in stored], expected[name], view)
    finally:
        cluster = Cluster(**cassandra.cluster_kwargs())
        try:
            cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        finally:
            cluster.shutdown()
