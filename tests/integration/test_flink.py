"""``liveagg run --runner flink`` on a real Flink session cluster: Kafka in, Cassandra out.

Every test starts ``liveagg`` as a user would (a subprocess, unbounded Kafka read, Cassandra
sink, dead letters to a topic) against the harness's cluster: a JobManager, two TaskManagers,
Beam's Flink job server and a Beam Python worker pool. The Cassandra table is polled until it
equals the DuckDB oracle computed from the same lines; Ctrl-C (SIGINT) then cancels the job.

* the rows, the dead letters and the metrics in Flink's REST API are right;
* data late within allowed lateness updates the stored row; later data is a dead letter;
* ``kill -9`` of a TaskManager mid-stream: Flink restores the last checkpoint and the table
  still equals the oracle (nothing lost, nothing counted twice); for running counters with
  milestones too, whose topic then holds every milestone the oracle reaches, none other, and
  an id twice only as a replay of the restored checkpoint;
* the whole cluster stopped mid-stream: a new run restored from the retained checkpoint, or
  from a savepoint taken on Ctrl-C, ends at the oracle too;
* the whole service stopped as ``python -m integration.services stop flink`` stops it (the
  worker pool and the job server first), mid-stream or in the job's first seconds: liveagg
  ends with one line naming the checkpoint to resume from, and resuming from it ends at the
  oracle, ``live_keys`` back to 0 once every window has closed;
* Ctrl-C prints the Flink job's own counters, and logs no ERROR in the job server's and the
  worker pool's logs.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from integration import services
from integration.services import CassandraConnection, KafkaConnection
from liveagg.loader import load_views
from liveagg.runners.flink import JOB_LOST_EXIT, resolve_restore
from liveagg.runners.flink_rest import TERMINAL, FlinkRest, FlinkRestError
from liveagg.spec import ViewSpec
from tests.support.cassandra_rows import view_rows
from tests.support.cli import liveagg, rows_in
from tests.support.compare import (
    assert_milestones_match,
    assert_rows_match,
    latest_panes,
    without_panes,
)
from tests.support.datagen import generate
from tests.support.oracle import expected_milestones, expected_rows
from tests.support.waiting import (
    cassandra_schema_settling,
    either,
    eventually,
    flink_job_starting,
    kafka_records,
    never,
    retrying,
)

ck = pytest.importorskip("confluent_kafka")
pytest.importorskip("cassandra")
from cassandra.cluster import Cluster  # noqa: E402

from integration.services import flink as flink_service  # noqa: E402
from integration.services.flink import FlinkConnection  # noqa: E402
from tests.support.kafka_topics import create_topics, end_offsets, produce, read_to  # noqa: E402

T = TypeVar("T")

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "view_schemas" / "examples"
VIEW_FILES = [EXAMPLES / "network_telemetry.json", EXAMPLES / "ad_impressions.json"]
PARTITIONS = 3
CONVERGE_TIMEOUT_S = 420.0


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# --- the pieces a test puts together --------------------------------------------------------


class Run:
    """One ``liveagg run --runner flink`` process, its output in a log file; ``env`` (the
    Cassandra login, say) goes over this process's environment."""

    def __init__(
        self, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "liveagg.cli", *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            # Unbuffered: the tests poll the log for what liveagg prints (job id, reports).
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def printed_job_id(self) -> str | None:
        """The Flink job id liveagg printed, if it has."""
        match = re.search(r"Flink job ([0-9a-f]{32})", self.text())
        return match.group(1) if match else None

    def flink_job_id(self, timeout_s: float = 180.0) -> str:
        def printed() -> str:
            job_id = self.printed_job_id()
            if job_id is None and self.proc.poll() is not None:
                pytest.fail(f"liveagg exited early:\n{self.text()[-4000:]}")
            assert job_id, f"no Flink job id printed:\n{self.text()[-4000:]}"
            return job_id

        return eventually(printed, what="the Flink job id", timeout_s=timeout_s)

    def interrupt(self, timeout_s: float = 300.0) -> int:
        """Ctrl-C, as a user would; returns the exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the run and its Flink job (Ctrl-C cancels it), killing liveagg if it hangs.

        A job that outlives its liveagg (killed, or a failed cancel) is cancelled here, so
        that it does not take the shared cluster's CPU from the tests after it.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._out.close()
        job_id = self.printed_job_id()
        if job_id:
            rest = FlinkRest(services.connection("flink").rest_url)
            with contextlib.suppress(FlinkRestError, OSError):
                if rest.state(job_id) not in TERMINAL:
                    rest.cancel(job_id)


@dataclass
class Stream:
    """A topic, its generated lines and where the oracle reads them."""

    topic: str
    lines: list[bytes]
    events: Path


class ServiceLogs:
    """What the job server and the worker pool log from now on."""

    def __init__(self) -> None:
        parts = (flink_service.FlinkJobServer(), flink_service.BeamWorkerPool())
        self._files = {part.name: part.log_file for part in parts}
        self._sizes = {n: f.stat().st_size if f.exists() else 0 for n, f in self._files.items()}

    def new_text(self) -> dict[str, str]:
        out = {}
        for name, path in self._files.items():
            with path.open("rb") as f:
                f.seek(self._sizes[name])
                out[name] = f.read().decode(errors="replace")
        return out

    def assert_no_error(self) -> None:
        """No ERROR line once every SDK worker has exited (the TaskManagers close their
        environments after the job has ended; a worker exits when the runner hangs up)."""
        record = flink_service.BeamWorkerPool().live_record()
        assert record is not None, "the worker pool is not running"

        def workers_gone() -> None:
            assert "starting SDK worker" in self.new_text()["beam-worker-pool"]
            assert not _children(record.pid), _children(record.pid)

        _eventually(workers_gone, 120.0, every_s=2.0)
        for name, text in self.new_text().items():
            errors = [line for line in text.splitlines() if "ERROR" in line]
            assert not errors, f"{name}:\n{text[-6000:]}"


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (an exited one not yet reaped is not)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def _create_topics(kafka: KafkaConnection, partitions: int, *names: str) -> None:
    create_topics(kafka.client_config(), names, partitions)


def _stream(kafka: KafkaConnection, folder: Path, n: int, seed: int) -> Stream:
    events = folder / "events.jsonl"
    generate(events, n, seed=seed, keys=300, span_s=2 * 3600)
    topic = _name("liveagg-flink-in-")
    _create_topics(kafka, PARTITIONS, topic)
    return Stream(topic, events.read_bytes().splitlines(), events)


def _command(
    flink: FlinkConnection,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    *,
    topic: str,
    keyspace: str,
    dead_letter_topic: str,
    views: Sequence[Path] = VIEW_FILES,
    parallelism: int = 2,
    checkpoint_interval_s: int = 2,
    extra: Sequence[str] = (),
) -> list[str]:
    return [
        "run",
        "--views",
        *map(str, views),
        "--kafka-topic",
        topic,
        "--kafka-bootstrap",
        kafka.bootstrap_servers,
        "--kafka-start",
        "earliest",
        "--unbounded",
        "--runner",
        "flink",
        "--flink-master",
        flink.master,
        "--flink-job-endpoint",
        flink.job_endpoint,
        "--flink-worker-pool",
        flink.worker_pool,
        "--parallelism",
        str(parallelism),
        "--checkpoint-interval-s",
        str(checkpoint_interval_s),
        "--report-every-s",
        "5",
        "--no-view-sinks",
        "--sink",
        orjson.dumps({"type": "cassandra", "keyspace": keyspace}).decode(),
        "--dead-letter-topic",
        dead_letter_topic,
        "--cassandra-hosts",
        ",".join(cassandra.contact_points),
        "--cassandra-port",
        str(cassandra.port),
        "--cassandra-local-dc",
        cassandra.local_dc,
        *extra,
    ]


@dataclass
class Live:
    """30,000 messages to produce live onto a fresh topic, and the command that reads them."""

    stream: Stream
    command: list[str]
    producer: threading.Thread


class Gate:
    """Holds back the second half of a live stream until the test opens it."""

    def __init__(self) -> None:
        self._opened = threading.Event()
        self._go = False

    def open(self, go: bool = True) -> None:
        """Let the rest be written, or with ``go`` false, never (the test has failed)."""
        self._go = go
        self._opened.set()

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def wait(self) -> bool:
        return self._opened.wait(CONVERGE_TIMEOUT_S) and self._go


def _produce_live(kafka: KafkaConnection, stream: Stream, gate: Gate | None) -> None:
    """Writes the stream at 600 lines a second; with ``gate``, the second half once it opens."""
    config, lines = kafka.client_config(), stream.lines
    first = len(lines) // 2 if gate is not None else len(lines)
    produce(config, stream.topic, lines[:first], 600.0)
    if gate is not None and gate.wait():
        produce(config, stream.topic, lines[first:], 600.0)


def _live(
    tmp_path: Path,
    flink: FlinkConnection,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    keyspace: str,
    seed: int,
    extra: Sequence[str] = (),
    views: Sequence[Path] = VIEW_FILES,
    gate: Gate | None = None,
    checkpoint_interval_s: int = 2,
) -> Live:
    stream = _stream(kafka, tmp_path, 30_000, seed=seed)
    dead_topic = _name("liveagg-flink-dead-")
    _create_topics(kafka, 1, dead_topic)
    command = _command(
        flink,
        kafka,
        cassandra,
        topic=stream.topic,
        keyspace=keyspace,
        dead_letter_topic=dead_topic,
        views=views,
        checkpoint_interval_s=checkpoint_interval_s,
        extra=extra,
    )
    producer = threading.Thread(target=_produce_live, args=(kafka, stream, gate), daemon=True)
    return Live(stream, command, producer)


def _resume(
    live: Live,
    restore: str,
    tmp_path: Path,
    cassandra: CassandraConnection,
    keyspace: str,
    rest: FlinkRest,
    then: Callable[[str], None] = lambda job_id: None,
) -> None:
    """A new run from ``restore`` restores, reads the rest of the stream and ends at the
    oracle; ``then(job_id)`` checks more before Ctrl-C stops it."""
    run = Run([*live.command, "--flink-restore", restore], tmp_path / "second.log", cassandra.env())
    try:
        job_id = run.flink_job_id()
        _eventually(lambda: _assert_restored(rest, job_id), 120.0, every_s=1.0)
        live.producer.join(300)
        assert not live.producer.is_alive()
        _converges(cassandra, keyspace, _views(), live.stream.events, run)
        then(job_id)
        assert run.interrupt() == 0, run.text()[-4000:]
    finally:
        run.close()


#: What the services answer while a job starts or creates its table: "not yet".
_STARTING = either(cassandra_schema_settling, flink_job_starting)


def _eventually(check: Callable[[], T], timeout_s: float, every_s: float = 3.0) -> T:
    """:func:`~tests.support.waiting.eventually`, waiting out a starting job and its table."""
    what = getattr(check, "__name__", "the condition")
    return eventually(check, what=what, timeout_s=timeout_s, every_s=every_s, transient=_STARTING)


def _converges(
    cassandra: CassandraConnection,
    keyspace: str,
    views: Sequence[ViewSpec],
    events: Path,
    run: Run,
) -> None:
    expected = {v.name: expected_rows(v, events) for v in views}

    def check() -> None:
        assert run.proc.poll() is None, f"liveagg exited:\n{run.text()[-4000:]}"
        for view in views:
            stored = _stored(cassandra, keyspace, view)
            assert_rows_match(without_panes(stored), without_panes(expected[view.name]), view)
            # Every window has closed: its last pane is on time, or late after late data. A
            # global window never closes on a stream: its rows are early panes.
            closed = {"EARLY"} if view.window.type == "global" else {"ON_TIME", "LATE"}
            assert {r["pane_timing"] for r in stored} <= closed

    _eventually(check, CONVERGE_TIMEOUT_S, every_s=5.0)


def _stored(cassandra: CassandraConnection, keyspace: str, view: ViewSpec) -> list[dict]:
    """The view's table; while the job creates it, the error that :data:`_STARTING` waits out."""
    return view_rows(cassandra, keyspace, view, transient=never)


def _checkpoints(rest: FlinkRest, job_id: str) -> dict[str, Any]:
    return rest._call("GET", f"/jobs/{job_id}/checkpoints")


def _wait_checkpoints(rest: FlinkRest, job_id: str, at_least: int) -> None:
    def check() -> None:
        assert _checkpoints(rest, job_id)["counts"]["completed"] >= at_least

    _eventually(check, 180.0, every_s=1.0)


def _read_topic(kafka: KafkaConnection, topic: str) -> list[Any]:
    """Every message of ``topic`` up to its end now."""
    config = kafka.client_config()
    return [orjson.loads(m.value()) for m in read_to(config, topic, end_offsets(config, topic))]


def _dead_letters(kafka: KafkaConnection, topic: str, at_least: int) -> list[dict[str, Any]]:
    consumer = ck.Consumer(
        {**kafka.client_config(), "group.id": _name("liveagg-it-"), "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    found: list[dict[str, Any]] = []

    def read_more() -> None:
        found.extend(orjson.loads(m.value()) for m in kafka_records(consumer.consume(500, 1.0)))
        assert len(found) >= at_least, f"{len(found)} of {at_least} dead letters"

    try:
        eventually(read_more, what=f"dead letters in {topic!r}", timeout_s=120, every_s=0)
    finally:
        consumer.close()
    return found


@pytest.fixture
def keyspace(cassandra: CassandraConnection) -> Iterator[str]:
    name = _name("liveagg_flink_")
    yield name
    cluster = Cluster(**cassandra.cluster_kwargs())
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {name}")
    finally:
        cluster.shutdown()


@pytest.fixture
def rest(flink: FlinkConnection) -> FlinkRest:
    return FlinkRest(flink.rest_url)


def _views(paths: Sequence[Path] = VIEW_FILES) -> list[ViewSpec]:
    return load_views([str(p) for p in paths])


# --- tests ----------------------------------------------------------------------------------


def test_rows_dead_letters_and_metrics_on_a_flink_cluster(
    tmp_path: Path,
    flink: FlinkConnection,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    keyspace: str,
    rest: FlinkRest,
) -> None:
    stream = _stream(kafka, tmp_path, 20_000, seed=21)
    produce(kafka.client_config(), stream.topic, stream.lines)
    dead_topic, out_topic = _name("liveagg-flink-dead-"), _name("liveagg-flink-out-")
    _create_topics(kafka, 1, dead_topic, out_topic)
    kafka_sink = orjson.dumps({"type": "kafka", "topic": out_topic}).decode()
    logs = ServiceLogs()
    run = Run(
        _command(
            flink,
            kafka,
            cassandra,
            topic=stream.topic,
            keyspace=keyspace,
            dead_letter_topic=dead_topic,
            extra=["--sink", kafka_sink],
        ),
        tmp_path / "liveagg.log",
        cassandra.env(),
    )
    try:
        job_id = run.flink_job_id()
        state = retrying(lambda: rest.state(job_id), what="job state", transient=_STARTING)
        assert state in ("CREATED", "RUNNING", "INITIALIZING")
        # The first report lists every view and partition, whether or not it has figures yet.
        _eventually(lambda: _assert_in("kafka offsets behind:", run.text()), 120.0)
        first = re.search(r"job \w+ \w+:\n(.*?)kafka offsets behind: ([^\n]*)", run.text(), re.S)
        assert first, run.text()[-3000:]
        for view in _views():
            assert f"view {view.name}: rows " in first.group(1), first.group(0)
        for p in range(PARTITIONS):
            assert f"{stream.topic}/{p} " in first.group(2) + " ", first.group(0)
        # Parallelism 2 spreads over both TaskManagers (taskmanager.load-balance.mode), when
        # the cluster has two (LIVEAGG_FLINK_TASKMANAGERS).
        spread = min(2, flink_service.taskmanager_count())
        for vertex in rest._call("GET", f"/jobs/{job_id}")["vertices"]:
            if vertex["parallelism"] == 2:
                assert len(_taskmanager_ports(rest, job_id, vertex["id"])) == spread, vertex
        _converges(cassandra, keyspace, _views(), stream.events, run)

        expected = {v.name: expected_rows(v, stream.events) for v in _views()}

        def kafka_panes() -> None:
            """The Kafka sink has every pane; the newest per key and window is the result."""
            panes = _read_topic(kafka, out_topic)
            for view in _views():
                rows = latest_panes([p for p in panes if p["view"] == view.name], view)
                assert_rows_match(without_panes(rows), without_panes(expected[view.name]), view)

        _eventually(kafka_panes, 120.0, every_s=2.0)

        def metrics_settled() -> None:
            metrics = rest.metrics(job_id)
            for p in range(PARTITIONS):
                assert metrics.get(f"kafka_lag_offsets/{stream.topic}/{p}") == 0, metrics
            for view in _views():
                assert f"live_keys/{view.name}" in metrics, metrics
                assert f"lag_seconds/{view.name}" in metrics, metrics
            dead = {k: v for k, v in metrics.items() if k.startswith("dead_letter/")}
            assert sum(v for k, v in dead.items() if k.count("/") == 1) > 0, metrics

        _eventually(metrics_settled, 60.0)
        metrics = rest.metrics(job_id)
        totals = sum(v for k, v in metrics.items() if re.fullmatch(r"dead_letter/[a-z_]+", k))
        letters = _dead_letters(kafka, dead_topic, int(totals))
        assert len(letters) == totals  # one message per dead letter, none silently dropped
        assert {d["reason"] for d in letters} == {
            k.split("/")[1] for k in metrics if re.fullmatch(r"dead_letter/[a-z_]+", k)
        }
        _eventually(lambda: _assert_in("dead letters:", run.text()), 30.0)
        assert run.interrupt() == 0, run.text()[-4000:]
        assert rest.state(job_id) == "CANCELED"
        # The summary is the job's own: Flink's counters, not Beam's job service's zeros.
        summary = run.text().split(f"job {job_id} CANCELED", 1)[1]
        assert f"Flink job {job_id}: its own counters, final" in summary, summary
        assert f"read {len(stream.lines)} lines = " in summary, summary
        for view in _views():  # rows counts panes: at least one per stored row
            found = re.search(rf"view {view.name}: (\d+) rows", summary)
            assert found, summary
            assert int(found.group(1)) >= len(_stored(cassandra, keyspace, view)), summary
        assert f"dead letters: {len(letters)}\n" in summary, summary
        logs.assert_no_error()  # a clean cancel
    finally:
        run.close()


def _assert_in(needle: str, text: str) -> None:
    assert needle in text, text[-3000:]


def _taskmanager_ports(rest: FlinkRest, job_id: str, vertex_id: str) -> set[int]:
    """The RPC ports (the harness's names) of the TaskManagers running a vertex's subtasks."""
    found = rest._call("GET", f"/jobs/{job_id}/vertices/{vertex_id}/taskmanagers")
    return {int(tm["taskmanager-id"].split(":")[1].split("-")[0]) for tm in found["taskmanagers"]}


LATE_VIEW = {
    "name": "late_counts",
    "event_time": {"field": "ts", "format": "iso8601"},
    "grouping_cols": ["k"],
    "window": {"type": "fixed", "size": "1m"},
    "allowed_lateness": "2m",
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "n"},
        {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "total"},
    ],
}


def test_late_data_updates_the_row_and_too_late_data_is_a_dead_letter(
    tmp_path: Path,
    flink: FlinkConnection,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    keyspace: str,
) -> None:
    view_file = tmp_path / "late_counts.json"
    view_file.write_bytes(orjson.dumps(LATE_VIEW))
    (view,) = _views([view_file])
    topic, dead_topic = _name("liveagg-flink-late-"), _name("liveagg-flink-dead-")
    _create_topics(kafka, 1, topic, dead_topic)

    def send(*events: tuple[str, int, int]) -> None:  # (key, seconds after 00:00, value)
        produce(
            kafka.client_config(),
            topic,
            [
                orjson.dumps({"k": k, "ts": f"2024-05-01T00:{s // 60:02d}:{s % 60:02d}Z", "v": v})
                for k, s, v in events
            ],
        )

    def stored(key: str, start: str) -> dict[str, Any]:
        rows = [r for r in _stored(cassandra, keyspace, view) if r["k"] == key]
        matches = [r for r in rows if r["window_start"] == f"2024-05-01T{start}:00Z"]
        assert matches, rows
        return matches[0]

    def row_is(key: str, start: str, n: int, total: int, timing: str) -> Callable[[], None]:
        def check() -> None:
            row = stored(key, start)
            assert (row["n"], row["total"], row["pane_timing"]) == (n, total, timing), row

        return check

    run = Run(
        _command(
            flink,
            kafka,
            cassandra,
            topic=topic,
            keyspace=keyspace,
            dead_letter_topic=dead_topic,
            views=[view_file],
            parallelism=1,
            extra=["--idle-timeout-s", "3600"],
        ),
        tmp_path / "liveagg.log",
        cassandra.env(),
    )
    try:
        run.flink_job_id()
        # The watermark follows the largest event time: 00:01:10 closes [00:00, 00:01) on time.
        send(("a", 10, 1), ("a", 11, 1), ("a", 12, 1), ("b", 70, 1))
        _eventually(row_is("a", "00:00", 3, 3, "ON_TIME"), 180.0)
        # Late, within allowed lateness (end + 2m = 00:03): a LATE pane replaces the row.
        send(("a", 20, 5))
        _eventually(row_is("a", "00:00", 4, 8, "LATE"), 120.0)
        # 00:05:00 passes 00:03, closing the window for good; c's window [00:02, 00:03) firing
        # on time shows the watermark got there.
        send(("c", 130, 1), ("b", 300, 1))
        _eventually(row_is("c", "00:02", 1, 1, "ON_TIME"), 120.0)
        time.sleep(3.0)
        send(("a", 30, 100))
        (letter,) = _dead_letters(kafka, dead_topic, 1)
        assert letter["reason"] == "too_late"
        assert letter["view"] == "late_counts"
        assert orjson.loads(letter["payload"])["v"] == 100
        row_is("a", "00:00", 4, 8, "LATE")()  # the stored row did not change
        assert run.interrupt() == 0, run.text()[-4000:]
    finally:
        run.close()


def test_a_killed_taskmanager_is_recovered_from_the_last_checkpoint(
    tmp_path: Path,
    flink: FlinkConnection,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    keyspace: str,
    rest: FlinkRest,
) -> None:
    live = _live(tmp_path, flink, kafka, cassandra, keyspace, seed=22)
    run = Run(live.command, tmp_path / "liveagg.log", cassandra.env())
    try:
        job_id = run.flink_job_id()
        live.producer.start()
        _wait_checkpoints(rest, job_id, 3)
        busy = _busy_taskmanager(rest, job_id)
        flink_service.kill_taskmanager(busy)  # kill -9 one that runs the job, mid-stream
        try:
            _eventually(lambda: _assert_restored(rest, job_id), 180.0, every_s=1.0)
        finally:
            flink_service.start_taskmanager(busy)
        live.producer.join(300)
        assert not live.producer.is_alive()
        _converges(cassandra, keyspace, _views(), live.stream.events, run)
        assert run.interrupt() == 0, run.text()[-4000:]
    finally:
        run.close()


def _busy_taskmanager(rest: FlinkRest, job_id: str) -> int:
    """The harness index of a TaskManager running tasks of the job (Flink may put all of a
    job's slots on one TaskManager, and killing an idle one would test nothing)."""
    count = flink_service.taskmanager_count()
    ports = {flink_service.taskmanager(i).client_port: i for i in range(count)}
    for vertex in rest._call("GET", f"/jobs/{job_id}")["vertices"]:
        for port in _taskmanager_ports(rest, job_id, vertex["id"]):
            if port in ports:
                return ports[port]
    raise AssertionError(f"no TaskManager of the harness runs job {job_id}")


COUNTERS = EXAMPLES / "post_engagement.json"
#: Checkpoints of the running-counters kill test: far enough apart that the test can kill a
#: TaskManager after milestones were sent past the newest checkpoint and before the next starts.
KILL_CHECKPOINT_S = 10
#: post_engagement's thresholds and more below them: every new key fires at once, so
#: milestones fire all through the stream, some of them after the checkpoint a kill restores.
DENSE_MILESTONES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10000, 100000, 1000000]


