"""Kafka and Cassandra with security on, through ``liveagg run`` as a user runs it.

The harness's broker has a SASL_SSL listener (PLAIN, SCRAM-SHA-256/512) and its Cassandra
node a login (``PasswordAuthenticator``) and TLS, both with certificates of a test CA. Rows are
checked against totals computed here by hand; a refused login or handshake must be one line
that names the service; and no secret may show in anything a run prints or writes.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.services import CassandraConnection, KafkaConnection, S3Connection, cache_dir
from liveagg.pipelines.run import RunConfig, pipeline_options
from liveagg.transforms.sinks import Connections
from tests.integration.test_kafka import (
    Produced,
    expected_rows,
    produce,
    read_back,
    row_totals,
)
from tests.support.cli import liveagg, rows_in
from tests.support.waiting import cassandra_schema_settling, retrying
from tests.transforms.kafka.test_source import VIEW

ck = pytest.importorskip("confluent_kafka")
pytest.importorskip("cassandra")
from cassandra.cluster import Cluster  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from tests.support.kafka_topics import create_topics  # noqa: E402

pytestmark = pytest.mark.integration

MESSAGES = 3_000
AWS_SECRET = "aws-secret-Zq8TnY3wLmVb0xP5rKc2"  # made up; moto checks no signature


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def view_file(tmp_path: Path) -> Path:
    path = tmp_path / "per_key.json"
    path.write_bytes(orjson.dumps(VIEW))
    return path


@pytest.fixture
def topics(kafka: KafkaConnection) -> Iterator[Callable[[int], list[str]]]:
    """Makes topics through the SASL_SSL listener and deletes them after the test."""
    admin = AdminClient(kafka.secure_client_config())
    made: list[str] = []

    def make(count: int) -> list[str]:
        names = [_name("liveagg-secure-") for _ in range(count)]
        create_topics(kafka.secure_client_config(), names, 3)
        made.extend(names)
        return names

    yield make
    if made:
        for future in admin.delete_topics(made).values():
            future.result(30)


def _run(*args: str, env: Mapping[str, str], ok: bool = True) -> Any:
    """``liveagg ARGS`` with ``env`` over this process's environment, less any security
    setting this process may carry, so that the run gets exactly the ones given."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIVEAGG_KAFKA_CONFIG_", "LIVEAGG_CASSANDRA_", "AWS_"))
    }
    return liveagg(*args, env={**base, **env}, ok=ok, timeout=300)


def _kafka_rows(kafka: KafkaConnection, topic: str, count: int) -> list[dict[str, Any]]:
    return [orjson.loads(m.value()) for m in read_back(kafka.bootstrap_servers, topic, count)]


def _cassandra_totals(
    cassandra: CassandraConnection, keyspace: str
) -> dict[tuple[str, str], tuple[int, int]]:
    cluster = Cluster(**cassandra.cluster_kwargs(tls=True))
    try:
        session = cluster.connect()
        query = f"SELECT key, window_start, n, total FROM {keyspace}.per_key"
        rows = retrying(  # the run has just created the table
            lambda: list(session.execute(query)),
            what=f"{keyspace}.per_key",
            transient=cassandra_schema_settling,
        )
        return {
            (r.key, r.window_start.strftime("%Y-%m-%dT%H:%M:%SZ")): (r.n, r.total) for r in rows
        }
    finally:
        cluster.shutdown()


def _input_file(folder: Path, produced: Produced) -> Path:
    """The produced messages as JSON Lines (the bad ones included), for a file run."""
    path = folder / "events.jsonl"
    good = [orjson.dumps(msg) for _, _, msg in produced.good]
    path.write_bytes(b"\n".join(good) + b"\n")
    return path


