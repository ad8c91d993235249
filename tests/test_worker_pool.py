"""The harness's Beam worker pool logs the runner's hang-up at INFO, and other errors as Beam does.

The errors come from a real gRPC server that ends calls the way Beam's Flink runner ends an
SDK worker's streams (``BeamFnDataGrpcMultiplexer.close``: CANCELLED, "Multiplexer hanging up").
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from integration.services._beam_worker_pool import RunnerHangUp, hang_up

Call = Callable[[grpc.StatusCode, str], grpc.RpcError]


@pytest.fixture
def call_ending_with() -> Iterator[Call]:
    """A function that makes a real gRPC call which the server ends with (code, details)."""
    ending: dict[str, tuple[grpc.StatusCode, str]] = {}

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        code, details = ending["now"]
        context.abort(code, details)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    method = grpc.unary_unary_rpc_method_handler(handle)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", {"M": method})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])

    def call(code: grpc.StatusCode, details: str) -> grpc.RpcError:
        ending["now"] = (code, details)
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary("/t.T/M")(b"", timeout=10)
        return raised.value

    yield call
    channel.close()
    server.stop(None)


def _logged(error: BaseException) -> logging.LogRecord:
    """The record Beam's data plane logs (``_LOGGER.exception``) for ``error``."""
    logger = logging.getLogger("apache_beam.runners.worker.data_plane")
    try:
        raise error
    except BaseException:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            "data_plane.py",
            771,
            "Failed to read inputs in the data plane.",
            (),
            sys.exc_info(),
        )
    assert RunnerHangUp().filter(record)
    return record


def test_the_runners_hang_up_is_info(call_ending_with: Call) -> None:
    error = call_ending_with(grpc.StatusCode.CANCELLED, "Multiplexer hanging up")
    assert hang_up(error) == "Multiplexer hanging up"
    record = _logged(error)
    assert (record.levelname, record.exc_info) == ("INFO", None)
    assert record.getMessage() == "the runner closed the data stream (Multiplexer hanging up)"
    control = call_ending_with(grpc.StatusCode.CANCELLED, "Runner closed connection")
    assert hang_up(control) == "Runner closed connection"


def test_other_endings_stay_errors(call_ending_with: Call) -> None:
    for code, details in [
        (grpc.StatusCode.UNAVAILABLE, "Socket closed"),  # a runner that crashed
        (grpc.StatusCode.CANCELLED, "Cancelled by a user"),
    ]:
        error = call_ending_with(code, details)
        assert hang_up(error) is None
        record = _logged(error)
        assert record.levelname == "ERROR" and record.exc_info is not None
    assert hang_up(RuntimeError("Multiplexer hanging up")) is None
