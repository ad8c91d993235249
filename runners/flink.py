"""The Flink profile: submit the pipeline to Apache Flink through Beam's portable FlinkRunner.

The Python SDK declares only a few of the Java runner's options (master, version, job-server
jar, parallelism) and drops any other option it does not know before submission, so the
checkpointing and restore options liveagg relies on are declared here (:class:`FlinkJavaOptions`)
and travel to the job server under their Beam names.

Where the pipeline runs:

* ``master="[local]"`` starts an embedded Flink inside the job server; the SDK harness runs in
  the submitting process (LOOPBACK). Nothing to install but Java.
* ``master="HOST:PORT"`` (a session cluster's REST address) submits to that cluster. The
  TaskManagers need a Beam Python worker pool (EXTERNAL environment, ``worker_pool``) holding
  the same liveagg and Beam versions; without one, LOOPBACK makes the TaskManagers call back
  into the submitting process, which is only right when both are on one machine.

The job server is Beam's (``job_endpoint`` for one already running; otherwise the FlinkRunner
starts ``java -jar job_server_jar``, or downloads Beam's jar for ``version`` when none is given).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from liveagg.errors import COMMAND_LINE, ViewError
from liveagg.runners.flink_rest import (
    GAUGES,
    TERMINAL,
    FlinkRest,
    FlinkRestError,
    counter_values,
    format_metrics,
    wait_for,
)
from liveagg.settings import FlinkSettings

FLINK_VERSIONS = ("1.19", "1.20", "2.0", "2.1", "2.2")
"""Flink versions Beam's FlinkRunner is built for; the cluster's must be one of them."""
ENVIRONMENTS = ("loopback", "external")
EMBEDDED = ("[local]", "[auto]")


class FlinkJavaOptions(PipelineOptions):
    """Options of Beam's Java ``FlinkPipelineOptions`` that the Python SDK does not declare.

    Declaring them keeps them in the pipeline options sent to the job server, which reads
    ``checkpointing_interval`` as ``checkpointingInterval`` and so on.
    """

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument("--checkpointing_interval", type=int, default=None)
        parser.add_argument("--checkpointing_mode", default=None)
        parser.add_argument("--checkpoint_timeout_millis", type=int, default=None)
        parser.add_argument("--min_pause_between_checkpoints", type=int, default=None)
        parser.add_argument("--externalized_checkpoints_enabled", action="store_true", default=None)
        parser.add_argument(
            "--retain_externalized_checkpoints_on_cancellation", action="store_true", default=None
        )
        parser.add_argument("--savepoint_path", default=None)
        parser.add_argument("--allow_non_restored_state", action="store_true", default=None)
        parser.add_argument("--state_backend", default=None)
        parser.add_argument("--state_backend_storage_path", default=None)
        parser.add_argument(
            "--finish_bundle_before_checkpointing", action="store_true", default=None
        )
        parser.add_argument("--max_bundle_size", type=int, default=None)
        parser.add_argument("--faster_copy", action="store_true", default=None)
        parser.add_argument("--object_reuse", action="store_true", default=None)
        parser.add_argument("--number_of_execution_retries", type=int, default=None)
        parser.add_argument("--execution_retry_delay", type=int, default=None)


@dataclass(frozen=True)
class FlinkProfile(FlinkSettings):
    """What ``--runner flink`` and its flags mean: where the job goes (:class:`FlinkSettings`,
    from ``LIVEAGG_FLINK_*``) and how this run uses it."""

    parallelism: int | None = None
    # Beam's Flink runner sends the Kafka read's watermark downstream only at checkpoint
    # barriers, so a window closes at the first checkpoint after its end (docs/flink.md).
    checkpoint_interval: timedelta = timedelta(seconds=1)
    environment: str | None = None  # loopback | external; None: external iff a worker pool
    restore: str | None = None  # a savepoint, a retained checkpoint, or a folder of them
    savepoint_on_stop: bool = False
    savepoint_dir: str | None = None
    job_name: str = field(default_factory=lambda: f"liveagg-{uuid.uuid4().hex[:12]}")

    @property
    def embedded(self) -> bool:
        return self.master in EMBEDDED

    @property
    def environment_type(self) -> str:
        if self.environment:
            return self.environment
        return "external" if self.worker_pool else "loopback"

    @property
    def rest_url(self) -> str | None:
        """The cluster's REST address (web UI and API); None for an embedded Flink."""
        if self.embedded:
            return None
        return self.master if re.match(r"^https?://", self.master) else f"http://{self.master}"

    def check(self) -> None:
        """Reject contradictory flags before anything starts, naming the flag."""
        if self.version not in FLINK_VERSIONS:
            raise ViewError(
                COMMAND_LINE,
                "$.flink_version",
                f"--flink-version {self.version!r}: expected one of {', '.join(FLINK_VERSIONS)} "
                "(the version of the cluster, which Beam's FlinkRunner must be built for)",
            )
        if self.environment_type not in ENVIRONMENTS:
            raise ViewError(
                COMMAND_LINE,
                "$.flink_environment",
                f"--flink-environment {self.environment!r}: expected loopback or external",
            )
        if self.environment_type == "external" and not self.worker_pool:
            raise ViewError(
                COMMAND_LINE,
                "$.flink_worker_pool",
                "--flink-environment external needs --flink-worker-pool HOST:PORT (a Beam "
                "Python worker pool the TaskManagers reach) or $LIVEAGG_FLINK_WORKER_POOL",
            )
        if self.parallelism is not None and self.parallelism < 1:
            raise ViewError(
                COMMAND_LINE,
                "$.parallelism",
                f"--parallelism {self.parallelism}: expected a positive integer",
            )
        if self.savepoint_on_stop and self.embedded:
            raise ViewError(
                COMMAND_LINE,
                "$.savepoint_on_stop",
                "--savepoint-on-stop needs a Flink cluster (--flink-master HOST:PORT); an "
                "embedded Flink has no REST API to take a savepoint through",
            )
        if self.job_server_jar and not Path(self.job_server_jar).is_file():
            raise ViewError(
                COMMAND_LINE,
                "$.flink_job_server_jar",
                f"--flink-job-server-jar {self.job_server_jar}: no such file",
            )

    def beam_args(self, streaming: bool) -> list[str]:
        """PipelineOptions arguments for Beam's FlinkRunner."""
        args = [
            "--runner=FlinkRunner",
            f"--flink_master={self.master}",
            f"--flink_version={self.version}",
            f"--job_name={self.job_name}",
            f"--environment_type={self.environment_type.upper()}",
        ]
        if self.environment_type == "external":
            args.append(f"--environment_config={self.worker_pool}")
        if self.parallelism:
            args.append(f"--parallelism={self.parallelism}")
        if self.job_endpoint:
            args.append(f"--job_endpoint={self.job_endpoint}")
        elif self.job_server_jar:
            args.append(f"--flink_job_server_jar={self.job_server_jar}")
        if streaming:
            interval_ms = int(self.checkpoint_interval.total_seconds() * 1000)
            if interval_ms > 0:
                # Checkpoints are kept when the job fails or is cancelled, so a run can be
                # resumed with --flink-restore after losing the whole cluster. Bundles finish
                # before a checkpoint: sink writes are acknowledged before it completes, and
                # no output is left buffered in an operator that gets no further input (the
                # partition listing after the Impulse would otherwise hold the whole read).
                args += [
                    f"--checkpointing_interval={interval_ms}",
                    "--externalized_checkpoints_enabled",
                    "--retain_externalized_checkpoints_on_cancellation",
                    "--finish_bundle_before_checkpointing",
                ]
            # The router pre-aggregates a bundle's messages (transforms/streaming.py): bigger
            # bundles give fewer partials per key. A quiet stream still closes bundles after
            # Flink's maximum bundle time (1 s).
            args.append("--max_bundle_size=10000")
            # The SDK's user-state cache: the window operator's cells come from memory.
            # Beam sizes it from this option (sdk_worker_main._get_state_cache_size_bytes;
            # 0, off, by default) for a LOOPBACK worker and for a worker that a pool starts
            # through the SDK container's boot; a plain worker_pool_main's workers take the
            # pool's own size (docs/flink.md, "The state cache").
            args.append(f"--max_cache_memory_usage_mb={STATE_CACHE_MB}")
            if self.environment_type == "external":
                # One SDK worker process runs the Python of all a TaskManager's subtasks and
                # bounds a busy job (docs/performance.md, Flink finding 17); the user's
                # --sdk_worker_parallelism still wins (their arguments come last).
                args.append("--sdk_worker_parallelism=2")
        if self.restore:
            args.append(f"--savepoint_path={resolve_restore(self.restore)}")
        return args


