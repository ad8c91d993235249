"""liveagg on the local Apache Flink cluster (parallelism 2): Kafka in, Cassandra out.

Two runs of ``liveagg run --runner flink --unbounded``, each on a fresh topic:

* **sustained**: the events are put on the topic first (a backlog), then the job reads them
  from the earliest offset. Throughput is events over the time from the Flink job's RUNNING
  to the last row write (Cassandra's ``updated_at``). One extra message per partition, after
  the backlog, carries an event time 2 h past the newest event and a non-numeric ``bytes``:
  it moves every partition's watermark past the last windows so they close at once (instead
  of after the source's 10 s idle timeout), and every view dead-letters it, so it counts
  nowhere;
* **paced**: events go out live at a fixed rate, their event time the wall clock at production
  (dimensions from the dataset, up to ``flink_disorder_s`` of backward jitter). The latency of
  a window is ``WRITETIME`` of its row minus the window end. Only ``ON_TIME`` rows are used:
  a row rewritten by a ``LATE`` pane carries the late pane's write time (counted, not used).

CPU and memory are those of the Flink cluster's processes (JobManager, TaskManagers, Beam job
server, worker pool and its SDK workers) and of the ``liveagg run`` launcher, sampled every
second. Kafka and Cassandra are the source and the sink, not the system: not counted, but
their CPU during the backlog is reported beside (``service_cpu_s``). The backlog's rows are
counted with a full-table query per view, which costs Cassandra CPU that the job needs on a
small machine, so it runs only once the job has committed the topic's end offsets (every 30 s
otherwise).

``Context.options``: ``flink_events`` (cap on the backlog), ``flink_rate`` (paced rate; default
half the sustained throughput), ``flink_paced_s`` (180; 0 skips the paced run),
``flink_warmup_s`` (20: windows ending earlier are not measured), ``flink_disorder_s`` (0.5),
``flink_checkpoint_s`` (liveagg's default), ``flink_timeout_s`` (3600), ``flink_settle_s``
(0: wait for every request until the timeout; else stop once the read is done and the
tables have not changed for this long, and report ``missing_requests``), ``flink_args``
(more arguments for ``liveagg run``, e.g. Beam options) and ``flink_pipeline``: ``liveagg``
(the default) or ``beam-gbk``, the same run with Beam's windowed ``GroupByKey`` in place of
liveagg's window operator (:mod:`benchmarks.systems.beam_gbk_partials`).

    .venv/bin/python -m benchmarks.systems.liveagg_flink --events 200000

``--idle-s 120`` measures only what a job costs with nothing to read (:func:`idle`).
``--taskmanagers 1,2,1,2`` makes one run per count, each on a cluster restarted with that many
TaskManagers (``LIVEAGG_FLINK_TASKMANAGERS``, 2 slots each), and ends with a table of them
(:func:`on_taskmanagers`): scale-out measured on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from cassandra import InvalidRequest
from cassandra.cluster import Cluster, Session
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks import generate
from benchmarks.harness import PYTHON, ROOT, Result, process_cpu_s, process_rss_mb
from benchmarks.systems import VIEWS, Context
from benchmarks.systems.kafka_topic import create_topic, lines, produce
from integration import services
from integration.services import flink as flink_service
from liveagg.loader import load_views

SYSTEM = "liveagg-flink"
KEYSPACE = f"bench_flink_{os.getpid()}"  # per process: runs may overlap on shared services
PARTITIONS = 4
PARALLELISM = 2
#: ``flink_pipeline`` -> the module that launches the job (``liveagg run``'s command line).
PIPELINES = {"liveagg": "liveagg.cli", "beam-gbk": "benchmarks.systems.beam_gbk_partials"}


class Sampler:
    """CPU and peak RSS of the cluster's processes and a launcher, with their descendants.

    Sampled every second because SDK workers come and go with jobs: a process's CPU is its
    last sample minus its first (zero for processes born while sampling). The running total
    is kept per sample, so CPU can be read up to the moment the last row was written rather
    than up to when a poll noticed it.
    """

    def __init__(self, launcher: int) -> None:
        self._roots = [r.pid for p in flink_service.Flink.parts() if (r := p.live_record())]
        self._roots.append(launcher)
        self._labels: dict[int, str] = {}
        self._first: dict[int, float] = {pid: process_cpu_s([pid]) for pid in self._pids()}
        self._last = dict(self._first)
        self.peak_rss_mb = 0.0
        self._series: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _pids(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(stat.parent.name))
        found, todo = [], list(self._roots)
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def _sample(self) -> None:
        pids = self._pids()
        for pid in pids:  # max: a process that exits meanwhile reads as 0
            self._last[pid] = max(self._last.get(pid, 0.0), process_cpu_s([pid]))
            if pid not in self._labels:
                self._labels[pid] = _label(pid)
        self.peak_rss_mb = max(self.peak_rss_mb, process_rss_mb(pids))
        used = sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())
        self._series.append((time.time(), used))

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def by_process(self) -> dict[str, float]:
        """CPU seconds per kind of process (:func:`_label`), to see which part of the
        cluster the time goes to."""
        out: dict[str, float] = {}
        for pid, cpu in self._last.items():
            label = self._labels.get(pid, "other")
            out[label] = round(out.get(label, 0.0) + cpu - self._first.get(pid, 0.0), 1)
        return dict(sorted(out.items(), key=lambda item: -item[1]))

    def processes(self, label: str) -> int:
        """How many processes of a kind (:func:`_label`) ran while sampling, e.g. SDK workers,
        whose number depends on the TaskManagers and ``--sdk_worker_parallelism``."""
        return sum(1 for seen in self._labels.values() if seen == label)

    def cpu_s(self, until: float) -> float:
        """CPU seconds from the start to the first sample at or after ``until`` (epoch s)."""
        return next((used for t, used in self._series if t >= until), self._series[-1][1])


def _label(pid: int) -> str:
    """A process's part of the cluster, from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "other"
    text = " ".join(argv)
    for needle, label in (
        ("TaskManagerRunner", "flink taskmanager"),
        ("StandaloneSessionClusterEntrypoint", "flink jobmanager"),
        ("--job-port", "beam job server"),
        ("SdkHarness", "python sdk worker"),  # Beam's own worker pool's workers
        ("_beam_worker_pool --worker", "python sdk worker"),  # the harness pool's
        ("_beam_worker_pool", "python worker pool"),
        ("liveagg", "liveagg launcher"),
        ("beam_gbk_partials", "liveagg launcher"),
    ):
        if needle in text:
            return label
    return Path(argv[0]).name or "other"