def test_a_killed_taskmanager_loses_no_running_count_and_no_milestone(
    tmp_path: Path,
    flink: FlinkConnection,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    keyspace: str,
    rest: FlinkRest,
) -> None:
    """The running counters of ``post_engagement`` (a global window, ``emit.eager`` below 10,
    ``state_ttl``, milestones at 1, 2, 5, 10, 20 ... 1,000,000), milestones to
    ``--milestone-topic``.

    A TaskManager running the job is killed (-9) once rows are stored and a milestone was sent
    after the newest checkpoint, with half the input still unwritten; the job restores that
    checkpoint and reads the rest. Then
    the table equals the oracle, and the topic holds what docs/flink.md promises: every
    milestone the oracle's totals reach and no other, an id more than once only as a replay
    (at most once more per restore), each copy keyed by its id; of the events sent before the
    kill, those sent before the restored checkpoint once, those sent after it again.
    """
    counters = tmp_path / "post_engagement.json"
    body = orjson.loads(COUNTERS.read_bytes())
    body["milestones"] = [{"column": "events", "at": DENSE_MILESTONES}]
    counters.write_bytes(orjson.dumps(body))
    (view,) = _views([counters])
    milestone_topic = _name("liveagg-flink-milestones-")
    _create_topics(kafka, 1, milestone_topic)
    gate = Gate()
    live = _live(
        tmp_path,
        flink,
        kafka,
        cassandra,
        keyspace,
        seed=25,
        extra=["--milestone-topic", milestone_topic],
        views=[counters],
        gate=gate,
        checkpoint_interval_s=KILL_CHECKPOINT_S,
    )
    config = kafka.client_config()
    expected = expected_milestones(view, expected_rows(view, live.stream.events))
    assert {e["threshold"] for e in expected} >= {1, 10, 100, 1000}, "few milestones to lose"
    run = Run(live.command, tmp_path / "liveagg.log", cassandra.env())
    try:
        job_id = run.flink_job_id()
        # The stream starts once the whole job runs (a checkpoint completes only then): its
        # first half lasts 25 s, two checkpoints' time in which to kill.
        _wait_checkpoints(rest, job_id, 1)
        live.producer.start()

        def sent_past_a_checkpoint() -> dict[str, Any]:
            """The newest checkpoint, once rows are stored and a milestone was sent after
            every task acknowledged it, while the next cannot have started (2 s to spare):
            the kill that follows makes the job restore it and fire that milestone again."""
            assert _stored(cassandra, keyspace, view)
            newest = _checkpoints(rest, job_id)["latest"]["completed"]
            assert newest is not None
            sent = read_to(config, milestone_topic, end_offsets(config, milestone_topic))
            assert any(m.timestamp()[1] > newest["latest_ack_timestamp"] for m in sent)
            next_due_ms = newest["trigger_timestamp"] + (KILL_CHECKPOINT_S - 2) * 1000
            assert time.time() * 1000 < next_due_ms, "too close to the next checkpoint"
            return newest

        newest = _eventually(sent_past_a_checkpoint, 120.0, every_s=0.3)
        assert rest.state(job_id) == "RUNNING"
        busy = _busy_taskmanager(rest, job_id)
        flink_service.kill_taskmanager(busy)
        killed_ms = time.time() * 1000
        # Mid-stream: the job cannot have read what is not written yet.
        assert sum(end_offsets(config, live.stream.topic).values()) < len(live.stream.lines)
        sent_before = end_offsets(config, milestone_topic)[0]
        gate.open()
        try:
            _eventually(lambda: _assert_restored(rest, job_id), 180.0, every_s=1.0)
            restored = _eventually(lambda: _restored_checkpoint(rest, job_id), 60.0, every_s=1.0)
        finally:
            flink_service.start_taskmanager(busy)
        assert restored["id"] == newest["id"], (restored, newest)
        assert restored["latest_ack_timestamp"] < killed_ms, restored
        live.producer.join(300)
        assert not live.producer.is_alive()
        _converges(cassandra, keyspace, [view], live.stream.events, run)

        def every_milestone() -> list[Any]:
            messages = read_to(config, milestone_topic, end_offsets(config, milestone_topic))
            ids = {orjson.loads(m.value())["milestone_id"] for m in messages}
            assert ids == {e["milestone_id"] for e in expected}
            return messages

        messages = _eventually(every_milestone, 120.0, every_s=2.0)
        restores = _checkpoints(rest, job_id)["counts"]["restored"]
        assert restores >= 1
        _assert_replays_only(messages, expected, restores)
        replayed = _assert_replayed_after(restored, messages, sent_before)
        assert replayed > 0  # the kill came after a milestone was sent past the checkpoint
        print(
            f"{len(messages)} milestone messages for {len(expected)} ids; {sent_before} sent "
            f"before the kill, {replayed} of them after the checkpoint restored; {restores} "
            "restores"
        )
        assert run.interrupt() == 0, run.text()[-4000:]
    finally:
        if not gate.is_open:
            gate.open(go=False)
        run.close()


