"""The Prism profile: run the pipeline on Prism, Beam's Go runner, on this machine.

Prism is Beam's local portable runner: one Go binary that the SDK starts as its job server and
that runs the pipeline's Python in this process (the LOOPBACK environment, PrismRunner's
default). Unlike the Python engine of the DirectRunner it runs an unbounded splittable DoFn
(the Kafka read) beside processing-time timers, so streaming views with ``emit.early`` run
locally.

Where the binary comes from (Beam's ``PrismJobServer._resolve_source_path``):

* ``location`` (``--prism-location`` or ``$LIVEAGG_PRISM_LOCATION``), a local binary or zip,
  is used as it is (``python -m integration.services.prism`` builds one with Go);
* otherwise Beam downloads its release's binary from GitHub into
  ``~/.apache_beam/cache/prism/bin`` once, and reuses it.

Ctrl-C (or SIGTERM) cancels the job through the job service, waits for it to end and stops
Prism, so no Prism process outlives the run; the run then ends as any interrupted run (exit 130
or 143 and one line).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from liveagg.errors import COMMAND_LINE, ViewError

TERMINAL = frozenset({"DONE", "FAILED", "CANCELLED", "UPDATED", "DRAINED"})
"""Beam's terminal job states (``PipelineState.is_terminal``)."""
_CANCEL_TIMEOUT_S = 60.0
_WORKER_LOGGERS = ("apache_beam.runners.worker", "SdkWorker")
_WORKER_SOURCE = "apache_beam/runners/worker/"
_LOGGER = logging.getLogger(__name__)


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class PrismProfile:
    """What ``--runner prism`` and its flags mean; the default comes from ``LIVEAGG_PRISM_*``."""

    location: str | None = field(default_factory=lambda: _env("LIVEAGG_PRISM_LOCATION"))

    def check(self) -> None:
        """Reject a binary that is not there before anything starts."""
        if self.location and "://" not in self.location and not os.path.isfile(self.location):
            raise ViewError(
                COMMAND_LINE,
                "$.prism_location",
                f"--prism-location {self.location}: no such file; give a Prism binary (build "
                "one with `python -m integration.services.prism`, or `go install "
                "github.com/apache/beam/sdks/v2/go/cmd/prism@v<Beam version>`), or leave it "
                "out where Beam can download its own from GitHub",
            )

    def beam_args(self) -> list[str]:
        """PipelineOptions arguments for Beam's PrismRunner."""
        # Prism logs every job step at info; warnings and errors still reach the log.
        args = ["--runner=PrismRunner", "--prism_log_level=warn"]
        if self.location:
            args.append(f"--prism_location={self.location}")
        return args


def run(pipeline: Any) -> Any:
    """``pipeline.run()``, with a message that says what to do when Beam cannot get Prism.

    Without ``--prism-location`` Beam downloads its release's binary from GitHub and raises
    ``RuntimeError('Unable to fetch remote prism binary at <url>: <reason>')`` where it cannot
    (``prism_runner.py``, ``_download_to_local_path``).
    """
    try:
        return pipeline.run()
    except RuntimeError as e:
        if not str(e).startswith("Unable to fetch remote prism binary"):
            raise
        raise ViewError(
            COMMAND_LINE,
            "$.prism_location",
            f"--runner prism: {e}. Give --prism-location a Prism binary (or set "
            "LIVEAGG_PRISM_LOCATION): `python -m integration.services.prism` builds one with Go, "
            "as does `go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<Beam version>`",
        ) from None


def supervise(result: Any) -> str:
    """Wait for the job and return its final state.

    Ctrl-C and SIGTERM reach here as ``KeyboardInterrupt``, raised by the run's signal handler
    (``pipelines/run.py``, ``_remember_signals``): the job is cancelled through the job service
    and waited for, and the interrupt goes on, so that the run ends as every interrupted run
    does (exit 130 or 143, one line).
    """
    try:
        result.wait_until_finish()
        return _state(result)
    except KeyboardInterrupt:
        _quiet_cancelled_bundles()
        _cancel(result)
        raise


def _cancel(result: Any) -> None:
    """Cancel the job and wait until it has ended, or until Prism is gone: a terminal's
    Ctrl-C reaches Prism too, and Beam's own SIGINT handler stops it
    (``job_server.py``, ``StopOnExitJobServer._sigint_handler``)."""
    with contextlib.suppress(Exception):  # the job may have ended on its own meanwhile
        result.cancel()
    deadline = time.monotonic() + _CANCEL_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if _state(result) in TERMINAL:
                return
        except Exception:  # the job service is gone, and the job with it
            return
        time.sleep(0.2)


def _quiet_cancelled_bundles() -> None:
    """From now on, drop the reports of the bundles that the cancel interrupts.

    Cancelling a Prism job fails the bundles in flight: Prism logs ``Bundle Failed`` at ERROR,
    and the SDK worker, which runs in this process (LOOPBACK), prints and logs the traceback
    of each instruction that the shutdown cut short (``sdk_worker.py``, ``_execute``). Those
    are the expected end of a cancelled job, not errors of the run; they go to the DEBUG log.
    """
    quiet = _DropAfterCancel()
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)
    if not isinstance(sys.stderr, _WorkerTracebacksToDebug):
        sys.stderr = _WorkerTracebacksToDebug(sys.stderr)


class _DropAfterCancel(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        worker = name in ("PrismRunner", "PrismJobServer") or name.startswith(_WORKER_LOGGERS)
        if worker and record.levelno > logging.DEBUG:
            _LOGGER.debug("after cancel: %s: %s", name, record.getMessage())
            return False
        return True


class _WorkerTracebacksToDebug(io.TextIOBase):
    """``sys.stderr`` without the tracebacks the SDK worker prints for failed instructions."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        if text.startswith("Traceback (most recent call last):") and _WORKER_SOURCE in text:
            _LOGGER.debug("after cancel: %s", text)
            self._dropped = True
            return len(text)
        if self._dropped and text == "\n":  # print()'s end of the dropped traceback
            self._dropped = False
            return len(text)
        self._dropped = False
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _state(result: Any) -> str:
    state = result.state
    return str(getattr(state, "name", state)).upper()