#: The SDK state cache asked for, in MiB per SDK worker.
STATE_CACHE_MB = 256


def resolve_restore(path: str) -> str:
    """The savepoint or checkpoint to restore from ``path``.

    ``path`` is a savepoint or checkpoint folder (it holds ``_metadata``), or a folder of them:
    a job's checkpoint folder (``<dir>/<job id>``) or the cluster's checkpoint root, in which
    case the newest complete checkpoint in it is used.
    """
    if re.match(r"^[a-z][a-z0-9+.-]*://", path) and not path.startswith("file:"):
        return path  # remote storage (s3://, hdfs://): Flink resolves it
    root = Path(re.sub(r"^file:(//)?", "", path))  # Flink prints file:/..., users file:///...
    if (root / "_metadata").is_file():
        return str(root)
    candidates = [m.parent for m in root.glob("**/_metadata") if m.parent != root]
    if not candidates:
        raise ViewError(
            COMMAND_LINE,
            "$.flink_restore",
            f"--flink-restore {path}: no savepoint or completed checkpoint there (a folder "
            "holding _metadata, or a folder of chk-N / savepoint-* folders)",
        )
    return str(max(candidates, key=lambda p: (p.stat().st_mtime, _checkpoint_number(p))))


def _checkpoint_number(path: Path) -> int:
    match = re.fullmatch(r"chk-(\d+)", path.name)
    return int(match.group(1)) if match else -1