# --- Kafka: SASL_SSL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "form"),
    [("SCRAM-SHA-512", "env"), ("SCRAM-SHA-256", "options"), ("PLAIN", "options")],
)
def test_kafka_source_sink_and_dead_letters_over_sasl_ssl(
    kafka: KafkaConnection,
    topics: Callable[[int], list[str]],
    view_file: Path,
    mechanism: str,
    form: str,
) -> None:
    """The settings as LIVEAGG_KAFKA_CONFIG_* variables, or as --kafka-config options (the
    password still from the environment, where a command line cannot show it)."""
    source, out, dead = topics(3)
    produced = produce(kafka.bootstrap_servers, source, count=MESSAGES)
    env = kafka.secure_env(mechanism)
    options: list[str] = []
    if form == "options":
        settings = kafka.secure_settings(mechanism)
        env = {
            "LIVEAGG_KAFKA_BOOTSTRAP": str(kafka.secure_bootstrap_servers),
            "LIVEAGG_KAFKA_CONFIG_SASL_PASSWORD": settings.pop("sasl.password"),
        }
        for key, value in settings.items():
            options += ["--kafka-config", f"{key}={value}"]
    result = _run(
        *("run", "--views", str(view_file), "--kafka-topic", source, "--kafka-start", "earliest"),
        *("--no-view-sinks", "--sink", orjson.dumps({"type": "kafka", "topic": out}).decode()),
        *("--dead-letter-topic", dead, *options),
        env=env,
    )
    expected = expected_rows(produced)
    assert f"view per_key: {len(expected)} rows" in result.stdout
    assert row_totals(_kafka_rows(kafka, out, len(expected))) == expected
    letters = _kafka_rows(kafka, dead, len(produced.bad))
    assert Counter((d["view"], d["reason"]) for d in letters) == Counter(produced.bad.values())


def test_two_levels_over_sasl_ssl(
    kafka: KafkaConnection, topics: Callable[[int], list[str]], view_file: Path, tmp_path: Path
) -> None:
    """Level 1 writes partials to the intermediate topic and level 2 reads them, both over
    SASL_SSL: every Kafka client of a two-level run takes the settings."""
    source, partials = topics(2)
    produced = produce(kafka.bootstrap_servers, source, count=MESSAGES)
    env = kafka.secure_env("SCRAM-SHA-256")
    _run(
        *("run", "--views", str(view_file), "--kafka-topic", source, "--kafka-start", "earliest"),
        *("--intermediate-topic", partials, "--output", str(tmp_path / "level1")),
        env=env,
    )
    out = tmp_path / "out"
    _run(
        *("rekey", "--views", str(view_file), "--intermediate-topic", partials),
        *("--kafka-start", "earliest", "--output", str(out)),
        env=env,
    )
    assert row_totals(rows_in(out / "per_key")) == expected_rows(produced)


# --- Cassandra: a login and TLS -------------------------------------------------------------


@pytest.mark.parametrize("form", ["env", "options"])
def test_cassandra_sink_over_tls_with_a_login(
    cassandra: CassandraConnection, view_file: Path, tmp_path: Path, form: str
) -> None:
    produced = produce_offline(count=MESSAGES)
    events = _input_file(tmp_path, produced)
    keyspace = _name("liveagg_tls_")
    if form == "env":
        env, options = cassandra.tls_env(), []
    else:
        env = {
            "LIVEAGG_CASSANDRA_HOSTS": ",".join(cassandra.contact_points),
            "LIVEAGG_CASSANDRA_PORT": str(cassandra.port),
            "LIVEAGG_CASSANDRA_PASSWORD": cassandra.password,
        }
        options = [
            *("--cassandra-username", cassandra.username, "--cassandra-tls"),
            *("--cassandra-ca-file", str(cassandra.ca_file)),
        ]
    _run(
        *("run", "--views", str(view_file), "--input", str(events), "--no-view-sinks"),
        *("--sink", orjson.dumps({"type": "cassandra", "keyspace": keyspace}).decode()),
        *("--output", str(tmp_path / "out")),  # the dead letters' place
        *options,
        env=env,
    )
    try:
        assert _cassandra_totals(cassandra, keyspace) == expected_rows(produced)
    finally:
        _drop(cassandra, keyspace)


def produce_offline(count: int) -> Produced:
    """The good messages :func:`produce` would send, without a broker."""
    produced = Produced("file")
    for i in range(count):
        if i % 97 == 13:
            continue
        offset_s = (i * 7919) % 7200
        msg = {"ts": 1_700_000_000 + offset_s, "key": f"k{i % 20}", "value": i % 1000 - 100}
        produced.good.append((0, i, msg))
    return produced


def _drop(cassandra: CassandraConnection, keyspace: str) -> None:
    cluster = Cluster(**cassandra.cluster_kwargs())
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    finally:
        cluster.shutdown()


