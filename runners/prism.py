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

liveagg starts Prism itself, in a session of its own (:func:`serve`), rather than letting
PrismRunner start it: Ctrl-C (or SIGTERM) reaches liveagg alone, which cancels the job through
the job service, waits for it to end and then stops Prism, so no Prism process outlives the run;
the run then ends as any interrupted run (exit 130 or 143 and one line).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

from liveagg.errors import COMMAND_LINE, ViewError
from liveagg.settings import PrismSettings

TERMINAL = frozenset({"DONE", "FAILED", "CANCELLED", "UPDATED", "DRAINED"})
"""Beam's terminal job states (``PipelineState.is_terminal``)."""
_CANCEL_TIMEOUT_S = 60.0
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0
NO_SPLITS = "prism_disable_sdf_split"
"""Prism's experiment that turns off the splits it asks of bundles in flight
(``internal/execute.go``: ``if expStr == "prism_disable_sdf_split" { config.EnableSDFSplit =
false }``, which every stage's ``sdfSplittable`` follows). Prism 2.77 mishandles the split of a
bundle that holds timers as well as elements, which the window operator's bundles do: it counts
the SDK's first residual element among the bundle's elements *and timers*
(``internal/engine/elementmanager.go``, ``splitBundle``: ``res := es.es[firstResidual:]``),
while the SDK counts elements only (``bundle_processor.py``, ``DataInputOperation``: ``index``
moves in ``process_encoded`` alone; timers come through ``process_timer``). With timers ahead
of the elements in the bundle, elements the SDK has already processed are queued again, and
the window operator counts their messages twice (docs/runners.md)."""
_PRISM_LOGGER = logging.getLogger("PrismRunner")  # the name Beam gives Prism's records
_SDK_WORKER_LOGGER = logging.getLogger("apache_beam.runners.worker.sdk_worker")
_NOT_FINALIZABLE = "Bundle is not in a finalizable state"
_WORKER_LOGGERS = ("apache_beam.runners.worker", "SdkWorker")
_WORKER_SOURCE = "apache_beam/runners/worker/"
_BEAM_RUNNERS = f"apache_beam{os.sep}runners{os.sep}"
_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrismProfile(PrismSettings):
    """What ``--runner prism`` and its flags mean, over :class:`PrismSettings`
    (``LIVEAGG_PRISM_LOCATION``)."""

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
        args = ["--runner=PrismRunner", "--prism_log_level=warn", f"--experiments={NO_SPLITS}"]
        if self.location:
            args.append(f"--prism_location={self.location}")
        return args


@contextlib.contextmanager
def serve(options: PipelineOptions) -> Iterator[None]:
    """Prism as the job server of the pipeline run inside the block, in a session of its own.

    PrismRunner would start Prism in liveagg's process group and make SIGINT stop it
    (``job_server.py``, ``StopOnExitJobServer.start``: ``signal.signal(signal.SIGINT,
    self._sigint_handler)``). A terminal's Ctrl-C would then kill Prism at once, before the job
    is cancelled, and each gRPC stream of the SDK worker running in this process would break
    with a traceback on stderr. Here the command line and binary are Beam's own
    (``PrismJobServer.subprocess_cmd_and_endpoint``), the pipeline is pointed at it with
    ``job_endpoint`` (``PortableRunner.create_job_service``), and Prism is stopped when the
    block ends, after :func:`supervise` has seen the job end. A ``job_endpoint`` already in
    the options (a Prism the user runs) is used as it is.

    Prism finalizes every bundle of a stage whose input is consumed by a transform that asks
    for a finalizer (``internal/preprocess.go``, ``finalizeStage``: ``case
    urns.TransformParDo, urns.TransformProcessSizedElements, urns.TransformPairWithRestriction,
    urns.TransformSplitAndSize, urns.TransformTruncate`` ... ``if
    pardo.GetRequestsFinalization() { stg.finalize = true }``), so also a stage that starts
    with the Kafka read's PairWithRestriction, whose SDK operation never registers a callback.
    The SDK releases such a bundle at once (``sdk_worker.py``, ``process_bundle``: "Don't
    release here if finalize is needed") and answers the FinalizeBundle with ``RuntimeError:
    Bundle is not in a finalizable state``, printed with its traceback and logged at ERROR;
    Prism ignores the answer (``internal/worker/bundle.go``, ``Finalize``: ``return
    resp.GetFinalizeBundle(), nil``). That one error goes to the DEBUG log.
    """
    portable = options.view_as(PortableOptions)
    if portable.job_endpoint:
        yield
        return
    server = _PrismProcess.start(options)
    portable.job_endpoint = server.endpoint
    stderr = sys.stderr
    quiet = _quiet_stderr()
    _SDK_WORKER_LOGGER.addFilter(_NOT_FINALIZABLE_TO_DEBUG)
    try:
        yield
    finally:
        portable.job_endpoint = None
        server.stop()
        _SDK_WORKER_LOGGER.removeFilter(_NOT_FINALIZABLE_TO_DEBUG)
        if sys.stderr is quiet and not quiet.after_cancel:  # else worker threads may print
            sys.stderr = stderr


