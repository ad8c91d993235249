"""The harness's Beam worker pool logs the runner's hang-up at INFO, and other errors as Beam does.

The errors come from a real gRPC server that ends calls the way Beam's Flink runner ends an
SDK worker's streams (``FnApiControlClient.close``: CANCELLED, "Runner closed connection";
``BeamFnDataGrpcMultiplexer.close``: CANCELLED, "Multiplexer hanging up"), and the SDK
worker and its data plane are Beam's, run in a process of their own.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2

from integration.services._beam_worker_pool import RunnerHangUp, WorkerPool, hang_up

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
    assert (record.levelno, record.levelname, record.exc_info) == (logging.INFO, "INFO", None)
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


def test_only_the_data_planes_read_error_is_rewritten(call_ending_with: Call) -> None:
    """The same hang-up logged by another line of Beam's data plane is left as it is."""
    error = call_ending_with(grpc.StatusCode.CANCELLED, "Multiplexer hanging up")
    record = logging.LogRecord(
        "apache_beam.runners.worker.data_plane",
        logging.ERROR,
        "data_plane.py",
        1,
        "Other.",
        (),
        (type(error), error, None),
    )
    assert RunnerHangUp().filter(record)
    assert (record.levelname, record.getMessage()) == ("ERROR", "Other.")


class _HangingUp(
    beam_fn_api_pb2_grpc.BeamFnControlServicer, beam_fn_api_pb2_grpc.BeamFnDataServicer
):
    """A runner whose control and data streams end at once with ``ending`` (code, details)."""

    def __init__(self, ending: tuple[grpc.StatusCode, str]) -> None:
        self.ending = ending

    def Control(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        context.abort(*self.ending)
        yield from ()

    def Data(self, elements: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        context.abort(*self.ending)
        yield from ()


@pytest.fixture
def runner() -> Iterator[Callable[[grpc.StatusCode, str], str]]:
    """Starts a hanging-up runner; returns its address."""
    servers: list[grpc.Server] = []

    def start(code: grpc.StatusCode, details: str) -> str:
        servicer = _HangingUp((code, details))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(servicer, server)
        beam_fn_api_pb2_grpc.add_BeamFnDataServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def _worker(address: str) -> subprocess.CompletedProcess[str]:
    """An SDK worker as the pool starts it, connected to ``address`` as its control endpoint."""
    command = [sys.executable, "-m", "integration.services._beam_worker_pool", "--worker"]
    command += [f"--control={address}", "--worker-id=w1"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_a_worker_ends_quietly_when_the_runner_closes_the_control_stream(runner: Any) -> None:
    done = _worker(runner(grpc.StatusCode.CANCELLED, "Runner closed connection"))
    assert done.returncode == 0, done.stderr
    assert "INFO liveagg.worker_pool SDK worker w1: the runner closed the control stream " in (
        done.stderr
    )
    assert "ERROR" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_worker_whose_runner_crashed_fails_as_beams_does(runner: Any) -> None:
    done = _worker(runner(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" in done.stderr and "Socket closed" in done.stderr, done.stderr


_DATA_PLANE = """
import logging, sys, threading
import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.data_plane import GrpcClientDataChannel
from integration.services._beam_worker_pool import quiet_hang_ups
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s", force=True)
quiet_hang_ups()
GrpcClientDataChannel(beam_fn_api_pb2_grpc.BeamFnDataStub(grpc.insecure_channel(sys.argv[1])))
for thread in threading.enumerate():
    if thread.name == "read_grpc_client_inputs":
        thread.join(60)
"""


@pytest.mark.parametrize(
    "code, details, quiet",
    [
        (grpc.StatusCode.CANCELLED, "Multiplexer hanging up", True),
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", False),
    ],
)
def test_beams_data_plane_reader_is_quiet_about_the_hang_up_only(
    runner: Any, code: grpc.StatusCode, details: str, quiet: bool
) -> None:
    """Beam's data plane reader logs what ended its stream and re-raises it in its thread."""
    address = runner(code, details)
    done = subprocess.run(
        [sys.executable, "-c", _DATA_PLANE, address], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    if quiet:
        line = "INFO apache_beam.runners.worker.data_plane the runner closed the data stream "
        assert line + "(Multiplexer hanging up)" in done.stderr, done.stderr
        assert "ERROR" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    else:
        assert "ERROR apache_beam.runners.worker.data_plane Failed to read inputs" in done.stderr
        assert "Exception in thread read_grpc_client_inputs" in done.stderr, done.stderr


def test_the_pool_starts_each_worker_with_its_state_cache(
    runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's state cache size reaches each SDK worker it starts (Beam's pool passes it to
    ``SdkHarness``; a pool that started workers without it would leave their cache off)."""
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    pool = WorkerPool(use_process=True, data_buffer_time_limit_ms=-1, state_cache_size=256 << 20)
    address = runner(grpc.StatusCode.CANCELLED, "Runner closed connection")
    request = beam_fn_api_pb2.StartWorkerRequest(
        worker_id="w7", control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=address)
    )
    assert pool.StartWorker(request, None).error == ""
    worker = pool._worker_processes["w7"]
    assert worker.wait(120) == 0  # it ran, and the runner hung up
    assert f"--state-cache-size={256 << 20}" in worker.args
    assert f"--control={address}" in worker.args