# --- refused: one line that names the service -----------------------------------------------


def _refusals(
    kafka: KafkaConnection, cassandra: CassandraConnection
) -> dict[str, tuple[dict[str, str], list[str], str]]:
    """Case -> (environment, extra options, the line expected on stderr)."""
    secure = kafka.secure_env()
    wrong_ca = "/etc/ssl/certs/ca-certificates.crt"  # the system's CAs: not the test CA
    return {
        "cassandra wrong password": (
            {**cassandra.tls_env(), "LIVEAGG_CASSANDRA_PASSWORD": "not-the-password"},
            [],
            r"^Cassandra at 127\.0\.0\.1:\d+: login refused \(.*Provided username liveagg "
            r"and/or password are incorrect.*\); check LIVEAGG_CASSANDRA_USERNAME",
        ),
        "cassandra no login": (
            {k: v for k, v in cassandra.tls_env().items() if not k.endswith(("NAME", "WORD"))},
            [],
            r"^Cassandra at 127\.0\.0\.1:\d+: the cluster requires a login; set "
            "LIVEAGG_CASSANDRA_USERNAME and LIVEAGG_CASSANDRA_PASSWORD$",
        ),
        "cassandra unknown CA": (
            {**cassandra.env(), "LIVEAGG_CASSANDRA_CA_FILE": wrong_ca},
            [],
            r"^Cassandra at 127\.0\.0\.1:\d+: TLS handshake failed \(\[SSL: "
            r"CERTIFICATE_VERIFY_FAILED\] certificate verify failed",
        ),
        "kafka wrong password": (
            {**secure, "LIVEAGG_KAFKA_CONFIG_SASL_PASSWORD": "not-the-password"},
            [],
            r"^Kafka topic '[^']+': Kafka at 127\.0\.0\.1:\d+ refused the connection: .*SASL "
            r"authentication error: Authentication failed.*; check the security settings",
        ),
        "kafka host name not in the certificate": (
            {**secure, "LIVEAGG_KAFKA_BOOTSTRAP": secure["LIVEAGG_KAFKA_BOOTSTRAP"].replace(
                "127.0.0.1", "localhost")},
            [],
            r"^Kafka topic '[^']+': Kafka at localhost:\d+ refused the connection: .*SSL "
            r"handshake failed: .*certificate verify failed",
        ),
        "kafka unknown setting": (
            secure,
            ["--kafka-config", "sasl.pasword=typo"],
            r'^Kafka topic \'[^\']+\': Kafka client settings refused: No such configuration '
            r'property: "sasl.pasword"$',
        ),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [
        "cassandra wrong password",
        "cassandra no login",
        "cassandra unknown CA",
        "kafka wrong password",
        "kafka host name not in the certificate",
        "kafka unknown setting",
    ],
)
def test_a_refused_connection_is_one_line_naming_the_service(
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    topics: Callable[[int], list[str]],
    view_file: Path,
    tmp_path: Path,
    case: str,
) -> None:
    env, options, expected = _refusals(kafka, cassandra)[case]
    if case.startswith("cassandra"):
        events = _input_file(tmp_path, produce_offline(count=50))
        source = ["--input", str(events), "--output", str(tmp_path / "out"), "--no-view-sinks"]
        source += ["--sink", orjson.dumps({"type": "cassandra", "keyspace": "never_made"}).decode()]
        env = {**env, "LIVEAGG_CASSANDRA_TLS": "true"}
    else:
        (topic,) = topics(1)
        source = ["--kafka-topic", topic, "--output", str(tmp_path / "out")]
    result = _run(*("run", "--views", str(view_file), *source, *options), env=env, ok=False)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if not _beam_import_noise(line)]
    assert len(lines) == 1, result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert result.stdout == ""


def _beam_import_noise(line: str) -> bool:
    """Beam's warning, at import, about optional GCP clients (not ours to silence here)."""
    return line.startswith("WARNING:root:apitools not found")


# --- no secret in anything a run shows ------------------------------------------------------


def _secrets(kafka: KafkaConnection, cassandra: CassandraConnection) -> dict[str, str]:
    return {"cassandra": cassandra.password, "kafka": kafka.password, "aws": AWS_SECRET}