def _restored_checkpoint(rest: FlinkRest, job_id: str) -> dict[str, Any]:
    """The checkpoint the job restored, from the REST API's recent checkpoints (read soon
    after the restore, while they still hold it)."""
    stats = _checkpoints(rest, job_id)
    restored = stats["latest"]["restored"]["id"]
    found = [c for c in stats["history"] if c["id"] == restored]
    assert found, stats
    return found[0]


def _assert_replayed_after(
    restored: Mapping[str, Any], messages: Sequence[Any], sent_before: int
) -> int:
    """Of the milestones sent before the kill (offsets below ``sent_before``), those sent
    before the restored checkpoint was triggered are on the topic once, those sent after
    every task acknowledged it more than once: the job fired them again. Returns how many
    were sent after it."""
    count = Counter(orjson.loads(m.value())["milestone_id"] for m in messages)
    after = 0
    for message in messages:
        if message.offset() >= sent_before:
            continue
        kind, sent_ms = message.timestamp()
        assert kind == ck.TIMESTAMP_CREATE_TIME, kind
        copies = count[orjson.loads(message.value())["milestone_id"]]
        if sent_ms < restored["trigger_timestamp"]:
            assert copies == 1, (sent_ms, restored, copies)
        elif sent_ms > restored["latest_ack_timestamp"]:
            assert copies >= 2, (sent_ms, restored, copies)
            after += 1
    return after


