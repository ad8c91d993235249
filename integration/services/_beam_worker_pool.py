"""Beam's Python worker pool for EXTERNAL environments, listening on one address only.

``python -m apache_beam.runners.worker.worker_pool_main`` binds every interface, and whoever
reaches a worker pool can make it run code; this serves the same servicer, in the same
subprocess mode, on ``--host`` (127.0.0.1). Each SDK worker is a ``python -c ...`` child, so
``python`` on the PATH must be an interpreter with apache-beam and liveagg installed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor

_LOGGER = logging.getLogger("liveagg.worker_pool")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--state-cache-mb",
        type=int,
        default=256,
        help="each SDK worker's user-state cache (0: off, the servicer's default)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    # What BeamFnExternalWorkerPoolServicer.start() does, but bound to one address.
    server = grpc.server(
        thread_pool_executor.shared_unbounded_instance(),
        options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)],
    )
    # The servicer's state_cache_size defaults to 0, which turns the SDK workers' user-state
    # cache off (worker_pool_main.py: BeamFnExternalWorkerPoolServicer(..., state_cache_size=0)
    # and "SdkHarness(..., state_cache_size=%d, ...)" for each worker it starts); the
    # pipeline's --max_cache_memory_usage_mb does not reach workers started this way.
    servicer = BeamFnExternalWorkerPoolServicer(
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