class _PrismProcess:
    """A Prism job server process and the thread that logs what it prints."""

    def __init__(self, proc: subprocess.Popen, endpoint: str) -> None:
        self.proc = proc
        self.endpoint = endpoint
        self._output: list[str] = []  # the last lines, for a start that fails
        self._logger = threading.Thread(target=self._log_output, name="prism-output", daemon=True)
        self._logger.start()

    @classmethod
    def start(cls, options: PipelineOptions) -> _PrismProcess:
        from apache_beam.runners.portability.prism_runner import PrismJobServer

        try:  # Beam downloads its release's binary here when no location is given
            cmd, endpoint = PrismJobServer(options).subprocess_cmd_and_endpoint()
        except RuntimeError as e:
            raise _no_binary(e) from None
        proc = subprocess.Popen(
            [str(arg) for arg in cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C is liveagg's to handle
        )
        server = cls(proc, endpoint)
        try:
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self) -> None:
        import grpc

        deadline = time.monotonic() + _START_TIMEOUT_S
        with grpc.insecure_channel(self.endpoint) as channel:
            ready = grpc.channel_ready_future(channel)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"Prism exited with code {self.proc.returncode} before it served jobs: "
                        + " | ".join(self._output[-5:])
                    )
                try:
                    ready.result(timeout=0.2)
                    return
                except grpc.FutureTimeoutError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"Prism did not serve jobs at {self.endpoint} within "
                            f"{_START_TIMEOUT_S:.0f} s"
                        ) from None

    def _log_output(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="backslashreplace").rstrip()
            self._output = [*self._output[-9:], line]
            level, text = prism_record(line)
            _PRISM_LOGGER.log(level, "%s", text)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if Prism has not exited after a while."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logger.join(_STOP_TIMEOUT_S)