def _assert_replays_only(messages: Sequence[Any], expected: Sequence[dict], restores: int) -> None:
    """The milestone topic after ``restores`` restores, as docs/flink.md describes it: each
    expected event, keyed by its id; an id more than once only as a replay of a restore (at
    most ``1 + restores`` copies), every copy the same event but for ``value``, the value of
    the pane that fired it: at least the threshold, at most the final total."""
    copies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        event = orjson.loads(message.value())
        assert message.key() == event["milestone_id"].encode(), event
        copies[event["milestone_id"]].append(event)
    assert_milestones_match([c[0] for c in copies.values()], expected, values=False)
    for want in expected:
        sent = copies[want["milestone_id"]]
        assert len(sent) <= 1 + restores, (restores, sent)
        for event in sent:
            assert {**event, "value": None} == {**want, "value": None}, (event, want)
            assert want["threshold"] <= event["value"] <= want["value"], (event, want)


@pytest.mark.parametrize("how", ["checkpoint", "savepoint"])
def test_a_run_resumed_after_the_cluster_stops_ends_at_the_oracle(
    tmp_path: Path,
    flink: FlinkConnection,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    keyspace: str,
    rest: FlinkRest,
    how: str,
) -> None:
    """checkpoint: the cluster dies mid-stream; savepoint: Ctrl-C with --savepoint-on-stop.

    Either way the cluster is then stopped and started again, and a new run restores.
    """
    live = _live(
        tmp_path, flink, kafka, cassandra, keyspace, seed=23, extra=["--savepoint-on-stop"]
    )
    first = Run(live.command, tmp_path / "first.log", cassandra.env())
    logs = ServiceLogs()
    try:
        job_id = first.flink_job_id()
        live.producer.start()
        # No wait for a report: liveagg knows the job's checkpoint folder from its submission
        # and reads the newest complete checkpoint from it when the cluster is gone.
        _wait_checkpoints(rest, job_id, 3)
        if how == "savepoint":
            assert first.interrupt() == 0, first.text()[-4000:]
            restore = re.search(r"savepoint: (\S+)", first.text()).group(1)
            logs.assert_no_error()  # a clean stop
            flink_service.stop_cluster()
        else:
            flink_service.stop_cluster()  # JobManager and TaskManagers, mid-stream
            restore = _lost_hint(first, flink, job_id)
    finally:
        first.close()
        flink_service.start_cluster()
    _resume(live, restore, tmp_path, cassandra, keyspace, rest)