def _rest(flink: Any, path: str) -> Any:
    with urllib.request.urlopen(flink.rest_url + path, timeout=10) as response:
        return json.loads(response.read())


class Job:
    """One ``liveagg run --runner flink`` process and the Flink job it submitted."""

    def __init__(self, ctx: Context, topic: str, log: Path) -> None:
        self.kafka = services.connection("kafka")
        self.flink = services.connection("flink")
        cassandra = services.connection("cassandra")
        sink = json.dumps({"type": "cassandra", "keyspace": KEYSPACE})
        dead_letters = f"{topic}-dead-letters"  # the clock messages of _backlog go there
        create_topic(self.kafka.bootstrap_servers, dead_letters, 1)
        checkpoint_s = ctx.options.get("flink_checkpoint_s")
        args = [
            *("run", "--views", str(ctx.views), "--runner", "flink"),
            *("--parallelism", str(PARALLELISM)),
            *(("--checkpoint-interval-s", str(checkpoint_s)) if checkpoint_s else ()),
            *("--kafka-topic", topic, "--kafka-bootstrap", self.kafka.bootstrap_servers),
            *("--kafka-start", "earliest", "--unbounded", "--no-view-sinks", "--sink", sink),
            *("--dead-letter-topic", dead_letters),
            # While a backlog is read, aligned checkpoint barriers queue behind it for minutes:
            # Flink's default 10 min timeout failed the job (and restarted it) at 200k events.
            "--checkpoint_timeout_millis=3600000",
            *shlex.split(ctx.options.get("flink_args", "")),  # e.g. --sdk_worker_parallelism=2
        ]
        env = {**os.environ, **self.flink.env(), **cassandra.env()}
        launcher = PIPELINES[ctx.options.get("flink_pipeline", "liveagg")]
        self.log = log
        self._out = log.open("wb")
        self.started = time.time()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", launcher, *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
        self.job_id = ""

    def wait_running(self, timeout_s: float = 300.0) -> float:
        """Wait until every task of the job runs; returns when the job turned RUNNING (epoch s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"liveagg exited early:\n{self.log.read_text()[-4000:]}")
            if not self.job_id:
                match = re.search(r"Flink job ([0-9a-f]{32})", self.log.read_text())
                self.job_id = match.group(1) if match else ""
            if self.job_id:
                job = _rest(self.flink, f"/jobs/{self.job_id}")
                if job["state"] == "RUNNING" and all(
                    v["status"] == "RUNNING" for v in job["vertices"]
                ):
                    return job["timestamps"]["RUNNING"] / 1000
            time.sleep(0.5)
        raise TimeoutError(f"Flink job not running after {timeout_s:.0f} s: {self.log}")

    def stop(self) -> str:
        """Ctrl-C, which cancels the Flink job; the job's final state (CANCELED expected)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(180)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._out.close()
        if not self.job_id:
            return "not submitted"
        # /status, not /jobs/<id>: Flink answers the latter from a cache of the job's graph
        # kept 3 s, which may still say RUNNING just after the cancel.
        state = _rest(self.flink, f"/jobs/{self.job_id}/status")["status"]
        # Checkpoints are retained on cancellation (for --flink-restore); a benchmark needs none.
        shutil.rmtree(self.flink.checkpoint_dir / self.job_id, ignore_errors=True)
        return state