def prism_record(line: str) -> tuple[int, str]:
    """The logging level and text of a line Prism prints with ``--log_kind json``.

    Prism's slog levels are DEBUG, INFO, WARN and ERROR, possibly with an offset (``ERROR+2``);
    anything else is an INFO line as printed.
    """
    try:
        record = orjson.loads(line)
        level_text = str(record["level"])
        message = str(record["msg"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return logging.INFO, line
    if message == "log from SDK worker":  # the SDK worker's own log, already logged here
        return logging.DEBUG, str(record.get("sdk", {}).get("msg", line))
    found = re.fullmatch(r"([A-Z]+)([+-]\d+)?", level_text)
    base = found[1] if found else "INFO"
    level = {"WARN": logging.WARNING}.get(base, getattr(logging, base, logging.INFO))
    level += int(found[2]) if found and found[2] else 0
    extras = [
        f"{k}={v!r}" for k, v in record.items() if k not in ("level", "msg", "time", "source")
    ]
    return level, f"{message} ({', '.join(extras)})" if extras else message


def _no_binary(error: RuntimeError) -> Exception:
    """What to do when Beam cannot get Prism.

    Without ``--prism-location`` Beam downloads its release's binary from GitHub and raises
    ``RuntimeError('Unable to fetch remote prism binary at <url>: <reason>')`` where it cannot
    (``prism_runner.py``, ``_download_to_local_path``).
    """
    if not str(error).startswith("Unable to fetch remote prism binary"):
        return error
    return ViewError(
        COMMAND_LINE,
        "$.prism_location",
        f"--runner prism: {error}. Give --prism-location a Prism binary (or set "
        "LIVEAGG_PRISM_LOCATION): `python -m integration.services.prism` builds one with Go, "
        "as does `go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<Beam version>`",
    )


def supervise(result: Any) -> str:
    """Wait for the job and return its final state.

    The job's metrics are fetched before returning: the summary reads them after :func:`serve`
    has stopped Prism. Ctrl-C and SIGTERM reach here as ``KeyboardInterrupt``, raised by the
    run's signal handler (``pipelines/run.py``, ``_remember_signals``): the job is cancelled
    through the job service and waited for, and the interrupt goes on, so that the run ends as
    every interrupted run does (exit 130 or 143, one line).
    """
    try:
        result.wait_until_finish()
        result.metrics()  # PortableRunner's PipelineResult keeps them
        return _state(result)
    except KeyboardInterrupt:
        _quiet_cancelled_bundles()
        _cancel(result)
        raise


def _cancel(result: Any) -> None:
    """Cancel the job and wait until it has ended, or until Prism is gone (a job server the
    user runs, stopped by the same Ctrl-C)."""
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
    of each instruction that the shutdown cut short (``sdk_worker.py``, ``_execute``). Prism
    does not stop that worker when the job is cancelled, so stopping Prism afterwards breaks
    the worker's gRPC streams, and their threads end with an exception (``read_state``,
    ``sdk_worker.py``, ``pull_responses``) that ``threading.excepthook`` would print. Those
    are the expected end of a cancelled job, not errors of the run; they go to the DEBUG log.
    """
    quiet = _DropAfterCancel()
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)
    _quiet_stderr().after_cancel = True
    if not getattr(threading.excepthook, "quiets_beam", False):
        threading.excepthook = _quiet_beam_threads(threading.excepthook)


def _quiet_stderr() -> _WorkerTracebacksToDebug:
    """``sys.stderr``, wrapped in :class:`_WorkerTracebacksToDebug` if it is not yet."""
    if not isinstance(sys.stderr, _WorkerTracebacksToDebug):
        sys.stderr = _WorkerTracebacksToDebug(sys.stderr)
    return sys.stderr


def _quiet_beam_threads(previous: Any) -> Any:
    """``threading.excepthook`` that logs at DEBUG the exceptions of threads that Beam's
    runner code raised, and hands the others to ``previous``."""

    def hook(args: Any) -> None:
        tb = args.exc_traceback
        while tb is not None and _BEAM_RUNNERS not in tb.tb_frame.f_code.co_filename:
            tb = tb.tb_next
        if tb is None:
            previous(args)
            return
        name = args.thread.name if args.thread is not None else "?"
        _LOGGER.debug("after cancel: thread %s: %r", name, args.exc_value)

    hook.quiets_beam = True  # type: ignore[attr-defined]
    return hook


class _DropAfterCancel(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        worker = name in ("PrismRunner", "PrismJobServer") or name.startswith(_WORKER_LOGGERS)
        if worker and record.levelno > logging.DEBUG:
            _LOGGER.debug("after cancel: %s: %s", name, record.getMessage())
            return False
        return True


class _NotFinalizableToDebug(logging.Filter):
    """The SDK worker's ERROR for a FinalizeBundle that Prism sends needlessly (see
    :func:`serve`), at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _NOT_FINALIZABLE in record.getMessage():
            _LOGGER.debug("needless FinalizeBundle: %s", record.getMessage())
            return False
        return True


_NOT_FINALIZABLE_TO_DEBUG = _NotFinalizableToDebug()


class _WorkerTracebacksToDebug(io.TextIOBase):
    """``sys.stderr`` without the tracebacks the SDK worker prints for failed instructions
    (``sdk_worker.py``, ``_execute``: ``print(traceback_string, file=sys.stderr)``): those of
    a needless FinalizeBundle (see :func:`serve`) and, once the job is cancelled, all."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.after_cancel = False
        self._dropped = False

    def write(self, text: str) -> int:
        worker = text.startswith("Traceback (most recent call last):") and _WORKER_SOURCE in text
        if worker and (self.after_cancel or _NOT_FINALIZABLE in text):
            _LOGGER.debug("SDK worker: %s", text)
            self._dropped = True
            return len(text)
        if self._dropped and text == "\n":  # print()'s end of the dropped traceback
            self._dropped = False
            return len(text)
        self._dropped = False
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _state(result: Any) -> str:
    state = result.state
    return str(getattr(state, "name", state)).upper()