JOB_LOST_EXIT = 75
"""Exit code of a run whose Flink job failed or was lost with the Flink service: EX_TEMPFAIL
of sysexits.h ("try again later"). The one line printed says what to resume from."""

LOST_AFTER_S = 30.0
"""How long Flink's REST API (the job server, for an embedded Flink) may not answer before the
job counts as lost: without high availability a JobManager that stops takes its jobs along."""

SUBMIT_TIMEOUT_S = 300.0
"""How long the job server may take to hand the job to Flink (30 s on the 2-core test box)."""


class JobFailed(RuntimeError):
    """The job ended without finishing: it failed, or was lost with (part of) the Flink
    service. The message is one line that ends with the ``--flink-restore`` to resume from."""

    exit_code = JOB_LOST_EXIT


@dataclass
class Outcome:
    """How a supervised job ended.

    ``counters`` are the Flink job's own Beam counters (``name -> value``) when liveagg stopped
    it, as Beam's job service has none for a cancelled job; ``figures`` says what they are.
    """

    state: str
    counters: list[tuple[str, int]] | None = None
    figures: str = ""


_FLINK_TO_BEAM = {"FINISHED": "DONE", "CANCELED": "CANCELLED"}


def supervise(
    result: Any,
    profile: FlinkProfile,
    report_every_s: float = 30.0,
    say: Callable[[str], None] = print,
    *,
    views: Sequence[str] = (),
    partitions: Sequence[str] = (),
) -> Outcome:
    """Wait for a submitted job, printing where to watch it and its metrics.

    Flink's REST API, not Beam's job server, says how the job is doing: the job runs on the
    cluster whether or not the job server is still up. Whatever part of the service goes
    down, the run ends with :class:`JobFailed` (one line, naming the newest retained
    checkpoint or savepoint) or carries on, never with a traceback. Ctrl-C (or SIGTERM)
    cancels the job, or with ``savepoint_on_stop`` stops it with a savepoint; the outcome
    then carries the job's own counters.
    """
    _stop_on_signals()
    watch = _Watch(result, profile, say, views, partitions)
    try:
        return watch.run(report_every_s)
    except KeyboardInterrupt:
        return watch.stop()


_TROUBLE = frozenset({"RESTARTING", "FAILING", "CANCELLING", "SUSPENDED", "RECONCILING"})
"""Flink job states worth a line when the job enters them."""