def _service_cpu_s() -> dict[str, float]:
    """CPU seconds so far of the Kafka broker and the Cassandra node.

    Kept apart from the cluster's ``cpu_s``, but on a small machine they share its cores with
    it: their figures say how much of the machine the run had.
    """
    out = {}
    for name in ("kafka", "cassandra"):
        record = services.get(name).live_record()
        if record is not None:
            out[name] = process_cpu_s([record.pid])
    return out


def _session() -> tuple[Cluster, Session]:
    kwargs = services.connection("cassandra").cluster_kwargs()
    for profile in kwargs["execution_profiles"].values():
        profile.request_timeout = 120  # full-table aggregates on a busy node
    cluster = Cluster(**kwargs)
    return cluster, cluster.connect()


def _totals(session: Session, view: str) -> tuple[int, int, datetime | None, datetime | None]:
    """Requests summed over the view's table, its rows, and its first and last write."""
    try:
        row = session.execute(
            f"SELECT sum(requests), count(*), min(updated_at), max(updated_at) "
            f"FROM {KEYSPACE}.{view}"
        ).one()
    except InvalidRequest:  # the launcher has not created the table yet
        return 0, 0, None, None
    return row[0] or 0, row[1], row[2], row[3]


def _read_to_end(bootstrap: str, topic: str) -> bool:
    """Whether the job's consumer group has committed every partition's end offset."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"liveagg-{topic}"})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = consumer.committed(parts, timeout=10)
        ends = [consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts]
    except KafkaException:
        return False
    finally:
        consumer.close()
    return all(c.offset >= end for c, end in zip(committed, ends, strict=True))


def _epoch(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()


def _drop_topics(topics: list[str]) -> None:
    kafka = services.connection("kafka")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for future in admin.delete_topics(topics).values():
        with contextlib.suppress(KafkaException):  # never created: the run failed before
            future.result()


def _drop_keyspace() -> None:
    cluster, session = _session()
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    finally:
        cluster.shutdown()


def _backlog(dataset: Path, events: int) -> Iterator[bytes]:
    """The first ``events`` lines of ``dataset``, then one clock message per partition."""
    newest = ""
    for line in itertools.islice(lines(dataset), events):
        newest = max(newest, line[7:31].decode())  # '{"ts":"' then 24 fixed-width chars
        yield line
    clock = datetime.fromisoformat(newest) + timedelta(hours=2)
    message = json.dumps({"ts": _stamp(clock.timestamp()), "bytes": "clock"}).encode()
    yield from [message] * PARTITIONS  # round-robin: the last message of every partition


def sustained(ctx: Context, topic: str, events: int) -> dict[str, Any]:
    """Backlog run: throughput, CPU, memory and rows per view."""
    bootstrap = services.connection("kafka").bootstrap_servers
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, _backlog(ctx.dataset, events), partitions=PARTITIONS)
    names = [v.name for v in load_views([str(ctx.views)])]
    job = Job(ctx, topic, ctx.scratch(SYSTEM) / f"{topic}.log")
    sampler = Sampler(job.proc.pid)
    services_before = _service_cpu_s()
    cluster, session = _session()
    try:
        running = job.wait_running()
        deadline = time.monotonic() + float(ctx.options.get("flink_timeout_s", 3600))
        counted = time.monotonic()
        settle_s = float(ctx.options.get("flink_settle_s", 0))
        seen: dict[str, Any] = {}
        unchanged = time.monotonic()
        while True:
            time.sleep(2.0)
            # A full-table aggregate per view: only once the backlog is read (or now and
            # then, should offsets not be committed), not to take Cassandra's CPU from the job.
            if not _read_to_end(bootstrap, topic) and time.monotonic() - counted < 30.0:
                continue
            counted = time.monotonic()
            totals = {name: _totals(session, name) for name in names}
            if all(t[0] == events for t in totals.values()):
                break
            if totals != seen:
                seen, unchanged = totals, time.monotonic()
            elif settle_s and time.monotonic() - unchanged >= settle_s:
                break  # rows were lost: measured as they are, the loss reported
            if time.monotonic() > deadline or job.proc.poll() is not None:
                done = {n: t[0] for n, t in totals.items()}
                raise TimeoutError(f"requests per view {done}, expected {events}: {job.log}")
    finally:
        cluster.shutdown()
        sampler.stop()
        service_cpu = {n: cpu - services_before[n] for n, cpu in _service_cpu_s().items()}
        state = job.stop()
    first = min(_epoch(t[2]) for t in totals.values())
    last = max(_epoch(t[3]) for t in totals.values())
    return {
        "wall_s": last - running,
        "cpu_s": sampler.cpu_s(last),
        "cpu_s_by_process": sampler.by_process(),
        "sdk_worker_processes": sampler.processes("python sdk worker"),
        # Until the poll that saw the last row, with the poll's own queries: an upper bound.
        "service_cpu_s": {name: round(cpu, 1) for name, cpu in service_cpu.items()},
        "peak_rss_mb": sampler.peak_rss_mb,
        "rows": {name: t[1] for name, t in totals.items()},
        "missing_requests": {n: events - t[0] for n, t in totals.items() if t[0] != events},
        "submit_s": round(running - job.started, 1),
        "first_row_s": round(first - running, 1),
        "job_state": state,
    }


def idle(ctx: Context, topic: str, seconds: float) -> dict[str, Any]:
    """What a job costs with nothing to read: CPU seconds per second of the cluster's
    processes (and, apart, the ``liveagg run`` launcher that supervises it), over ``seconds``
    once the job on an empty topic has run for ``flink_warmup_s``."""
    create_topic(services.connection("kafka").bootstrap_servers, topic, PARTITIONS)
    job = Job(ctx, topic, ctx.scratch(SYSTEM) / f"{topic}.log")
    try:
        job.wait_running()
        time.sleep(float(ctx.options.get("flink_warmup_s", 20)))
        sizes = [_checkpoint_size(job)]
        sampler = Sampler(job.proc.pid)
        started = time.monotonic()
        time.sleep(seconds)
        sampler.stop()
        wall = time.monotonic() - started
        sizes.append(_checkpoint_size(job))
    finally:
        state = job.stop()
    by_process = {name: round(cpu / wall, 3) for name, cpu in sampler.by_process().items()}
    launcher = by_process.pop("liveagg launcher", 0.0)
    return {
        "idle_s": round(wall),
        "cluster_cpu_per_s": round(sum(by_process.values()), 3),
        "cluster_cpu_per_s_by_process": by_process,
        "launcher_cpu_per_s": launcher,
        "checkpoint_bytes_first_last": sizes,
        "job_state": state,
    }


def _checkpoint_size(job: Job) -> int | None:
    """The size of the job's newest completed checkpoint (bytes of its state)."""
    latest = _rest(job.flink, f"/jobs/{job.job_id}/checkpoints").get("latest") or {}
    return (latest.get("completed") or {}).get("state_size")


