"""supervise(): a Flink job followed through Flink's REST API, whatever part of the service goes.

Flink's REST API here is a real HTTP server on 127.0.0.1 that answers as a JobManager does for
the calls liveagg makes, scripted along a clock that the watch's sleeps advance: 30 s without
an answer take no time. Stopping the server is a REST API that refuses connections, as one
that has stopped does. Beam's job server is a result whose state is an answer or an error.
The real cluster's cases (the service stopped as its harness stops it, a TaskManager killed)
are in tests/integration/test_flink.py.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from liveagg.pipelines.run import _report
from liveagg.runners.flink import (
    JOB_LOST_EXIT,
    LOST_AFTER_S,
    FlinkProfile,
    JobFailed,
    Outcome,
    _Watch,
)

DATA = Path(__file__).resolve().parents[1] / "data"
JOB = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
NAME = "liveagg-test-job"


class RestStandIn:
    """Flink's REST API for one job: ``status`` and ``root_exception`` say how the job is;
    :meth:`stop` and :meth:`start` take the API away and bring it back on the same port."""

    def __init__(self, checkpoints: str) -> None:
        self.status = "RUNNING"
        self.root_exception: str | None = None
        self.known = True  # False: a JobManager that restarted and forgot the job
        self.latest: dict[str, Any] = {"completed": None, "savepoint": None}
        self.accumulators: list[dict[str, Any]] = []
        # Reads of the cached execution graph still to answer as of the running job: Flink
        # serves /jobs/<id> and its accumulators from a cache kept 3 s, /status not.
        self.stale_graph_reads = 0
        self.events: list[str] = []  # what was asked of the job, in order
        self.checkpoints = checkpoints
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, path: str) -> tuple[int, Any]:
        if path == "/jobs/overview":
            return 200, {"jobs": [{"jid": JOB, "name": NAME, "start-time": 1}]}
        if not path.startswith(f"/jobs/{JOB}") or not self.known:
            return 404, {"errors": [f"Job {JOB} not found"]}
        graph = {"": {"state": self.status, "vertices": []}}
        graph["/accumulators"] = {"user-task-accumulators": self.accumulators}
        if path.removeprefix(f"/jobs/{JOB}") in graph and self.stale_graph_reads > 0:
            self.stale_graph_reads -= 1  # the running job's graph, its accumulators not in
            graph = {"": {"state": "RUNNING", "vertices": []}}
            graph["/accumulators"] = {"user-task-accumulators": []}
        answers = {
            **graph,
            "/status": {"status": self.status},
            "/jobmanager/config": [{"key": "state.checkpoints.dir", "value": self.checkpoints}],
            "/exceptions": {"root-exception": self.root_exception},
            "/checkpoints": {"latest": self.latest},
        }
        found = answers.get(path.removeprefix(f"/jobs/{JOB}"))
        return (200, found) if found is not None else (404, {"errors": ["Not found"]})

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, body = stand_in.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PATCH(self) -> None:  # cancel: Flink answers 202, then the job ends
                stand_in.events.append(f"flink {self.path.split('?')[1]}")
                stand_in.status = "CANCELED"
                stand_in.stale_graph_reads = 3
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class BeamJob:
    """Beam's side of the job: the state its job server gives, or the error it raises."""

    def __init__(self, events: list[str] | None = None) -> None:
        self.answer: str | Exception = "RUNNING"
        self.events = [] if events is None else events

    def cancel(self) -> None:
        self.events.append("beam cancel")
        if self.answer == "RUNNING":
            self.answer = "CANCELLED"

    @property
    def state(self) -> str:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def wait_until_finish(self) -> str:
        return self.state


class Clock:
    """Monotonic time that only the watch's sleeps advance; ``script(now)`` runs after each."""

    def __init__(self, script: Callable[[float], None]) -> None:
        self.now = 0.0
        self.script = script

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.script(self.now)


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    """The job's checkpoint folder, with two complete checkpoints and one Flink is writing."""
    job = tmp_path / "checkpoints" / JOB
    for n, mtime in ((1, 100), (2, 200)):
        (job / f"chk-{n}").mkdir(parents=True)
        (job / f"chk-{n}" / "_metadata").write_bytes(b"x")
        os.utime(job / f"chk-{n}" / "_metadata", (mtime, mtime))
    (job / "chk-3").mkdir()  # in progress: no _metadata yet
    return job


