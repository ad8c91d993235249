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
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from liveagg.errors import COMMAND_LINE, ViewError
from liveagg.runners.flink_rest import (
    TERMINAL,
    FlinkRest,
    FlinkRestError,
    format_metrics,
    wait_for,
)

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
        parser.add_argument("--number_of_execution_retries", type=int, default=None)
        parser.add_argument("--execution_retry_delay", type=int, default=None)


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class FlinkProfile:
    """What ``--runner flink`` and its flags mean; defaults come from ``LIVEAGG_FLINK_*``."""

    master: str = field(default_factory=lambda: _env("LIVEAGG_FLINK_MASTER") or "[local]")
    version: str = field(default_factory=lambda: _env("LIVEAGG_FLINK_VERSION") or "1.19")
    parallelism: int | None = None
    # Beam's Flink runner sends the Kafka read's watermark downstream only at checkpoint
    # barriers, so a window closes at the first checkpoint after its end (docs/flink.md).
    checkpoint_interval: timedelta = timedelta(seconds=1)
    environment: str | None = None  # loopback | external; None: external iff a worker pool
    worker_pool: str | None = field(default_factory=lambda: _env("LIVEAGG_FLINK_WORKER_POOL"))
    job_endpoint: str | None = field(default_factory=lambda: _env("LIVEAGG_FLINK_JOB_ENDPOINT"))
    job_server_jar: str | None = field(default_factory=lambda: _env("LIVEAGG_FLINK_JOB_SERVER_JAR"))
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


class JobFailed(RuntimeError):
    """The job ended in failure (the cluster lost, say); the message says how to resume."""


def supervise(
    result: Any,
    profile: FlinkProfile,
    report_every_s: float = 30.0,
    say: Callable[[str], None] = print,
) -> str:
    """Wait for a submitted job, printing where to watch it and its metrics; returns its state.

    Ctrl-C (or SIGTERM) cancels the job, or with ``savepoint_on_stop`` stops it with a
    savepoint and says how to resume from it.
    """
    _stop_on_signals()
    rest = FlinkRest(profile.rest_url) if profile.rest_url else None
    job_id = None
    if rest is not None:
        job_id = rest.find_job(profile.job_name)
        say(f"Flink job {job_id} ({profile.job_name}) submitted; web UI: {rest.ui(job_id)}")
    checkpoint = None  # the newest completed checkpoint seen, for the failure message
    try:
        last = time.monotonic()
        while (state := _state(result)) not in TERMINAL:
            time.sleep(1.0)
            due = report_every_s > 0 and time.monotonic() - last >= report_every_s
            if due and rest is not None and job_id:
                last = time.monotonic()
                with contextlib.suppress(FlinkRestError):
                    metrics = format_metrics(rest.metrics(job_id))
                    say(f"job {job_id} {rest.state(job_id)}:\n{metrics}")
                    latest = rest.latest_checkpoint(job_id)
                    # The job's folder: Flink deletes older chk-N as newer ones complete,
                    # and --flink-restore takes the newest one in a folder.
                    checkpoint = latest.rsplit("/chk-", 1)[0] if latest else checkpoint
        try:
            result.wait_until_finish()
        except RuntimeError as e:
            hint = (
                f"; resume from its newest checkpoint with: --flink-restore {checkpoint}"
                if checkpoint
                else ""
            )
            raise JobFailed(f"Flink job {job_id or profile.job_name} failed: {e}{hint}") from e
        return state
    except KeyboardInterrupt:
        if profile.savepoint_on_stop and rest is not None and job_id:
            say(f"stopping job {job_id} with a savepoint ...")
            location = rest.stop_with_savepoint(job_id, profile.savepoint_dir)
            say(f"savepoint: {location}\nresume with: --flink-restore {location}")
        elif rest is not None and job_id:
            # Beam's job service cancels only its own invocation, not the job it submitted
            # to a remote cluster, so the cluster is told directly.
            say(f"cancelling job {job_id} ...")
            rest.cancel(job_id)
            wait_for(lambda: rest.state(job_id) in TERMINAL, 120.0)
            say(f"job {job_id} {rest.state(job_id)}")
        with contextlib.suppress(Exception):  # the invocation may already have ended
            result.cancel()
        wait_for(lambda: _state(result) in TERMINAL, 60.0)
        return _state(result)


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop the job as Ctrl-C does.

    Explicitly, because a process started in the background by a shell script inherits SIGINT
    as ignored, and Python then never raises KeyboardInterrupt.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _state(result: Any) -> str:
    state = result.state
    return str(getattr(state, "name", state)).upper()