def _stamp(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")[:23] + "Z"


def _live(dataset: Path, rate: float, seconds: float, disorder_s: float) -> Iterator[bytes]:
    """Dataset lines at ``rate`` per second for ``seconds``, event time = now (minus jitter)."""
    templates = list(itertools.islice(lines(dataset), int(rate * seconds)))
    started = time.monotonic()
    for sent, line in enumerate(itertools.cycle(templates)):
        if sent % 100 == 0:
            if time.monotonic() - started >= seconds:
                return
            time.sleep(max(0.0, sent / rate - (time.monotonic() - started)))
        yield line[:7] + _stamp(time.time() - random.uniform(0, disorder_s)).encode() + line[31:]


def paced(ctx: Context, topic: str, rate: float) -> dict[str, Any]:
    """Live run: latency of windows that ended while events were produced at ``rate``."""
    seconds = float(ctx.options.get("flink_paced_s", 180))
    warmup_s = float(ctx.options.get("flink_warmup_s", 20))
    disorder_s = float(ctx.options.get("flink_disorder_s", 0.5))
    names = [v.name for v in load_views([str(ctx.views)])]
    bootstrap = services.connection("kafka").bootstrap_servers
    create_topic(bootstrap, topic, PARTITIONS)
    job = Job(ctx, topic, ctx.scratch(SYSTEM) / f"{topic}.log")
    try:
        job.wait_running()
        time.sleep(5.0)  # the SDK workers connect once tasks run
        began = time.time()
        live = _live(ctx.dataset, rate, seconds, disorder_s)
        sent = produce(bootstrap, topic, live, partitions=PARTITIONS)
        ended = time.time()
        time.sleep(20.0)  # the last windows' panes reach Cassandra
        cluster, session = _session()
        try:
            query = "SELECT window_end, pane_timing, WRITETIME(requests) FROM {}.{}"
            stored = {name: list(session.execute(query.format(KEYSPACE, name))) for name in names}
        finally:
            cluster.shutdown()
    finally:
        state = job.stop()
    latencies, per_view, late, ends = [], {}, 0, set()
    for name, rows in stored.items():
        ended_in_run = [r for r in rows if began + warmup_s < _epoch(r[0]) <= ended - 1.0]
        on_time = [r[2] / 1e6 - _epoch(r[0]) for r in ended_in_run if r[1] == "ON_TIME"]
        late += len(ended_in_run) - len(on_time)
        per_view[name] = len(on_time)
        latencies += on_time
        ends.update(_epoch(r[0]) for r in ended_in_run)
    if not latencies:
        raise RuntimeError(f"no window ended during the paced run: {job.log}")
    p50, p99 = np.percentile(latencies, [50, 99])
    return {
        "latency_s": {"p50": round(p50, 3), "p99": round(p99, 3), "max": round(max(latencies), 3)},
        "latency_windows": per_view,
        # The windows of a view end together: the percentiles are only as varied as the
        # distinct window ends, which a short paced run has few of.
        "latency_window_ends": len(ends),
        "latency_windows_rewritten": late,
        "paced_rate": round(sent / (ended - began)),
        "paced_rate_target": round(rate),
        "paced_s": round(ended - began, 1),
        "paced_job_state": state,
    }


def supports(views: Path) -> str | None:
    """Why this benchmark cannot run ``views`` (``None`` when it can): it knows a view is
    complete when the sum of its ``requests`` column equals the events, which grouping sets
    and granularities multiply."""
    for view in load_views([str(views)]):
        if view.grouping_sets is not None or len(view.window.sizes) != 1:
            return f"{view.name}: grouping sets or granularities multiply its requests"
        if not any(a.kind == "count" and a.output == "requests" for a in view.aggregations):
            return f"{view.name}: no requests count to tell when its rows are complete"
    return None


def run(ctx: Context) -> Result:
    """The sustained run's figures, with the paced run's latency in ``extra``."""
    for name in ("kafka", "cassandra", "flink"):
        services.ensure(name)
    events = min(ctx.events, int(ctx.options.get("flink_events", ctx.events)))
    topics = [f"bench-flink-{os.getpid()}", f"bench-flink-paced-{os.getpid()}"]
    try:
        first = sustained(ctx, topics[0], events)
        _drop_keyspace()
        rate = float(ctx.options.get("flink_rate") or events / first["wall_s"] / 2)
        latency = (
            paced(ctx, topics[1], rate) if float(ctx.options.get("flink_paced_s", 180)) else {}
        )
    finally:
        _drop_topics(topics)
        _drop_keyspace()
    pipeline = ctx.options.get("flink_pipeline", "liveagg")
    load = os.getloadavg()  # the machine may be shared: how busy it was, beside the figures
    return Result(
        system=SYSTEM if pipeline == "liveagg" else f"{SYSTEM}-{pipeline}",
        events=events,
        wall_s=first.pop("wall_s"),
        cpu_s=first.pop("cpu_s"),
        peak_rss_mb=first.pop("peak_rss_mb"),
        rows=first.pop("rows"),
        extra={
            **first,
            **latency,
            "parallelism": PARALLELISM,
            "taskmanagers": flink_service.taskmanager_count(),
            "load_avg_1_5_15": [round(x, 2) for x in load],
            "not_counted": "Kafka and Cassandra (source and sink) are not in cpu_s or "
            "peak_rss_mb; service_cpu_s has their CPU during the backlog",
        },
    )


def on_taskmanagers(ctx: Context, count: int) -> Result:
    """:func:`run` on a Flink cluster restarted with ``count`` TaskManagers.

    Restarted whatever ran before (the harness reuses a healthy cluster, whatever its size), so
    every count starts from fresh JVMs and the runs compare alike. The worker pool restarts
    too, from this interpreter, so its SDK workers run this checkout's code.
    """
    os.environ["LIVEAGG_FLINK_TASKMANAGERS"] = str(count)
    flink_service.stop_service()
    return run(ctx)


def scale_table(results: list[Result]) -> str:
    """One Markdown row per run, the columns of docs/performance.md's Flink tables."""
    lines = [
        "| TaskManagers (slots) | SDK workers | wall s | events/s | cluster CPU-s | events/CPU-s "
        "| TaskManagers CPU-s | SDK workers CPU-s | JobManager + job server CPU-s "
        "| Cassandra / Kafka CPU-s | load (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        by = r.extra["cpu_s_by_process"]
        tms = r.extra["taskmanagers"]
        control = by.get("flink jobmanager", 0.0) + by.get("beam job server", 0.0)
        svc = r.extra["service_cpu_s"]
        lines.append(
            f"| {tms} ({tms * flink_service.SLOTS_PER_TASKMANAGER}) "
            f"| {r.extra['sdk_worker_processes']} | {r.wall_s:.1f} | {r.events_per_s:,.0f} "
            f"| {r.cpu_s:.1f} | {r.events_per_cpu_s:,.0f} | {by.get('flink taskmanager', 0.0)} "
            f"| {by.get('python sdk worker', 0.0)} | {control:.1f} "
            f"| {svc.get('cassandra', 0.0)} / {svc.get('kafka', 0.0)} "
            f"| {r.extra['load_avg_1_5_15'][0]} |"
        )
    return "\n".join(lines)


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--taskmanagers {text!r}: give counts such as 1,2,1,2") from None
    if any(not 1 <= c <= flink_service.MAX_TASKMANAGERS for c in counts):
        raise SystemExit(f"--taskmanagers: 1 to {flink_service.MAX_TASKMANAGERS} each")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, help="paced rate (default: half the throughput)")
    parser.add_argument("--paced-s", type=float, default=180.0, help="0 skips the paced run")
    parser.add_argument("--flink-args", default="", help="more arguments for liveagg run")
    parser.add_argument("--settle-s", type=float, default=0.0, help="see flink_settle_s")
    parser.add_argument(
        "--pipeline", choices=sorted(PIPELINES), default="liveagg", help="see flink_pipeline"
    )
    parser.add_argument(
        "--idle-s", type=float, default=0.0, help="only measure an idle job for this long"
    )
    parser.add_argument(
        "--taskmanagers",
        default="",
        help="e.g. 1,2,1,2: one run per count, on a cluster restarted with that many",
    )
    parser.add_argument(
        "--views",
        type=Path,
        default=VIEWS,
        help="a folder of views with a 'requests' count each (default: the basic views)",
    )
    args = parser.parse_args(argv)
    counts = _counts(args.taskmanagers)  # before anything starts: a typo fails at once
    refused = supports(args.views)
    if refused:
        parser.error(f"--views {args.views}: {refused}")
    logging.getLogger("cassandra").setLevel(logging.ERROR)  # aggregation-without-key warnings
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the job is cancelled and the topics and
    # keyspace dropped instead of left running on the shared services.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = ROOT / ".cache" / "bench"
    options = {
        "flink_paced_s": str(args.paced_s),
        "flink_args": args.flink_args,
        "flink_pipeline": args.pipeline,
        "flink_settle_s": str(args.settle_s),
    }
    if args.idle_s:  # no events: the dataset is not made
        ctx = Context(dataset=bench / "none", events=0, work=bench / "work", options=options)
        for name in ("kafka", "cassandra", "flink"):
            services.ensure(name)
        topic = f"bench-flink-idle-{os.getpid()}"
        try:
            print(json.dumps(idle(ctx, topic, args.idle_s), indent=2))
        finally:
            _drop_topics([topic])
            _drop_keyspace()
        return
    dataset = generate.write(bench / f"events-{args.events}.jsonl", args.events)
    if args.rate:
        options["flink_rate"] = str(args.rate)
    ctx = Context(
        dataset=dataset,
        events=args.events,
        work=bench / "work",
        views=args.views,
        options=options,
    )
    if counts:
        results = []
        for count in counts:
            results.append(on_taskmanagers(ctx, count))
            print(json.dumps(results[-1].to_json(), indent=2), flush=True)
        print(scale_table(results))
        return
    print(json.dumps(run(ctx).to_json(), indent=2))


if __name__ == "__main__":
    main()
