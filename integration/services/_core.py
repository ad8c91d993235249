"""Process plumbing shared by every service: paths, pid files, ports, start and stop.

Everything here uses the standard library only, so ``status`` and ``stop`` work even where the
client libraries of a service are not installed.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

HOST = "127.0.0.1"
"""Every service binds the loopback address only."""

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES = 50
_POLL_INTERVAL_S = 0.25


class ServiceError(RuntimeError):
    """A service could not be prepared, started, checked or stopped."""


class PrerequisiteError(ServiceError):
    """Something the harness needs is not installed (Java, Maven, a Python package)."""


def cache_dir() -> Path:
    """Root of downloads, jars and run folders; ``LIVEAGG_CACHE_DIR`` overrides ``<repo>/.cache``.

    Read on every call (not at import) so tests can point one service at a scratch folder.
    """
    override = os.environ.get("LIVEAGG_CACHE_DIR")
    return Path(override).resolve() if override else REPO_ROOT / ".cache"


def env_int(name: str, default: int) -> int:
    """An integer setting from the environment, with an error that names the variable."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ServiceError(
            f"{name}={raw!r} is not an integer; unset it or give e.g. {default}"
        ) from None


def env_str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return raw if raw else default


def start_timeout_s(default_s: float) -> float:
    """``LIVEAGG_START_TIMEOUT_S`` overrides every service's own start timeout."""
    return float(env_int("LIVEAGG_START_TIMEOUT_S", int(default_s)))


