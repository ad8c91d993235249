"""Beam's Python worker pool for EXTERNAL environments, listening on one address only.

``python -m apache_beam.runners.worker.worker_pool_main`` binds every interface, and whoever
reaches a worker pool can make it run code; this serves the same servicer, in the same
subprocess mode, on ``--host`` (127.0.0.1). Each SDK worker is a ``python -m`` child of this
module (``--worker``), so ``python`` on the PATH must be an interpreter with apache-beam and
liveagg installed.

The workers run Beam's ``SdkHarness`` as Beam's own pool starts it, with one difference: the
runner's normal hang-up is not logged as an error. When a job ends, is cancelled or stopped
with a savepoint, Beam's Flink runner closes each SDK worker's streams with gRPC CANCELLED:
the control stream with "Runner closed connection" (``FnApiControlClient.close``) and the
data stream with "Multiplexer hanging up" (``BeamFnDataGrpcMultiplexer.close``). The SDK
harness then logs ``ERROR ... Failed to read inputs in the data plane`` with a traceback
(``data_plane.py``, ``_read_inputs``: it logs any exception of a stream it has not closed
itself) and ``SdkHarness.run`` dies of the control stream's exception. Exactly those two
CANCELLED endings are logged here at INFO; any other error (a runner that crashed ends the
streams with UNAVAILABLE, say) is logged as Beam logs it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor

_LOGGER = logging.getLogger("liveagg.worker_pool")
_MODULE = "integration.services._beam_worker_pool"  # run as -m: __name__ is __main__

#: How Beam's Flink runner closes an SDK worker's streams when a job ends (module doc).
RUNNER_HANG_UPS = ("Runner closed connection", "Multiplexer hanging up")


def hang_up(error: BaseException | None) -> str | None:
    """The runner's hang-up message if ``error`` is the runner closing a stream, else None."""
    if not isinstance(error, grpc.RpcError):
        return None
    try:
        code, details = error.code(), error.details()  # type: ignore[attr-defined]
    except Exception:  # an RpcError that is not a call outcome
        return None
    if code == grpc.StatusCode.CANCELLED and details in RUNNER_HANG_UPS:
        return str(details)
    return None


class RunnerHangUp(logging.Filter):
    """Turns the data plane's ERROR about the runner's hang-up into an INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        details = hang_up(error)
        if details and record.getMessage().startswith("Failed to read inputs in the data plane"):
            record.msg, record.args = "the runner closed the data stream (%s)", (details,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


class WorkerPool(BeamFnExternalWorkerPoolServicer):
    """Beam's servicer, starting each SDK worker through :func:`run_worker`."""

    def StartWorker(
        self, start_worker_request: beam_fn_api_pb2.StartWorkerRequest, unused_context: Any
    ) -> beam_fn_api_pb2.StartWorkerResponse:
        request = start_worker_request
        command = [
            "python",
            "-m",
            _MODULE,
            "--worker",
            f"--control={request.control_endpoint.url}",
            f"--worker-id={request.worker_id}",
            f"--state-cache-size={self._state_cache_size}",
            f"--data-buffer-time-limit-ms={self._data_buffer_time_limit_ms}",
        ]
        try:
            _LOGGER.info("starting SDK worker %s", request.worker_id)
            self._worker_processes[request.worker_id] = subprocess.Popen(command, close_fds=True)
        except Exception:
            return beam_fn_api_pb2.StartWorkerResponse(error=traceback.format_exc())
        return beam_fn_api_pb2.StartWorkerResponse()


def quiet_hang_ups() -> None:
    """In this process, the data plane's reader logs the runner's hang-up at INFO, and the
    exception it then re-raises (``data_plane.py``, ``_read_inputs``) ends its thread quietly."""
    logging.getLogger("apache_beam.runners.worker.data_plane").addFilter(RunnerHangUp())
    default_hook = threading.excepthook

    def thread_died(args: Any) -> None:
        if hang_up(args.exc_value) is None:
            default_hook(args)

    threading.excepthook = thread_died


def run_worker(control: str, worker_id: str, state_cache_size: int, buffer_ms: int) -> int:
    """One SDK worker, as Beam's pool runs it, quiet about the runner's hang-up."""
    from apache_beam.runners.worker.sdk_worker import SdkHarness

    quiet_hang_ups()
    harness = SdkHarness(
        control,
        worker_id=worker_id,
        state_cache_size=state_cache_size,
        data_buffer_time_limit_ms=buffer_ms,
    )
    try:
        harness.run()
    except grpc.RpcError as e:
        details = hang_up(e)
        if details is None:
            raise
        _LOGGER.info("SDK worker %s: the runner closed the control stream (%s)", worker_id, details)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument(
        "--state-cache-mb",
        type=int,
        default=256,
        help="each SDK worker's user-state cache (0: off, the servicer's default)",
    )
    parser.add_argument("--worker", action="store_true", help="run one SDK worker (the pool's)")
    parser.add_argument("--control")
    parser.add_argument("--worker-id")
    parser.add_argument("--state-cache-size", type=int, default=0, help="bytes, from the pool")
    parser.add_argument("--data-buffer-time-limit-ms", type=int, default=-1)
    args = parser.parse_args(argv)
    # The pool says what it does at INFO; a worker, like Beam's, only warnings and errors
    # (and the hang-ups it turns into INFO lines).
    # force: importing Beam logged a warning through the root logger, which configured it.
    level = logging.WARNING if args.worker else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True
    )
    _LOGGER.setLevel(logging.INFO)
    if args.worker:
        return run_worker(
            args.control, args.worker_id, args.state_cache_size, args.data_buffer_time_limit_ms
        )
    if args.port is None:
        parser.error("--port is required")

    # What BeamFnExternalWorkerPoolServicer.start() does, but bound to one address.
    server = grpc.server(
        thread_pool_executor.shared_unbounded_instance(),
        options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)],
    )
    # The servicer's state_cache_size defaults to 0, which turns the SDK workers' user-state
    # cache off (worker_pool_main.py: BeamFnExternalWorkerPoolServicer(..., state_cache_size=0)
    # and "SdkHarness(..., state_cache_size=%d, ...)" for each worker it starts); the
    # pipeline's --max_cache_memory_usage_mb does not reach workers started this way. The
    # pool hands its size to each worker it starts (WorkerPool.StartWorker).
    servicer = WorkerPool(
        use_process=True, data_buffer_time_limit_ms=-1, state_cache_size=args.state_cache_mb << 20
    )
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(servicer, server)
    address = f"{args.host}:{args.port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        bound, reason = 0, str(e)
    else:
        reason = "bind failed"
    if bound == 0:
        _LOGGER.error("cannot listen on %s: %s", address, reason)
        return 1
    server.start()
    _LOGGER.info("Beam worker pool listening on %s:%d", args.host, bound)

    def _stop(signum: int, frame: FrameType | None) -> None:
        # The SDK workers share this process group, so the signal reached them too.
        server.stop(grace=None)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