def _lost_hint(run: Run, flink: FlinkConnection, job_id: str) -> str:
    """The run ends on its own with one line, no traceback: the job is lost, and the newest
    checkpoint of its folder (the one on disk) is the one to resume from."""
    assert run.proc.wait(180) == JOB_LOST_EXIT, run.text()[-4000:]
    text = run.text()
    assert "Traceback" not in text, text[-4000:]
    hints = [line for line in text.splitlines() if "--flink-restore" in line]
    assert len(hints) == 1, text[-4000:]
    assert hints[0].startswith(f"Flink job {job_id} lost: "), hints[0]
    restore = hints[0].split("--flink-restore ", 1)[1]
    assert restore == resolve_restore(str(flink.checkpoint_dir / job_id)), restore
    return restore


@pytest.mark.parametrize("when", ["mid-stream", "first seconds"])
def test_the_service_stopped_as_its_harness_stops_it_names_the_checkpoint_to_resume_from(
    tmp_path: Path,
    flink: FlinkConnection,
    kafka: KafkaConnection,
    cassandra: CassandraConnection,
    keyspace: str,
    rest: FlinkRest,
    when: str,
) -> None:
    """``python -m integration.services stop flink`` mid-stream, or right after the job's first
    checkpoint (before any periodic report): the worker pool and the job server go first,
    then the TaskManagers and the JobManager. liveagg ends with one line and the exact
    ``--flink-restore``; the run resumed from it ends at the oracle, and its ``live_keys``
    (restored keys adopted, not only counted down) come back to 0 when every window closed.
    """
    live = _live(tmp_path, flink, kafka, cassandra, keyspace, seed=24)
    if when == "first seconds":  # liveagg's default: no report before the stop
        at = live.command.index("--report-every-s")
        live.command[at : at + 2] = []
    first = Run(live.command, tmp_path / "first.log", cassandra.env())
    try:
        job_id = first.flink_job_id()
        live.producer.start()
        _wait_checkpoints(rest, job_id, 3 if when == "mid-stream" else 1)
        flink_service.stop_service()
        restore = _lost_hint(first, flink, job_id)
    finally:
        first.close()
        flink_service.start_cluster()

    def no_live_keys(job_id: str) -> None:  # the data's windows all closed long ago
        def check() -> None:
            metrics = rest.metrics(job_id)
            for view in _views():
                assert metrics.get(f"live_keys/{view.name}") == 0, metrics

        _eventually(check, 120.0)

    _resume(live, restore, tmp_path, cassandra, keyspace, rest, then=no_live_keys)