@pytest.fixture
def rest(checkpoints: Path) -> Iterator[RestStandIn]:
    stand_in = RestStandIn(f"file:{checkpoints.parent}")
    yield stand_in
    stand_in.stop()


def _watch(
    rest: RestStandIn, beam: BeamJob, clock: Clock, said: list[str], **profile: Any
) -> _Watch:
    flink = FlinkProfile(master=rest.url, job_name=NAME, **profile)
    return _Watch(beam, flink, said.append, [], [], clock=clock, sleep=clock.sleep)


def test_a_job_server_that_stops_answering_is_not_fatal(rest: RestStandIn) -> None:
    """The job server gone for two minutes while Flink runs the job: the job is followed
    through the REST API to its end, said once."""
    beam = BeamJob()

    def script(now: float) -> None:
        if now >= 3:
            beam.answer = RuntimeError("UNAVAILABLE (failed to connect to all addresses)")
        if now >= 120:
            rest.status = "FINISHED"

    clock = Clock(script)
    said: list[str] = []
    outcome = _watch(rest, beam, clock, said).run(report_every_s=0)
    assert outcome == Outcome("DONE")
    assert 120 <= clock.now < 122
    assert said[0].startswith(f"Flink job {JOB} ({NAME}) submitted; web UI: http://")
    assert said[0].endswith(f"; checkpoints: {rest.checkpoints}/{JOB}")
    assert said[1:] == [
        "Beam job server does not answer (UNAVAILABLE (failed to connect to all addresses)); "
        f"following job {JOB} through Flink's REST API"
    ]


def test_a_rest_api_silent_for_less_than_the_limit_is_waited_for(
    rest: RestStandIn, checkpoints: Path
) -> None:
    """Silent for 25 s (a JobManager's long GC, a restart of the web server): the watch goes
    on. Silent for 30 s with the job server gone too: the job is lost, and the one line names
    the newest complete checkpoint on disk."""
    beam = BeamJob()
    beam.answer = RuntimeError("UNAVAILABLE (Socket closed)")

    def script(now: float) -> None:
        if now == 5:
            rest.stop()
        elif now == 30:
            rest.start()
        elif now == 40:
            rest.stop()

    clock = Clock(script)
    with pytest.raises(JobFailed) as failed:
        _watch(rest, beam, clock, []).run(report_every_s=0)
    assert 40 + LOST_AFTER_S <= clock.now < 42 + LOST_AFTER_S
    assert str(failed.value) == (
        f"Flink job {JOB} lost: Flink's REST API has not answered for 30 s (Connection "
        "refused), nor Beam's job server (UNAVAILABLE (Socket closed)); resume with: "
        f"--flink-restore {checkpoints / 'chk-2'}"
    )
    assert failed.value.exit_code == JOB_LOST_EXIT == 75


def test_restarts_are_said_and_a_failed_job_names_its_cause_and_checkpoint(
    rest: RestStandIn, checkpoints: Path
) -> None:
    beam = BeamJob()

    def script(now: float) -> None:
        if now == 3:
            rest.status = "RESTARTING"
            rest.root_exception = "java.lang.Exception: TaskManager lost\n\tat Flink.java:1"
        elif now == 6:
            rest.status = "RUNNING"
        elif now == 9:
            rest.status = "FAILED"
            rest.root_exception = "java.io.IOException: disk full\n\tat Flink.java:2"

    said: list[str] = []
    with pytest.raises(JobFailed, match=r"^Flink job \w+ failed: java.io.IOException: disk full;"):
        _watch(rest, beam, Clock(script), said).run(report_every_s=0)
    assert said[1:] == [
        f"job {JOB} RESTARTING: java.lang.Exception: TaskManager lost",
        f"job {JOB} RUNNING again",
    ]