class _Watch:
    """One supervised job: what is known about it, and what each part of the service says."""

    def __init__(
        self,
        result: Any,
        profile: FlinkProfile,
        say: Callable[[str], None],
        views: Sequence[str],
        partitions: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.result = result
        self.clock, self.sleep = clock, sleep  # injected by tests: 30 s of silence in none
        self.profile = profile
        self.say = say
        self.views = list(views)
        self.partitions = list(partitions)
        self.rest = FlinkRest(profile.rest_url) if profile.rest_url else None
        self.job_id: str | None = None
        # The job's checkpoint folder, known once the job is: a cluster lost at any time
        # after that still leaves the newest checkpoint in it to name.
        self.checkpoint_dir: str | None = None
        self.beam_error: str | None = None  # why the job server does not answer
        self.beam_down_since: float | None = None
        self.rest_error: str | None = None
        self.rest_down_since: float | None = None
        self.flink_state: str | None = None
        self.following = False  # said that the job is followed through REST only

    # --- what each part says ------------------------------------------------------------

    def beam_state(self) -> str | None:
        """Beam's state of the job, or None when the job server does not answer."""
        try:
            state = _state(self.result)
        except Exception as e:  # grpc.RpcError (UNAVAILABLE when it is gone), or anything
            self.beam_error = _one_line(_grpc_reason(e))
            if self.beam_down_since is None:
                self.beam_down_since = self.clock()
            return None
        self.beam_error = self.beam_down_since = None
        return state

    def rest_call(self, call: Callable[[], Any]) -> Any:
        """``call()`` on the REST API; None when it does not answer (the time it has not is
        kept). A FlinkRestError that says the cluster forgot the job is raised."""
        try:
            answer = call()
        except FlinkRestError as e:
            if e.unknown_job:
                raise
            self.rest_error = _one_line(e.reason, 80)
            if self.rest_down_since is None:
                self.rest_down_since = self.clock()
            return None
        self.rest_error = self.rest_down_since = None
        return answer

    def down_too_long(self, since: float | None) -> bool:
        return since is not None and self.clock() - since >= LOST_AFTER_S

    # --- the run ------------------------------------------------------------------------

    def run(self, report_every_s: float) -> Outcome:
        if self.rest is not None:
            outcome = self.find_job()
            if outcome is not None:
                return outcome
        last_report = self.clock()
        while True:
            beam = self.beam_state()
            if self.rest is None:  # an embedded Flink: the job server is the cluster
                if beam in TERMINAL:
                    return self.finish()
                if self.down_too_long(self.beam_down_since):
                    raise self.lost(f"the Beam job server stopped answering ({self.beam_error})")
            else:
                outcome = self.follow_flink(beam)
                if outcome is not None:
                    return outcome
            due = report_every_s > 0 and self.clock() - last_report >= report_every_s
            if due and self.rest is not None:
                last_report = self.clock()
                self.report()
            self.sleep(1.0)

    def find_job(self) -> Outcome | None:
        """Wait for the Flink job of this run (Beam's job server submits it after ``run()``
        returns), then say where to watch it and where its checkpoints go. An outcome when
        the job ended before it was seen on Flink (its translation failed, say)."""
        assert self.rest is not None
        rest, name = self.rest, self.profile.job_name
        deadline = self.clock() + SUBMIT_TIMEOUT_S
        while not (job_id := self.rest_call(lambda: rest.find_job(name))):
            beam = self.beam_state()
            if beam in TERMINAL:
                return self.finish()
            if self.down_too_long(self.beam_down_since):
                raise self.lost(f"the Beam job server stopped answering ({self.beam_error})")
            if self.down_too_long(self.rest_down_since) or self.clock() > deadline:
                why = self.rest_error or f"not on Flink after {SUBMIT_TIMEOUT_S:.0f} s"
                raise self.lost(f"the job was not seen on Flink ({why})")
            self.sleep(1.0)
        self.job_id = job_id
        with contextlib.suppress(FlinkRestError):
            self.checkpoint_dir = self.rest_call(lambda: rest.checkpoint_dir(job_id))
        where = f"; checkpoints: {self.checkpoint_dir}" if self.checkpoint_dir else ""
        self.say(f"Flink job {job_id} ({name}) submitted; web UI: {rest.ui(job_id)}{where}")
        return None

    def follow_flink(self, beam: str | None) -> Outcome | None:
        """One look at the job through the REST API: an outcome once it has ended."""
        assert self.rest is not None and self.job_id
        rest, job_id = self.rest, self.job_id
        if beam is None and not self.following:
            self.following = True
            self.say(
                f"Beam job server does not answer ({self.beam_error}); following job "
                f"{job_id} through Flink's REST API"
            )
        try:
            state = self.rest_call(lambda: rest.state(job_id))
        except FlinkRestError:
            reason = "the Flink cluster no longer knows the job (its JobManager restarted)"
            raise self.lost(reason) from None
        if state is None:
            if self.down_too_long(self.rest_down_since):
                beam_part = (
                    f", nor Beam's job server ({self.beam_error})" if self.beam_error else ""
                )
                raise self.lost(
                    f"Flink's REST API has not answered for {LOST_AFTER_S:.0f} s "
                    f"({self.rest_error}){beam_part}"
                )
            return None
        if state != self.flink_state:
            if state in _TROUBLE:
                cause = self.rest_call(lambda: rest.failure(job_id))
                self.say(f"job {job_id} {state}" + (f": {_one_line(cause)}" if cause else ""))
            elif state == "RUNNING" and self.flink_state in _TROUBLE:
                self.say(f"job {job_id} RUNNING again")
            self.flink_state = state
        if state == "FINISHED":
            return self.finish() if beam is not None else Outcome("DONE")
        if state in TERMINAL:  # failed, or cancelled by someone else
            cause = self.rest_call(lambda: rest.failure(job_id))
            raise self.lost(cause or f"it ended {state}", failed=True)
        return None

    def report(self) -> None:
        assert self.rest is not None and self.job_id
        rest, job_id = self.rest, self.job_id
        metrics = self.rest_call(lambda: rest.metrics(job_id))
        if metrics is not None:
            text = format_metrics(metrics, self.views, self.partitions)
            self.say(f"job {job_id} {self.flink_state}:\n{text}")

    def finish(self) -> Outcome:
        """The job ended as Beam's job server saw it: its result, or :class:`JobFailed`."""
        try:
            return Outcome(_state_name(self.result.wait_until_finish()))
        except Exception as e:  # RuntimeError from Beam, grpc.RpcError when it is gone
            raise self.lost(_grpc_reason(e), failed=True) from None

    # --- ends ---------------------------------------------------------------------------

    def lost(self, reason: str, failed: bool = False) -> JobFailed:
        """The one line that ends a run whose job did not finish: why, and the exact
        ``--flink-restore`` to resume from."""
        what = "failed" if failed else "lost"
        job = self.job_id or self.profile.job_name
        point = self.restore_point()
        if point:
            hint = f"resume with: --flink-restore {point}"
        elif self.profile.restore:
            hint = (
                "it completed no checkpoint; resume from where this run started: "
                f"--flink-restore {self.profile.restore}"
            )
        else:
            hint = "it completed no checkpoint: run the command again to start over"
        return JobFailed(f"Flink job {job} {what}: {_one_line(reason)}; {hint}")

    def restore_point(self) -> str | None:
        """The job's newest complete checkpoint or savepoint (:func:`newest_restore_point`)."""
        named: list[str] = []
        if self.rest is not None and self.job_id:
            rest, job_id = self.rest, self.job_id
            with contextlib.suppress(FlinkRestError):
                latest = self.rest_call(lambda: rest.latest_restore_point(job_id))
                named += [latest] if latest else []
        return newest_restore_point(named, self.checkpoint_dir)

    def stop(self) -> Outcome:
        """Ctrl-C: cancel the job (or stop it with a savepoint), and keep its own counters."""
        rest, job_id = self.rest, self.job_id
        if rest is None or not job_id:
            with contextlib.suppress(Exception):  # the invocation may already have ended
                self.result.cancel()
            wait_for(lambda: self.beam_state() in (*TERMINAL, None), 60.0)
            return Outcome(self.beam_state() or "CANCELLED")
        before = None  # the job's counters as of the cancel, should the final ones be missing
        with contextlib.suppress(FlinkRestError):
            before = self.rest_call(lambda: rest.metrics(job_id))
        try:
            if self.profile.savepoint_on_stop:
                self.say(f"stopping job {job_id} with a savepoint ...")
                location = rest.stop_with_savepoint(job_id, self.profile.savepoint_dir)
                self.say(f"savepoint: {location}\nresume with: --flink-restore {location}")
            else:
                self.say(f"cancelling job {job_id} ...")
                # Beam's invocation first: cancelled while the Flink job runs, it ends as
                # cancelled; once the Flink job has ended, Beam's JobInvocation.onFailure logs
                # "Error during job invocation" at ERROR. And Beam's job service does not
                # cancel the job it submitted to a remote cluster: Flink is told directly.
                with contextlib.suppress(Exception):
                    self.result.cancel()
                rest.cancel(job_id)
            wait_for(lambda: self.rest_call(lambda: rest.state(job_id)) in TERMINAL, 120.0)
            flink_state = rest.state(job_id)
        except FlinkRestError as e:
            raise self.lost(f"Flink did not answer while it was being stopped: {e}") from None
        self.say(f"job {job_id} {flink_state}")
        with contextlib.suppress(Exception):  # the invocation may already have ended
            self.result.cancel()
        wait_for(lambda: self.beam_state() in (*TERMINAL, None), 60.0)
        beam = self.beam_state()
        state = beam if beam in TERMINAL else _FLINK_TO_BEAM.get(flink_state, flink_state)
        final = None
        with contextlib.suppress(FlinkRestError, ValueError):
            final = rest.final_metrics(job_id)
        if final is not None:
            return Outcome(
                state,
                counter_values(final),
                f"Flink job {job_id}: its own counters, final (since the job started, or "
                "last restarted from a checkpoint)",
            )
        if before:
            return Outcome(
                state,
                [(n, int(v)) for n, v in before.items() if not n.startswith(GAUGES)],
                f"Flink job {job_id}: its counters as of the cancel (since the job started, "
                "or last restarted from a checkpoint)",
            )
        return Outcome(state)


def newest_restore_point(named: Sequence[str], checkpoint_dir: str | None) -> str | None:
    """The newest complete checkpoint or savepoint of a job, to resume it from.

    ``named`` are those Flink's REST API named, ``checkpoint_dir`` the job's checkpoint folder
    (``<state.checkpoints.dir>/<job id>``). What is on this machine's disk wins, newest
    ``_metadata`` first: the REST API may be gone, or name a checkpoint that Flink deleted
    once a newer one completed. Else what the REST API named (remote storage), else a
    remote folder itself, whose newest ``chk-N`` Flink cannot be asked for any more.
    """
    found = list(named)
    if checkpoint_dir and not _remote(checkpoint_dir):
        with contextlib.suppress(ViewError):
            found.append(resolve_restore(checkpoint_dir))
    on_disk = [m for p in found if (m := _local_metadata(p)) is not None]
    if on_disk:
        return str(max(on_disk, key=lambda m: m.stat().st_mtime).parent)
    remote = [p for p in found if _remote(p)]
    if remote:
        return remote[0]
    if checkpoint_dir and _remote(checkpoint_dir):
        return f"{checkpoint_dir} (its newest chk-N folder)"
    return None


def _remote(path: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", path)) and not path.startswith("file:")


def _local_metadata(path: str) -> Path | None:
    """The ``_metadata`` file of a checkpoint or savepoint on this machine, if it is one."""
    if _remote(path):
        return None
    metadata = Path(re.sub(r"^file:(//)?", "", path)) / "_metadata"
    return metadata if metadata.is_file() else None


def _grpc_reason(error: BaseException) -> str:
    """What a gRPC error (or any other) says, in a few words: ``UNAVAILABLE (failed to
    connect to all addresses)`` rather than the whole repr of the call."""
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if callable(code) and callable(details):
        with contextlib.suppress(Exception):
            return f"{code().name} ({str(details()).split(';')[0]})"
    return str(error) or type(error).__name__


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _state_name(state: Any) -> str:
    return str(getattr(state, "name", state)).upper()


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop the job as Ctrl-C does.

    Explicitly, because a process started in the background by a shell script inherits SIGINT
    as ignored, and Python then never raises KeyboardInterrupt.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _state(result: Any, timeout_s: float = 10.0) -> str:
    """Beam's state of the job, asked with a deadline: ``PipelineResult.state`` of Beam's
    portable runner calls ``self._job_service.GetState(...)`` without one, and a job server
    that hangs would hang the run."""
    service, job_id = getattr(result, "_job_service", None), getattr(result, "_job_id", None)
    if service is None or job_id is None:
        return _state_name(result.state)
    from apache_beam.portability.api import beam_job_api_pb2

    request = beam_job_api_pb2.GetJobStateRequest(job_id=job_id)
    answer = service.GetState(request, timeout=timeout_s)
    return beam_job_api_pb2.JobState.Enum.Name(answer.state)