def _assert_restored(rest: FlinkRest, job_id: str) -> None:
    latest = _checkpoints(rest, job_id)["latest"]  # a restoring job's JobManager may be starting
    assert latest.get("restored"), latest


def test_level1_on_flink_then_rekey_equals_the_oracle(
    tmp_path: Path, flink: FlinkConnection, kafka: KafkaConnection
) -> None:
    """Two levels, level 1 streaming on the cluster: partials per Kafka partition and key,
    as EARLY, ON_TIME and LATE panes; ``liveagg rekey`` merges the latest of each."""
    from tests.integration.test_two_level import ROLLUP

    rollup = dict(
        ROLLUP,
        aggregation_info=[a for a in ROLLUP["aggregation_info"] if a["aggregation"] != "custom"],
    )
    rollup_file = tmp_path / "org_rollup.json"
    rollup_file.write_text(orjson.dumps(rollup).decode())
    view_files = [EXAMPLES / "network_telemetry.json", rollup_file]
    stream = _stream(kafka, tmp_path, 5_000, seed=33)
    produce(kafka.client_config(), stream.topic, stream.lines)
    partials = _name("liveagg-flink-partials-")
    level1_dead = _name("liveagg-flink-level1-dead-")
    _create_topics(kafka, PARTITIONS, partials)
    _create_topics(kafka, 1, level1_dead)
    run = Run(
        [
            *("run", "--views", *map(str, view_files), "--kafka-topic", stream.topic),
            *("--kafka-bootstrap", kafka.bootstrap_servers, "--kafka-start", "earliest"),
            *("--unbounded", "--runner", "flink", "--flink-master", flink.master),
            *("--flink-job-endpoint", flink.job_endpoint),
            *("--flink-worker-pool", flink.worker_pool, "--parallelism", "2"),
            *("--checkpoint-interval-s", "2", "--intermediate-topic", partials),
            *("--dead-letter-topic", level1_dead),
        ],
        tmp_path / "level1.log",
    )
    views = _views(view_files)

    def merged() -> None:
        assert run.proc.poll() is None, f"liveagg exited:\n{run.text()[-4000:]}"
        out = tmp_path / _name("level2-")
        liveagg(
            *("rekey", "--views", *map(str, view_files)),
            *("--intermediate-topic", partials, "--kafka-bootstrap", kafka.bootstrap_servers),
            *("--kafka-start", "earliest", "--kafka-group-id", _name("level2-")),
            *("--output", str(out)),
        )
        for view in (v.final() for v in views):
            rows = rows_in(out / view.name)
            assert_rows_match(rows, expected_rows(view, stream.events), view)

    try:
        run.flink_job_id()
        _eventually(merged, CONVERGE_TIMEOUT_S, every_s=10.0)
        assert run.interrupt() == 0, run.text()[-4000:]
    finally:
        run.close()
