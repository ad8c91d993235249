"""The harness's process handling, on small stand-in services that need nothing installed.

These run in a scratch cache folder and on free ports, so they neither need nor disturb the
real services (which ``test_services.py`` covers).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration import pytest_plugin, services
from integration.services import _maven, flink
from integration.services._core import (
    HOST,
    PrerequisiteError,
    Service,
    ServiceError,
    http_get,
    pid_alive,
)
from tests.support.waiting import eventually


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _HttpServer(Service):
    """``python -m http.server`` standing in for a service with an HTTP health check."""

    name = "fakehttp"
    port_settings = (("http", "LIVEAGG_FAKEHTTP_PORT", 1),)
    default_start_timeout_s = 20.0
    stop_timeout_s = 5.0

    def connection(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", "--bind", HOST, str(self.client_port)]

    def health(self) -> str:
        if b"Directory listing" not in http_get(self.connection() + "/", timeout_s=0.5):
            raise ServiceError("not a directory listing")
        return "lists a directory"


class _Crashes(_HttpServer):
    name = "fakecrash"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"]


class _NeverHealthy(_HttpServer):
    name = "fakehang"

    def command(self) -> list[str]:
        code = "import os, time; print(f'hanging pid={os.getpid()}', flush=True); time.sleep(60)"
        return [sys.executable, "-c", code]


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A scratch cache folder and a free port for the stand-in services."""
    port = _free_port()
    monkeypatch.setenv("LIVEAGG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LIVEAGG_FAKEHTTP_PORT", str(port))
    monkeypatch.setitem(services._SERVICES, "fakehttp", _HttpServer)
    # Keep the session's real services (started by fixtures) out of stop_started() here.
    monkeypatch.setattr(services, "_started", {})
    yield port
    record = _HttpServer().live_record()
    if record is not None:  # a failed test must not leave its server behind
        _HttpServer().stop()


def _spawn_foreign_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", HOST, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def serving() -> None:
        assert _HttpServer().healthy()[0], "not serving yet"

    eventually(serving, what="the stand-in server", timeout_s=60, every_s=0.1)
    return proc


def test_start_reuse_status_stop(scratch: int) -> None:
    service = _HttpServer()
    first = service.ensure()
    assert first.started_here
    assert first.pid is not None and pid_alive(first.pid)
    assert first.ports == {"http": scratch}
    assert service.pid_file.exists()

    second = service.ensure()
    assert not second.started_here
    assert second.pid == first.pid

    assert service.status().startswith(f"running  pid={first.pid} http={scratch}")
    assert service.stop().startswith(f"stopped (pid {first.pid})")
    assert not pid_alive(first.pid)
    assert not service.pid_file.exists()
    assert service.status() == f"stopped  http={scratch}"
    assert service.stop() == "not running"


def test_release_stops_only_what_this_call_started(scratch: int) -> None:
    started = services.ensure("fakehttp")
    reused = services.ensure("fakehttp")
    assert services.release(reused) == "not started here: left running"
    assert started.pid is not None and pid_alive(started.pid)
    assert services.release(started).startswith("stopped")
    assert not pid_alive(started.pid)


def test_stop_started_stops_what_ensure_started(scratch: int) -> None:
    handle = services.ensure("fakehttp")
    results = services.stop_started()
    assert list(results) == ["fakehttp"]
    assert results["fakehttp"].startswith("stopped")
    assert handle.pid is not None and not pid_alive(handle.pid)
    assert services.stop_started() == {}


def test_a_crash_while_starting_reports_the_log_tail(scratch: int) -> None:
    service = _Crashes()
    with pytest.raises(ServiceError, match=r"(?s)exited with code 3 while starting.*boom: bad"):
        service.ensure()
    assert not service.pid_file.exists()