def test_a_job_the_cluster_forgot_is_lost_at_once(rest: RestStandIn, checkpoints: Path) -> None:
    """A JobManager restarted without high availability answers 404 for the job: no use
    waiting 30 s."""
    beam = BeamJob()

    def script(now: float) -> None:
        if now == 3:
            rest.known = False

    clock = Clock(script)
    with pytest.raises(JobFailed) as failed:
        _watch(rest, beam, clock, []).run(report_every_s=0)
    assert clock.now == 3
    assert str(failed.value) == (
        f"Flink job {JOB} lost: the Flink cluster no longer knows the job (its JobManager "
        f"restarted); resume with: --flink-restore {checkpoints / 'chk-2'}"
    )


@pytest.mark.parametrize(
    "restore, hint",
    [
        (None, "it completed no checkpoint: run the command again to start over"),
        (
            "RESTORED",
            "it completed no checkpoint; resume from where this run started: "
            "--flink-restore RESTORED",
        ),
    ],
)
def test_a_job_lost_before_its_first_checkpoint_says_what_to_do(
    rest: RestStandIn, tmp_path: Path, restore: str | None, hint: str
) -> None:
    rest.checkpoints = f"file:{tmp_path / 'empty'}"
    if restore:  # the savepoint this run started from
        savepoint = tmp_path / "savepoint-1"
        savepoint.mkdir()
        (savepoint / "_metadata").write_bytes(b"x")
        restore = str(savepoint)
        hint = hint.replace("RESTORED", restore)

    def script(now: float) -> None:
        if now == 2:
            rest.status = "FAILED"

    with pytest.raises(JobFailed) as failed:
        _watch(rest, BeamJob(), Clock(script), [], restore=restore).run(report_every_s=0)
    assert str(failed.value) == f"Flink job {JOB} failed: it ended FAILED; {hint}"


def test_on_remote_storage_the_newest_point_rest_named_is_the_hint(rest: RestStandIn) -> None:
    """Checkpoints on S3: what is newest is what the REST API says, a savepoint taken after
    the last checkpoint included."""
    rest.checkpoints = "s3://bucket/checkpoints"
    rest.latest = {
        "completed": {
            "external_path": "s3://bucket/checkpoints/j/chk-8",
            "latest_ack_timestamp": 5,
        },
        "savepoint": {
            "external_path": "s3://bucket/savepoints/savepoint-1",
            "latest_ack_timestamp": 9,
        },
    }

    def script(now: float) -> None:
        if now == 2:
            rest.status = "FAILED"

    with pytest.raises(
        JobFailed, match=r"; resume with: --flink-restore s3://bucket/savepoints/savepoint-1$"
    ):
        _watch(rest, BeamJob(), Clock(script), []).run(report_every_s=0)
    rest.latest["completed"]["latest_ack_timestamp"] = 10
    rest.status = "RUNNING"
    with pytest.raises(
        JobFailed, match=r"; resume with: --flink-restore s3://bucket/checkpoints/j/chk-8$"
    ):
        _watch(rest, BeamJob(), Clock(script), []).run(report_every_s=0)


def test_ctrl_c_cancels_beams_invocation_then_the_flink_job_and_keeps_its_counters(
    rest: RestStandIn,
) -> None:
    """Beam's invocation is cancelled while the Flink job runs (cancelled after it, Beam's
    JobInvocation logs an ERROR), then the Flink job through the REST API; the summary is
    the job's own counters, from its accumulator (recorded from a cancelled job), read once
    the REST API's cached graph of the job has caught up with its end."""
    rest.accumulators = json.loads((DATA / "flink_accumulators.json").read_text())[
        "user-task-accumulators"
    ]
    beam = BeamJob(rest.events)
    said: list[str] = []
    watch = _watch(rest, beam, Clock(lambda now: None), said)
    assert watch.find_job() is None
    outcome = watch.stop()
    assert rest.events[:2] == ["beam cancel", "flink mode=cancel"]
    assert said[1:] == [f"cancelling job {JOB} ...", f"job {JOB} CANCELED"]
    assert outcome.state == "CANCELLED"
    assert outcome.figures == (
        f"Flink job {JOB}: its own counters, final (since the job started, or last restarted "
        "from a checkpoint)"
    )
    report = _report(outcome.counters or [], None, ["ad_impressions", "network_telemetry"])
    report.figures = outcome.figures
    summary = report.summary()
    assert summary.startswith(f"{outcome.figures}:\n"), summary
    assert "view ad_impressions: 996 rows" in summary