def _leaks(text: str, secrets: Mapping[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


def _log_tails(paths: Sequence[Path]) -> dict[Path, int]:
    return {p: p.stat().st_size if p.exists() else 0 for p in paths}


def _written_since(sizes: Mapping[Path, int]) -> dict[Path, str]:
    out = {}
    for path, size in sizes.items():
        with path.open("rb") as f:
            f.seek(size)
            out[path] = f.read().decode("utf-8", errors="replace")
    return out


def test_no_secret_in_the_output_logs_files_or_options_of_a_run(
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    s3: S3Connection,
    topics: Callable[[int], list[str]],
    view_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DirectRunner, ``-v``: every secret is set and used (Cassandra over TLS, Kafka over
    SASL_SSL, S3 with a secret key); none shows in stdout, stderr, the files written (local
    and on S3), the messages sent, what the services logged meanwhile, or the pipeline
    options."""
    boto3 = pytest.importorskip("boto3")
    secrets = _secrets(kafka, cassandra)
    source, out_topic, dead = topics(3)
    produced = produce(kafka.bootstrap_servers, source, count=MESSAGES)
    bucket = _name("liveagg-secrets-")
    client = boto3.client("s3", **s3.boto3_kwargs())
    client.create_bucket(Bucket=bucket)
    keyspace = _name("liveagg_secrets_")
    out = tmp_path / "out"
    env = {
        **kafka.secure_env("SCRAM-SHA-512"),
        **cassandra.tls_env(),
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_DEFAULT_REGION": s3.region,
        "LIVEAGG_S3_ENDPOINT": s3.endpoint_url,
    }
    service_logs = [cache_dir() / "run" / name / f"{name}.log" for name in ("kafka", "cassandra")]
    before = _log_tails(service_logs)
    sinks = [
        {"type": "cassandra", "keyspace": keyspace},
        {"type": "kafka", "topic": out_topic},
        {"type": "s3", "path": f"s3://{bucket}/views", "format": "jsonl"},
    ]
    args = [
        *("-v", "run", "--views", str(view_file), "--kafka-topic", source),
        *("--kafka-start", "earliest", "--output", str(out), "--dead-letter-topic", dead),
        "--no-view-sinks",
    ]
    for sink in sinks:
        args += ["--sink", orjson.dumps(sink).decode()]
    try:
        result = _run(*args, env=env)
        expected = expected_rows(produced)
        # The run used every secret: rows reached each sink.
        assert row_totals(rows_in(out / "per_key")) == expected
        assert _cassandra_totals(cassandra, keyspace) == expected
        sent = _kafka_rows(kafka, out_topic, len(expected)) + _kafka_rows(
            kafka, dead, len(produced.bad)
        )
        objects = {
            o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
            for o in client.list_objects_v2(Bucket=bucket)["Contents"]
        }
        assert any(key.startswith("views/per_key/") for key in objects)

        assert "INFO" in result.stderr  # -v: Beam's and liveagg's logs are there to search
        assert _leaks(result.stdout, secrets) == []
        assert _leaks(result.stderr, secrets) == []
        written = {p: p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()}
        assert (
            written
            and {p: _leaks(t, secrets) for p, t in written.items() if _leaks(t, secrets)} == {}
        )
        assert {k: _leaks(t, secrets) for k, t in objects.items() if _leaks(t, secrets)} == {}
        assert _leaks(orjson.dumps(sent).decode(), secrets) == []
        logged = _written_since(before)
        assert {p: _leaks(t, secrets) for p, t in logged.items() if _leaks(t, secrets)} == {}

        # The pipeline options of the same run: S3's endpoint, no credential.
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config = RunConfig(views=[str(view_file)], connections=Connections())
        options = pipeline_options(config, [f"s3://{bucket}/views"]).get_all_options()
        assert options["s3_endpoint_url"] == s3.endpoint_url
        assert _leaks(repr(options), secrets) == []
        assert options["s3_secret_access_key"] is None and options["s3_access_key_id"] is None
        assert _leaks(repr(config), secrets) == []
    finally:
        _drop(cassandra, keyspace)
        for key in [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]:
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)


def test_a_local_run_has_no_s3_settings_in_its_pipeline_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("LIVEAGG_S3_ENDPOINT", "http://127.0.0.1:9")
    config = RunConfig(views=[], inputs=["events.jsonl"], output=str(tmp_path))
    options = pipeline_options(config, ["events.jsonl", str(tmp_path)])
    assert [k for k in options.get_all_options(drop_default=True) if k.startswith("s3_")] == []


# --- ... nor on a Flink cluster -------------------------------------------------------------


def _flink_texts(rest_url: str, job_id: str) -> dict[str, str]:
    """What Flink's REST API shows of the job and the cluster: the job's configuration,
    details and plan, and every log file of the JobManager and each TaskManager."""
    from integration.services._core import http_get

    def get(path: str) -> str:
        return http_get(f"{rest_url}{path}", timeout_s=30, limit=256 * 2**20).decode(
            errors="replace"
        )

    texts = {
        p: get(p) for p in (f"/jobs/{job_id}/config", f"/jobs/{job_id}", f"/jobs/{job_id}/plan")
    }
    for log in orjson.loads(get("/jobmanager/logs"))["logs"]:
        texts[f"/jobmanager/logs/{log['name']}"] = get(f"/jobmanager/logs/{log['name']}")
    for tm in orjson.loads(get("/taskmanagers"))["taskmanagers"]:
        base = f"/taskmanagers/{tm['id']}/logs"
        for log in orjson.loads(get(base))["logs"]:
            texts[f"{base}/{log['name']}"] = get(f"{base}/{log['name']}")
    return texts


def test_no_secret_on_a_flink_cluster(
    flink: Any,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    topics: Callable[[int], list[str]],
    view_file: Path,
    tmp_path: Path,
) -> None:
    """The same secrets on the Flink cluster: the workers (the harness's worker pool) read
    Kafka over SASL_SSL and write Cassandra over TLS, so the credentials reached them; yet
    neither Flink's REST API (the job's configuration, details and plan, the JobManager's and
    TaskManagers' logs), nor the job server's and worker pool's logs, nor what liveagg
    printed show any of them."""
    from tests.integration.test_flink import Run, _eventually

    secrets = _secrets(kafka, cassandra)
    source, out_topic, dead = topics(3)
    produced = produce(kafka.bootstrap_servers, source, count=MESSAGES)
    keyspace = _name("liveagg_secrets_")
    env = {
        **kafka.secure_env("SCRAM-SHA-512"),
        **cassandra.tls_env(),
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }
    harness_logs = sorted((cache_dir() / "run" / "flink").glob("*/*.log"))
    before = _log_tails(harness_logs)
    run = Run(
        [
            *("-v", "run", "--views", str(view_file), "--kafka-topic", source),
            *("--kafka-start", "earliest", "--unbounded", "--runner", "flink"),
            *("--flink-master", flink.master, "--flink-job-endpoint", flink.job_endpoint),
            *("--flink-worker-pool", flink.worker_pool, "--parallelism", "2"),
            *("--checkpoint-interval-s", "2", "--report-every-s", "5", "--no-view-sinks"),
            *("--sink", orjson.dumps({"type": "cassandra", "keyspace": keyspace}).decode()),
            *("--sink", orjson.dumps({"type": "kafka", "topic": out_topic}).decode()),
            *("--dead-letter-topic", dead),
        ],
        tmp_path / "liveagg.log",
        env,
    )
    expected = expected_rows(produced)
    try:
        job_id = run.flink_job_id()

        def stored() -> None:
            assert run.proc.poll() is None, run.text()[-4000:]
            assert _cassandra_totals(cassandra, keyspace) == expected

        _eventually(stored, 420.0, every_s=5.0)
        assert row_totals(_kafka_rows(kafka, out_topic, len(expected))) == expected
        texts = _flink_texts(flink.rest_url, job_id)
        assert run.interrupt() == 0, run.text()[-4000:]
    finally:
        run.close()
        _drop(cassandra, keyspace)
    assert {p: _leaks(t, secrets) for p, t in texts.items() if _leaks(t, secrets)} == {}
    logged = _written_since(before)
    assert "starting SDK worker" in "".join(logged.values())  # the worker pool's log is searched
    assert {p: _leaks(t, secrets) for p, t in logged.items() if _leaks(t, secrets)} == {}
    assert _leaks(run.text(), secrets) == []
    assert "user-config" in texts[f"/jobs/{job_id}/config"]  # Beam's options are shown there