def test_a_start_timeout_kills_the_process(scratch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAGG_START_TIMEOUT_S", "2")
    service = _NeverHealthy()
    with pytest.raises(ServiceError, match=r"(?s)not healthy after 2 s.*hanging pid=") as info:
        service.ensure()
    pid = int(str(info.value).rsplit("hanging pid=", 1)[1].split()[0])
    assert not pid_alive(pid)
    assert not service.pid_file.exists()


def test_a_port_taken_by_something_else_is_an_error(scratch: int) -> None:
    with socket.socket() as listener:
        listener.bind((HOST, scratch))
        listener.listen()
        with pytest.raises(ServiceError, match=r"port\(s\) http=\d+ .* not a healthy fakehttp"):
            _HttpServer().ensure()


def test_a_foreign_healthy_service_is_reused_and_never_stopped(scratch: int) -> None:
    proc = _spawn_foreign_server(scratch)
    try:
        handle = _HttpServer().ensure()
        assert not handle.started_here
        assert handle.pid is None
        assert _HttpServer().status().startswith("running (not started by the harness)")
        assert "left running" in _HttpServer().stop()
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_stale_pid_file_is_dropped(scratch: int) -> None:
    service = _HttpServer()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    service.run_dir.mkdir(parents=True)
    service.pid_file.write_text(f'{{"pid": {dead.pid}, "ports": {{"http": {scratch}}}}}')
    assert service.status() == f"stopped  http={scratch}"
    assert not service.pid_file.exists()


def test_a_pid_file_of_a_reused_pid_is_not_trusted(scratch: int) -> None:
    """A live pid whose start time differs is another process: never signal it."""
    service = _HttpServer()
    service.run_dir.mkdir(parents=True)
    record = f'{{"pid": {os.getpid()}, "start_ticks": 1, "ports": {{"http": {scratch}}}}}'
    service.pid_file.write_text(record)
    assert service.stop() == "not running"
    assert pid_alive(os.getpid())


def test_ports_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAGG_KAFKA_PORT", "29092")
    assert services.connection("kafka").bootstrap_servers == "127.0.0.1:29092"
    monkeypatch.setenv("LIVEAGG_S3_PORT", "abc")
    with pytest.raises(ServiceError, match="LIVEAGG_S3_PORT='abc' is not an integer"):
        services.connection("s3")


def test_flink_taskmanagers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def taskmanagers(**kwargs: bool) -> list[str]:
        parts = flink.Flink.parts(**kwargs)
        return [p.name for p in parts if p.name.startswith("flink-taskmanager")]

    monkeypatch.delenv("LIVEAGG_FLINK_TASKMANAGERS", raising=False)
    assert taskmanagers() == ["flink-taskmanager-0", "flink-taskmanager-1"]
    monkeypatch.setenv("LIVEAGG_FLINK_TASKMANAGERS", "1")
    assert taskmanagers() == ["flink-taskmanager-0"]
    # Stopping still covers a TaskManager that a start with two left running.
    assert taskmanagers(every_taskmanager=True) == ["flink-taskmanager-0", "flink-taskmanager-1"]
    for wrong in ("0", "3"):
        monkeypatch.setenv("LIVEAGG_FLINK_TASKMANAGERS", wrong)
        with pytest.raises(ServiceError, match=f"LIVEAGG_FLINK_TASKMANAGERS={wrong}: .* 1 to 2"):
            flink.taskmanager_count()


def test_unknown_service_lists_the_known_ones() -> None:
    with pytest.raises(ServiceError, match="unknown service 'redis'; known: kafka, cassandra"):
        services.get("redis")


def test_jar_marker_follows_the_pom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAGG_CACHE_DIR", str(tmp_path))
    assert not _maven.jars_ready("kafka")
    jars = _maven.jar_dir("kafka")
    jars.mkdir(parents=True)
    (jars / _maven.MARKER).write_text(_maven._pom_hash(_maven.pom_path("kafka")))
    assert _maven.jars_ready("kafka")
    (jars / _maven.MARKER).write_text("hash of an older pom")
    assert not _maven.jars_ready("kafka")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "integration.services", *args],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_status_and_errors(tmp_path: Path) -> None:
    env = {**os.environ, "LIVEAGG_CACHE_DIR": str(tmp_path)}
    for name in services.NAMES:
        for _, var, _ in services.get(name).port_settings:
            env[var] = str(_free_port())
    result = _cli("status", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        [name, "stopped"] for name in ("kafka", "cassandra", "s3", "gcs", "flink", "spark")
    ]
    result = _cli("stop", "s3", env=env)
    assert result.stdout.split() == ["s3", "not", "running"]
    result = _cli("start", "redis", env=env)
    assert result.returncode == 2
    assert "unknown service(s) redis; known: kafka, cassandra, s3, gcs" in result.stderr


class _ClientMissing(_HttpServer):
    name = "fakeclient"

    def health(self) -> str:
        raise PrerequisiteError("the fakeclient health check needs pip install fake-client")


def test_a_missing_client_library_is_a_prerequisite_error(scratch: int) -> None:
    proc = _spawn_foreign_server(scratch)
    try:
        with pytest.raises(PrerequisiteError, match="pip install fake-client"):
            _ClientMissing().ensure()
        assert "health unknown: the fakeclient health check" in _ClientMissing().status()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_fixtures_skip_or_fail_on_a_missing_prerequisite(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> services.ServiceHandle:
        raise PrerequisiteError("java not found")

    monkeypatch.setattr(services, "ensure", missing)
    monkeypatch.delenv("LIVEAGG_INTEGRATION_STRICT", raising=False)
    with pytest.raises(pytest.skip.Exception, match="kafka: java not found"):
        pytest_plugin.ensure_or_skip("kafka")
    monkeypatch.setenv("LIVEAGG_INTEGRATION_STRICT", "1")
    with pytest.raises(pytest.fail.Exception, match="kafka: java not found"):
        pytest_plugin.ensure_or_skip("kafka")