def port_open(port: int, host: str = HOST, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_get(url: str, timeout_s: float = 3.0, limit: int = 65536) -> bytes:
    """GET a loopback URL, bypassing any HTTP proxy set in the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout_s) as response:
        return response.read(limit)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    if not path.exists():
        return f"(no log at {path})"
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` on the PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise PrerequisiteError(
            "java not found (needs Java 17+): set JAVA_HOME or "
            "apt-get install openjdk-17-jre-headless"
        )
    return found


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, held across processes until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- processes ------------------------------------------------------------------------------


def _proc_start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell pid reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our exited child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Services this process started, kept so they are reaped through their ``Popen`` (which
otherwise warns, when collected, that the child still runs)."""


def started_by_this_process(pid: int) -> bool:
    """True while ``pid`` is a service this process spawned and that still runs."""
    return pid in _CHILDREN and pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; zombies count as dead (and are reaped when they are ours)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "X")


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` from /proc, or None where that is not readable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group the harness created for ``pid`` (or ``pid`` alone)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def terminate(pid: int, timeout_s: float) -> bool:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns True when it had to kill."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return False
        time.sleep(_POLL_INTERVAL_S)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


@dataclass(frozen=True)
class PidRecord:
    """What the harness wrote when it started a service: enough to find and check it later."""

    pid: int
    start_ticks: int | None
    ports: Mapping[str, int]
    started_at: str
    command: Sequence[str]

    def alive(self) -> bool:
        """Still running, and the same process (not a later one that got the same pid)."""
        if not pid_alive(self.pid):
            return False
        return self.start_ticks is None or _proc_start_ticks(self.pid) == self.start_ticks


# --- services -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceHandle:
    """A running service as ``ensure()`` found or started it.

    Attributes:
        name: ``kafka``, ``cassandra``, ``s3`` or ``gcs``.
        connection: how clients reach it (``KafkaConnection``, ``CassandraConnection``, ...).
        ports: every port it listens on, by role.
        pid: the process id when the harness started it (in this or an earlier run); None
            for a healthy service on the port that the harness did not start.
        started_here: True only when this ``ensure()`` call started it, i.e. when the caller
            owns it and should stop it.
        log_file: where its output goes (when the harness runs it).
        startup_s: seconds from the start request to healthy, when this call started it.
    """

    name: str
    connection: Any
    ports: Mapping[str, int]
    pid: int | None
    started_here: bool
    log_file: Path | None = None
    startup_s: float | None = field(default=None, compare=False)


class Service(abc.ABC):
    """One kind of service: its configuration, command line and health check.

    Subclasses say what to run; this class owns the run folder, pid file, lock and log.
    """

    name: ClassVar[str]
    port_settings: ClassVar[tuple[tuple[str, str, int], ...]]
    """``(role, environment variable, default)`` per port; the first is the client port."""
    default_start_timeout_s: ClassVar[float] = 60.0
    stop_timeout_s: ClassVar[float] = 30.0

    @property
    def run_dir(self) -> Path:
        return cache_dir() / "run" / self.name

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def ports(self) -> dict[str, int]:
        """Ports by role, read from the environment on every call."""
        return {role: env_int(var, default) for role, var, default in self.port_settings}

    @property
    def client_port(self) -> int:
        return next(iter(self.ports().values()))

    @abc.abstractmethod
    def connection(self) -> Any:
        """Connection info for clients (host, port, credentials)."""

    @abc.abstractmethod
    def health(self) -> str:
        """Talk to the service through its own protocol; return a short description.

        Raises an exception when it does not answer as this kind of service should.
        """

    def check_prerequisites(self) -> None:  # noqa: B027 (optional hook)
        """Raise ``PrerequisiteError`` when the service cannot be run here."""

    def prepare(self) -> None:  # noqa: B027 (optional hook)
        """Fetch what is missing from the cache and write config files into ``run_dir``."""

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the service in the foreground."""

    def process_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def working_dir(self) -> Path:
        """Where the process runs; the run folder unless a service needs another."""
        return self.run_dir

    def log_files(self) -> dict[str, Path]:
        """Logs by process, for ``logs``; a service of several processes lists each."""
        return {self.name: self.log_file}

    def start_timeout_s(self) -> float:
        return start_timeout_s(self.default_start_timeout_s)

    # -- pid file ------------------------------------------------------------------------------

    def read_pid(self) -> PidRecord | None:
        try:
            data = json.loads(self.pid_file.read_text())
            return PidRecord(
                pid=int(data["pid"]),
                start_ticks=data.get("start_ticks"),
                ports={k: int(v) for k, v in data.get("ports", {}).items()},
                started_at=str(data.get("started_at", "")),
                command=list(data.get("command", [])),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_pid(self, pid: int, command: Sequence[str]) -> None:
        record = {
            "pid": pid,
            "start_ticks": _proc_start_ticks(pid),
            "ports": self.ports(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": list(command),
        }
        tmp = self.pid_file.with_suffix(".pid.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(self.pid_file)

    def live_record(self) -> PidRecord | None:
        """The pid record of a process this harness started and that still runs."""
        record = self.read_pid()
        if record is None:
            return None
        if record.alive():
            return record
        self.pid_file.unlink(missing_ok=True)
        return None

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialize start and stop across processes (pytest-xdist workers, a CLI in a shell)."""
        return file_lock(self.run_dir / ".lock")

    # -- health --------------------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        """``(True, description)`` when the client port answers as this service should."""
        if not port_open(self.client_port):
            return False, f"port {self.client_port} closed"
        try:
            return True, self.health()
        except PrerequisiteError:
            raise
        except Exception as e:
            return False, f"{type(e).__name__}: {e}"

    # -- start / stop --------------------------------------------------------------------------

    def ensure(self) -> ServiceHandle:
        """Reuse a healthy service on the configured port, or start one.

        Raises:
            ServiceError: the port is taken by something that is not this service, or the
                service did not become healthy in time (the message holds the log tail).
        """
        with self.lock():
            record = self.live_record()
            if record is not None and dict(record.ports) != self.ports():
                raise ServiceError(
                    f"{self.name} is already running from this harness on ports "
                    f"{dict(record.ports)} (pid {record.pid}), not the configured "
                    f"{self.ports()}: run `python -m integration.services stop {self.name}` "
                    "or use the same port variables"
                )
            ok, detail = self.healthy()
            if ok:
                return self._handle(record.pid if record else None, started_here=False)
            if record is not None:
                # Ours but not answering (a start that was interrupted, a hung process): replace.
                terminate(record.pid, self.stop_timeout_s)
                self.pid_file.unlink(missing_ok=True)
            else:
                busy = [f"{role}={p}" for role, p in self.ports().items() if port_open(p)]
                if busy:
                    raise ServiceError(
                        f"cannot start {self.name}: port(s) {', '.join(busy)} on {HOST} are "
                        f"taken by a process that is not a healthy {self.name} ({detail}); "
                        f"free them or choose other ports ({self.port_env_help()})"
                    )
            return self._start()

    def port_env_help(self) -> str:
        return ", ".join(var for _, var, _ in self.port_settings)

    def _handle(
        self, pid: int | None, *, started_here: bool, startup_s: float | None = None
    ) -> ServiceHandle:
        return ServiceHandle(
            name=self.name,
            connection=self.connection(),
            ports=self.ports(),
            pid=pid,
            started_here=started_here,
            log_file=self.log_file if pid is not None else None,
            startup_s=startup_s,
        )

    def _rotate_log(self) -> None:
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_suffix(".log.1"))

    def _start(self) -> ServiceHandle:
        self.check_prerequisites()
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._rotate_log()
        self.prepare()
        cmd = self.command()
        with self.log_file.open("ab") as log:
            log.write(f"--- starting {self.name}: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.working_dir(),
                env=self.process_env(),
                # Own session: a Ctrl-C in the terminal that ran `start` does not reach it, and
                # stop() can signal its whole process group.
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        self._write_pid(proc.pid, cmd)
        try:
            return self._wait_healthy(proc, t0)
        except BaseException:
            # Interrupted (Ctrl-C) or failed: leave nothing half-started behind.
            if pid_alive(proc.pid):
                terminate(proc.pid, self.stop_timeout_s)
            self.pid_file.unlink(missing_ok=True)
            raise

    def _wait_healthy(self, proc: subprocess.Popen[bytes], t0: float) -> ServiceHandle:
        timeout_s = self.start_timeout_s()
        # Counted from the spawn, so a slow first download does not eat into it.
        deadline = time.monotonic() + timeout_s
        detail = "not started"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _CHILDREN.pop(proc.pid, None)
                raise ServiceError(
                    f"{self.name} exited with code {proc.returncode} while starting; "
                    f"last {LOG_TAIL_LINES} lines of {self.log_file}:\n{tail(self.log_file)}"
                )
            ok, detail = self.healthy()
            if ok:
                return self._handle(proc.pid, started_here=True, startup_s=time.monotonic() - t0)
            time.sleep(_POLL_INTERVAL_S)
        raise ServiceError(
            f"{self.name} was not healthy after {timeout_s:.0f} s ({detail}); last "
            f"{LOG_TAIL_LINES} lines of {self.log_file}:\n{tail(self.log_file)}"
        )

    def release(self, handle: ServiceHandle) -> str:
        """Stop what ``handle`` started, if that is still the process behind the pid file."""
        record = self.live_record()
        if record is None or record.pid != handle.pid:
            return "already gone"
        return self.stop()

    def stop(self) -> str:
        """Stop the service if this harness started it; say what was done."""
        with self.lock():
            record = self.live_record()
            if record is None:
                self.pid_file.unlink(missing_ok=True)
                if port_open(self.client_port):
                    return (
                        f"not started by the harness (port {self.client_port} answers): "
                        "left running"
                    )
                return "not running"
            t0 = time.monotonic()
            killed = terminate(record.pid, self.stop_timeout_s)
            self.pid_file.unlink(missing_ok=True)
            how = "killed after SIGTERM timed out" if killed else "stopped"
            return f"{how} (pid {record.pid}) in {time.monotonic() - t0:.1f} s"

    def status(self) -> str:
        """One line: running (pid, ports, memory, health) or stopped."""
        record = self.live_record()
        port_map = dict(record.ports) if record is not None else self.ports()
        ports = " ".join(f"{role}={p}" for role, p in port_map.items())
        try:
            ok, detail = self.healthy()
        except PrerequisiteError as e:
            ok, detail = False, f"health unknown: {e}"
        if record is not None:
            rss = rss_bytes(record.pid)
            mem = f" rss={rss / 2**20:.0f}MiB" if rss is not None else ""
            state = "running" if ok else "running (not healthy)"
            return f"{state}  pid={record.pid} {ports}{mem}  since {record.started_at}  {detail}"
        if ok:
            return f"running (not started by the harness)  {ports}  {detail}"
        if port_open(self.client_port):
            return f"port {self.client_port} taken by something else  ({detail})"
        return f"stopped  {ports}"
