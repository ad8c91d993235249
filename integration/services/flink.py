"""An Apache Flink 1.19 session cluster with Beam's job server and a Python worker pool.

Five processes, each a service of its own (pid file, lock and log under ``run/flink/<part>``):

* ``flink-jobmanager`` and ``flink-taskmanager-0``/``-1`` (only ``-0`` with
  ``LIVEAGG_FLINK_TASKMANAGERS=1``, see :func:`taskmanager_count`): Flink's own
  ``bin/jobmanager.sh`` and ``bin/taskmanager.sh start-foreground`` (both ``exec java``, so
  the pid is the JVM's and a SIGKILL is a real TaskManager crash), from the distribution PyPI
  ships as ``apache-flink-libraries``, installed into a virtualenv of its own because
  apache-flink's pins conflict with the project's Beam;
* ``flink-job-server``: Beam's ``FlinkJobServerDriver``, assembled from the unshaded
  ``beam-runners-flink-1.19`` jars (the shaded job-server jars are not on the reachable Maven
  Central mirror) behind a launcher jar that ``--flink_job_server_jar`` also accepts;
* ``beam-worker-pool``: the Python SDK harness pool the TaskManagers ask for SDK workers.

``Flink`` (the registry's ``flink``) starts and stops them together; ``kill_taskmanager``,
``start_taskmanager``, ``stop_cluster``, ``stop_service`` and ``start_cluster`` let tests crash
and restart parts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ._core import (
    HOST,
    REPO_ROOT,
    PrerequisiteError,
    Service,
    ServiceError,
    ServiceHandle,
    cache_dir,
    env_int,
    env_str,
    file_lock,
    http_get,
    java_executable,
    pid_alive,
    port_open,
    started_by_this_process,
    tail,
)
from ._job_server import BeamJobServer, grpc_call, launcher_path

FLINK_VERSION = "1.19.3"
FLINK_MINOR = "1.19"
"""What Beam calls the version (``--flink_version``): its FlinkRunner is built per minor."""
BEAM_JOB_SERVER_VERSION = "2.62.0"
"""The newest ``beam-runners-flink-1.19`` on the mirror; the 2.77 Python SDK submits to it."""
TASKMANAGERS = 2
"""TaskManagers the cluster runs unless ``LIVEAGG_FLINK_TASKMANAGERS`` says otherwise."""
SLOTS_PER_TASKMANAGER = 2
SORT_SHUFFLE_MIN_BUFFERS = 64
#: Direct memory set aside in each TaskManager for Beam's gRPC buffers (see flink_config).
TASK_OFF_HEAP = "256m"
"""Network buffers a batch result partition takes at least (2 MB of 32 KB segments)."""

_DISTRIBUTION = (f"apache-flink=={FLINK_VERSION}", f"apache-flink-libraries=={FLINK_VERSION}")
_PIP_TIMEOUT_S = 1800.0  # building the 230 MB libraries sdist takes a minute or two
_JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"

_REST = ("rest", "LIVEAGG_FLINK_REST_PORT", 18081)
_RPC = ("rpc", "LIVEAGG_FLINK_RPC_PORT", 16123)
_TASKMANAGER_RPC = (
    ("taskmanager-0", "LIVEAGG_FLINK_TASKMANAGER_0_PORT", 16124),
    ("taskmanager-1", "LIVEAGG_FLINK_TASKMANAGER_1_PORT", 16125),
)
MAX_TASKMANAGERS = len(_TASKMANAGER_RPC)
_JOB = ("job", "LIVEAGG_FLINK_JOB_PORT", 18099)
_ARTIFACT = ("artifact", "LIVEAGG_FLINK_ARTIFACT_PORT", 18098)
# Below the ephemeral range (32768-60999): an outgoing connection can hold a port up there.
_WORKER_POOL = ("worker-pool", "LIVEAGG_FLINK_WORKER_POOL_PORT", 18050)

# Flink's shipped config.yaml passes these (env.java.opts.all) so that Java 17 allows the
# reflection Flink and Kryo do on JDK classes.
_JAVA17_OPENS = [
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.api=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.parser=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.tree=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.util=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.base/java.time=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
]


@dataclass(frozen=True)
class FlinkConnection:
    """Where Beam pipelines (and the REST API, and liveagg's Flink profile) reach the cluster.

    Attributes:
        rest_url: the JobManager's REST API and web UI.
        master: ``host:port`` of the REST API, Beam's ``--flink_master``.
        job_endpoint: Beam's job server (``--job_endpoint``).
        worker_pool: the Python worker pool (``--environment_config`` with EXTERNAL).
        job_server_jar: a launcher jar for ``--flink_job_server_jar`` (``java -jar`` works).
        checkpoint_dir: the cluster's ``state.checkpoints.dir``, as a local path.
        savepoint_dir: the cluster's ``state.savepoints.dir``.
        flink_version: Beam's ``--flink_version``.
    """

    rest_url: str
    master: str
    job_endpoint: str
    worker_pool: str
    job_server_jar: Path
    checkpoint_dir: Path
    savepoint_dir: Path
    flink_version: str = FLINK_MINOR

    def env(self) -> dict[str, str]:
        """``LIVEAGG_FLINK_*`` variables; liveagg's Flink profile (runners/flink.py) reads them."""
        return {
            "LIVEAGG_FLINK_MASTER": self.master,
            "LIVEAGG_FLINK_VERSION": self.flink_version,
            "LIVEAGG_FLINK_JOB_ENDPOINT": self.job_endpoint,
            "LIVEAGG_FLINK_WORKER_POOL": self.worker_pool,
            "LIVEAGG_FLINK_JOB_SERVER_JAR": str(self.job_server_jar),
            "LIVEAGG_FLINK_CHECKPOINT_DIR": str(self.checkpoint_dir),
            "LIVEAGG_FLINK_SAVEPOINT_DIR": str(self.savepoint_dir),
        }

    def pipeline_args(self) -> list[str]:
        """Beam options that run a pipeline here, its Python code in the worker pool."""
        return [
            "--runner=FlinkRunner",
            f"--flink_master={self.master}",
            f"--flink_version={self.flink_version}",
            f"--job_endpoint={self.job_endpoint}",
            "--environment_type=EXTERNAL",
            f"--environment_config={self.worker_pool}",
        ]


# --- paths and downloads ----------------------------------------------------------------------


def run_root() -> Path:
    """Run folders of the five processes, and the cluster's checkpoints and savepoints."""
    return cache_dir() / "run" / "flink"


def job_server_jar() -> Path:
    """The launcher jar; ``lib/`` next to it holds the jars its manifest names."""
    return launcher_path("flink", BEAM_JOB_SERVER_VERSION)


def _run_logged(cmd: Sequence[str], log_file: Path, what: str, timeout_s: float) -> None:
    with log_file.open("ab") as log:
        log.write(f"--- {what}: {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            result = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise ServiceError(
                f"{what} took more than {timeout_s:.0f} s; last lines of {log_file}:\n"
                f"{tail(log_file)}"
            ) from None
    if result.returncode != 0:
        raise ServiceError(
            f"{what} failed (exit {result.returncode}); last lines of {log_file}:\n{tail(log_file)}"
        )


def _check_venv_support() -> None:
    if importlib.util.find_spec("ensurepip") is None:
        raise PrerequisiteError(
            f"Flink is installed from PyPI into a virtualenv, and {sys.executable} cannot create "
            "one (no ensurepip): apt-get install python3-venv"
        )


def flink_home(log_file: Path) -> Path:
    """FLINK_HOME of the PyPI distribution, installed on first use into ``.cache/flink/venv``.

    A virtualenv of its own because apache-flink pins versions of Beam, protobuf and others
    that conflict with the project's; ``--no-deps`` because only the Java distribution inside
    (``pyflink/bin``, ``lib``, ``conf``) is used, never pyflink's Python code.
    """
    venv = cache_dir() / "flink" / "venv"
    marker = venv / ".complete"
    wanted = " ".join(_DISTRIBUTION)
    with file_lock(cache_dir() / "flink" / ".lock"):
        with contextlib.suppress(OSError, ValueError):
            installed, home = marker.read_text().splitlines()[:2]
            if installed == wanted and (Path(home) / "bin" / "jobmanager.sh").is_file():
                return Path(home)
        shutil.rmtree(venv, ignore_errors=True)
        t0 = time.monotonic()
        python = venv / "bin" / "python"
        what = f"installing Flink {FLINK_VERSION} from PyPI into {venv}"
        _run_logged([sys.executable, "-m", "venv", str(venv)], log_file, what, 300)
        pip = [str(python), "-m", "pip", "install", "--no-deps", "--disable-pip-version-check"]
        _run_logged([*pip, *_DISTRIBUTION], log_file, what, _PIP_TIMEOUT_S)
        found = subprocess.run(
            [str(python), "-c", "import os, pyflink; print(os.path.dirname(pyflink.__file__))"],
            capture_output=True,
            text=True,
            check=False,
        )
        home = Path(found.stdout.strip())
        if not (home / "lib" / f"flink-dist-{FLINK_VERSION}.jar").is_file():
            raise ServiceError(
                f"{_DISTRIBUTION} installed, but no lib/flink-dist-{FLINK_VERSION}.jar under "
                f"{home} ({found.stderr.strip()[-500:]})"
            )
        marker.write_text(f"{wanted}\n{home}\n")
        with log_file.open("a") as log:
            log.write(f"--- Flink ready in {time.monotonic() - t0:.1f} s: FLINK_HOME={home}\n")
        return home


# --- configuration --------------------------------------------------------------------------


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    text = str(value)
    plain = text and all(c.isalnum() or c in "._/:@-" for c in text) and text[0] != "-"
    return text if plain else json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def _yaml(tree: dict[str, Any], indent: int = 0) -> str:
    """Nested mappings as block YAML (Flink 1.19's config.yaml is standard YAML)."""
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.append(f"{' ' * indent}{key}:\n{_yaml(value, indent + 2)}")
        else:
            out.append(f"{' ' * indent}{key}: {_yaml_scalar(value)}\n")
    return "".join(out)


def _ports(settings: Sequence[tuple[str, str, int]]) -> dict[str, int]:
    return {role: env_int(var, default) for role, var, default in settings}


def flink_config(tmp_dir: Path, taskmanager_port: int | None = None) -> dict[str, Any]:
    """The cluster's ``config.yaml``; a TaskManager's adds its RPC port.

    Tests crash TaskManagers on purpose: a 15 s heartbeat timeout notices a killed one quickly,
    and a fixed-delay restart strategy keeps retrying a job until slots come back. A 1 s
    registration error delay (Flink's default is 10 s) lets TaskManagers rejoin a restarted
    JobManager quickly. ``taskmanager.load-balance.mode: SLOTS`` spreads a job's slots over
    the TaskManagers (Flink 1.19's name for the deprecated ``cluster.evenly-spread-out-slots``,
    ``TaskManagerOptions.TASK_MANAGER_LOAD_BALANCE_MODE``): by default Flink fills one
    TaskManager's slots first, and a job of parallelism 2 ran on one of the two.
    """
    jm = _ports((_REST, _RPC))
    taskmanager: dict[str, Any] = {
        "bind-host": HOST,
        "host": HOST,
        "numberOfTaskSlots": SLOTS_PER_TASKMANAGER,
        # Beam's Fn API servers in the TaskManager (data, state, control) run on gRPC's netty,
        # which allocates pooled direct buffers, 2 MiB at a time (PoolArena.newChunk in the
        # trace below). Flink 1.19 sizes the JVM's -XX:MaxDirectMemorySize by
        # TaskExecutorFlinkMemory.getJvmDirectMemorySize, ``return
        # frameworkOffHeap.add(taskOffHeap).add(network);`` (flink-dist-1.19.3.jar; the
        # TaskManager's log at 1536m: 134,217,728 + 0 + 114,085,070 = 248,302,798), so with no
        # task off-heap Beam's buffers share what Flink keeps for itself: one clean-clone run
        # stalled a job for good on "Cannot reserve 2097152 bytes of direct buffer memory
        # (allocated: 246662241, limit: 248302798)" in NettyServerTransport 7 s after it
        # started. The process grows by more than the task off-heap, so that the heap stays
        # about as it was (the TaskManager's log: -Xmx 436,207,608 bytes at 1536m,
        # 429,496,717 at 2048m with 256m task off-heap).
        "memory": {
            "process": {"size": env_str("LIVEAGG_FLINK_TASKMANAGER_MEMORY", "2048m")},
            "task": {"off-heap": {"size": TASK_OFF_HEAP}},
        },
        # A batch job's blocking result partition takes 512 network buffers at least (Flink
        # 1.19's NettyShuffleEnvironmentOptions.NETWORK_SORT_SHUFFLE_MIN_BUFFERS), and the
        # TaskManager has 3,481: a bounded run of many views, whose fused task writes many
        # partitions, failed with "Insufficient number of network buffers: required 512".
        "network": {"sort-shuffle": {"min-buffers": SORT_SHUFFLE_MIN_BUFFERS}},
    }
    if taskmanager_port is not None:
        taskmanager["rpc"] = {"port": taskmanager_port}
    return {
        "env": {"java": {"opts": {"all": " ".join(_JAVA17_OPENS)}}},
        "jobmanager": {
            "rpc": {"address": HOST, "port": jm["rpc"]},
            "bind-host": HOST,
            "memory": {"process": {"size": env_str("LIVEAGG_FLINK_JOBMANAGER_MEMORY", "1024m")}},
        },
        "taskmanager": {**taskmanager, "load-balance": {"mode": "SLOTS"}},
        "rest": {"address": HOST, "bind-address": HOST, "port": jm["rest"]},
        "parallelism": {"default": SLOTS_PER_TASKMANAGER},
        "state": {
            "checkpoints": {"dir": (run_root() / "checkpoints").as_uri()},
            "savepoints": {"dir": (run_root() / "savepoints").as_uri()},
        },
        "restart-strategy": {
            "type": "fixed-delay",
            "fixed-delay": {"attempts": 1000, "delay": "2 s"},
        },
        "heartbeat": {"timeout": 15000, "interval": 3000},
        "cluster": {"registration": {"error-delay": 1000}},
        "io": {"tmp": {"dirs": str(tmp_dir)}},
    }


def taskmanager_count() -> int:
    """TaskManagers in the cluster: ``LIVEAGG_FLINK_TASKMANAGERS``, 1 or 2 (default 2).

    A setting so that the same machine can measure a job on one TaskManager and on two; no
    more than two because each needs a fixed RPC port (``_TASKMANAGER_RPC``), by which the
    REST API names it.
    """
    count = env_int("LIVEAGG_FLINK_TASKMANAGERS", TASKMANAGERS)
    if not 1 <= count <= MAX_TASKMANAGERS:
        raise ServiceError(
            f"LIVEAGG_FLINK_TASKMANAGERS={count}: the harness runs 1 to {MAX_TASKMANAGERS}"
        )
    return count


def _rest_json(path: str) -> Any:
    rest = _ports((_REST,))["rest"]
    return json.loads(http_get(f"http://{HOST}:{rest}{path}", timeout_s=3.0, limit=4 * 2**20))


# --- the five processes ---------------------------------------------------------------------


class _FlinkProcess(Service):
    """A JobManager or TaskManager, run by Flink's script in the foreground."""

    part: ClassVar[str]
    script: ClassVar[str]
    default_start_timeout_s = 120.0
    stop_timeout_s = 30.0

    @property
    def run_dir(self) -> Path:
        return run_root() / self.part

    @property
    def conf_dir(self) -> Path:
        return self.run_dir / "conf"

    def connection(self) -> FlinkConnection:
        return Flink().connection()

    def check_prerequisites(self) -> None:
        java_executable()
        _check_venv_support()

    def config(self) -> dict[str, Any]:
        return flink_config(self.run_dir / "tmp")

    def prepare(self) -> None:
        """Install Flink when missing; write a conf dir with this process's config.yaml."""
        home = flink_home(self.log_file)
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        self.conf_dir.mkdir(parents=True)
        for pattern in ("log4j*.properties", "logback*.xml"):
            for source in (home / "conf").glob(pattern):
                shutil.copy2(source, self.conf_dir / source.name)
        (self.conf_dir / "config.yaml").write_text(_yaml(self.config()))
        for sub in ("log", "tmp"):
            (self.run_dir / sub).mkdir(exist_ok=True)
        for sub in ("checkpoints", "savepoints"):
            (run_root() / sub).mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        home = flink_home(self.log_file)
        return ["bash", str(home / "bin" / self.script), "start-foreground"]

    def process_env(self) -> dict[str, str]:
        return {
            **super().process_env(),
            "FLINK_HOME": str(flink_home(self.log_file)),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.run_dir / "log"),
            "FLINK_PID_DIR": str(self.run_dir),
            "FLINK_IDENT_STRING": "liveagg",
        }


class FlinkJobManager(_FlinkProcess):
    """The JobManager: dispatcher, resource manager and the REST API."""

    name = "flink-jobmanager"
    part = "jobmanager"
    script = "jobmanager.sh"
    port_settings = (_REST, _RPC)

    def health(self) -> str:
        """``GET /overview``: it must be a Flink 1.19."""
        overview = _rest_json("/overview")
        version = str(overview.get("flink-version"))
        if version.rsplit(".", 1)[0] != FLINK_MINOR:
            raise ServiceError(f"REST answers as Flink {version}, not {FLINK_MINOR}")
        return (
            f"Flink {version}, {overview.get('taskmanagers')} TaskManager(s), "
            f"{overview.get('slots-available')}/{overview.get('slots-total')} slots free, "
            f"{overview.get('jobs-running')} job(s) running"
        )


class _TaskManager(_FlinkProcess):
    """A TaskManager with a fixed RPC port, by which the JobManager's REST API names it."""

    index: ClassVar[int]
    script = "taskmanager.sh"
    _stale_ids: frozenset[str] = frozenset()

    def config(self) -> dict[str, Any]:
        return flink_config(self.run_dir / "tmp", taskmanager_port=self.client_port)

    def _registered_ids(self, with_slots: bool = False) -> set[str]:
        taskmanagers = _rest_json("/taskmanagers").get("taskmanagers", [])
        marker = f"@{HOST}:{self.client_port}/"
        return {
            tm["id"]
            for tm in taskmanagers
            if marker in str(tm.get("path", "")) and (not with_slots or tm.get("slotsNumber"))
        }

    def prepare(self) -> None:
        super().prepare()
        # A TaskManager killed a moment ago stays listed until its heartbeat times out: only a
        # registration that was not there before this start counts as this one being up.
        with contextlib.suppress(Exception):
            self._stale_ids = frozenset(self._registered_ids())

    def health(self) -> str:
        """Registered with the JobManager, slots included (``GET /taskmanagers`` at its port)."""
        ids = self._registered_ids(with_slots=True) - self._stale_ids
        if not ids:
            raise ServiceError("not registered with the JobManager, or its slots not yet")
        return f"registered as {', '.join(sorted(ids))}"


class FlinkTaskManager0(_TaskManager):
    name = "flink-taskmanager-0"
    part = "taskmanager-0"
    index = 0
    port_settings = (_TASKMANAGER_RPC[0],)


class FlinkTaskManager1(_TaskManager):
    name = "flink-taskmanager-1"
    part = "taskmanager-1"
    index = 1
    port_settings = (_TASKMANAGER_RPC[1],)


_TASKMANAGER_CLASSES: tuple[type[_TaskManager], ...] = (FlinkTaskManager0, FlinkTaskManager1)


class FlinkJobServer(BeamJobServer):
    """Beam's Flink job server, submitting to the cluster's REST address."""

    name = "flink-job-server"
    port_settings = (_JOB, _ARTIFACT)
    pom = "flink-job-server"
    main_class = _JOB_SERVER_MAIN
    heap_setting = "LIVEAGG_FLINK_JOB_SERVER_HEAP"

    @property
    def run_dir(self) -> Path:
        return run_root() / "job-server"

    def connection(self) -> FlinkConnection:
        return Flink().connection()

    def jar(self) -> Path:
        return job_server_jar()

    def jvm_options(self) -> list[str]:
        return [
            "--add-opens=java.base/java.lang=ALL-UNNAMED",
            "--add-opens=java.base/java.util=ALL-UNNAMED",
            "--add-opens=java.base/java.nio=ALL-UNNAMED",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS",
        ]

    def driver_args(self) -> list[str]:
        return [f"--flink-master={HOST}:{_ports((_REST,))['rest']}"]


class BeamWorkerPool(Service):
    """Beam's Python worker pool, in the project's interpreter, on 127.0.0.1 only.

    It starts each SDK worker as ``python -c ...``: the PATH starts with this interpreter's
    folder so that ``python`` is one with apache-beam and liveagg (otherwise workers die with
    "No module named apache_beam").
    """

    name = "beam-worker-pool"
    port_settings = (_WORKER_POOL,)
    default_start_timeout_s = 60.0
    stop_timeout_s = 10.0

    @property
    def run_dir(self) -> Path:
        return run_root() / "worker-pool"

    def connection(self) -> FlinkConnection:
        return Flink().connection()

    def check_prerequisites(self) -> None:
        if importlib.util.find_spec("apache_beam") is None:
            raise PrerequisiteError("the Beam worker pool needs apache-beam in " + sys.executable)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "integration.services._beam_worker_pool",
            f"--host={HOST}",
            f"--port={self.client_port}",
        ]

    def process_env(self) -> dict[str, str]:
        env = super().process_env()
        path = env.get("PATH", "")
        env["PATH"] = os.path.dirname(sys.executable) + (os.pathsep + path if path else "")
        return env

    def working_dir(self) -> Path:
        return REPO_ROOT

    def health(self) -> str:
        """A ``StopWorker`` for no worker (an empty id): only a worker pool answers it."""
        grpc_call(
            self.client_port,
            "/org.apache.beam.model.fn_execution.v1.BeamFnExternalWorkerPool/StopWorker",
        )
        return "Beam worker pool answers StopWorker"


# --- the cluster as one service ---------------------------------------------------------------


def _ensure_together(parts: Sequence[Service]) -> list[ServiceHandle]:
    """``ensure()`` each part in a thread; on any failure stop what these calls started."""
    failure: BaseException | None = None
    with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
        futures = [pool.submit(part.ensure) for part in parts]
        try:
            concurrent.futures.wait(futures)
        except BaseException as e:  # Ctrl-C: let the starts finish, then stop them below
            failure = e
    failure = failure or next((f.exception() for f in futures if f.exception()), None)
    if failure is not None:
        for part, future in zip(parts, futures, strict=True):
            if future.exception() is None and future.result().started_here:
                part.stop()
        raise failure
    return [f.result() for f in futures]


class Flink(Service):
    """The whole cluster: JobManager, TaskManagers (:func:`taskmanager_count`), job server and
    worker pool.

    ``ensure()`` reuses each part that is healthy and starts the others: the JobManager, job
    server and worker pool together, then the TaskManagers (which need the JobManager to
    register). Stopping stops, part by part, only what the harness started, every TaskManager
    included whatever the count is now.
    """

    name = "flink"
    port_settings = (_REST, _RPC, *_TASKMANAGER_RPC, _JOB, _ARTIFACT, _WORKER_POOL)
    default_start_timeout_s = 120.0
    stop_timeout_s = 30.0

    @staticmethod
    def parts(every_taskmanager: bool = False) -> list[Service]:
        """Every process of the cluster, in start order; with ``every_taskmanager``, also the
        TaskManagers that :func:`taskmanager_count` leaves out (to stop one a larger count
        started)."""
        count = MAX_TASKMANAGERS if every_taskmanager else taskmanager_count()
        return [
            FlinkJobManager(),
            *(cls() for cls in _TASKMANAGER_CLASSES[:count]),
            FlinkJobServer(),
            BeamWorkerPool(),
        ]

    def connection(self) -> FlinkConnection:
        ports = self.ports()
        master = f"{HOST}:{ports['rest']}"
        return FlinkConnection(
            rest_url=f"http://{master}",
            master=master,
            job_endpoint=f"{HOST}:{ports['job']}",
            worker_pool=f"{HOST}:{ports['worker-pool']}",
            job_server_jar=job_server_jar(),
            checkpoint_dir=run_root() / "checkpoints",
            savepoint_dir=run_root() / "savepoints",
        )

    def check_prerequisites(self) -> None:
        for part in self.parts():
            part.check_prerequisites()

    def command(self) -> list[str]:
        raise ServiceError("flink is several processes; each of its parts has a command")

    def health(self) -> str:
        details = []
        for part in self.parts():
            ok, detail = part.healthy()
            if not ok:
                raise ServiceError(f"{part.name}: {detail}")
            details.append(detail)
        return details[0]

    def log_files(self) -> dict[str, Path]:
        return {part.name: part.log_file for part in self.parts()}

    def ensure(self) -> ServiceHandle:
        t0 = time.monotonic()
        with self.lock():
            parts = self.parts()
            # Before starting anything: a missing Maven or Java must not leave half a cluster.
            for part in parts:
                if not part.healthy()[0]:
                    part.check_prerequisites()
            jm, *taskmanagers, job_server, pool = parts
            # A TaskManager past the count would still take the job's slots: say so.
            extra = [
                tm.name
                for cls in _TASKMANAGER_CLASSES[len(taskmanagers) :]
                if (tm := cls()).live_record() is not None
            ]
            if extra:
                raise ServiceError(
                    f"{', '.join(extra)} runs, more than LIVEAGG_FLINK_TASKMANAGERS="
                    f"{len(taskmanagers)}: run `python -m integration.services stop flink` first"
                )
            first = _ensure_together([jm, job_server, pool])
            try:
                handles = [first[0], *_ensure_together(taskmanagers), *first[1:]]
            except BaseException:
                for part, handle in zip([jm, job_server, pool], first, strict=True):
                    if handle.started_here:
                        part.stop()
                raise
        started_here = any(h.started_here for h in handles)
        return ServiceHandle(
            name=self.name,
            connection=self.connection(),
            ports=self.ports(),
            pid=handles[0].pid,
            started_here=started_here,
            log_file=handles[0].log_file,
            startup_s=time.monotonic() - t0 if started_here else None,
        )

    def release(self, handle: ServiceHandle) -> str:
        """Stop every part this process started, including parts a test restarted since."""
        with self.lock():
            stopped = [
                f"{part.name} {part.stop()}"
                for part in reversed(self.parts(every_taskmanager=True))
                if (record := part.live_record()) is not None
                and started_by_this_process(record.pid)
            ]
        return "; ".join(stopped) if stopped else "already gone"

    def stop(self) -> str:
        with self.lock():
            parts = reversed(self.parts(every_taskmanager=True))
            results = {part.name: part.stop() for part in parts}
        if all(r == "not running" for r in results.values()):
            return "not running"
        stopped = sum(r.startswith(("stopped", "killed")) for r in results.values())
        head = f"stopped {stopped} process(es)"
        return "\n".join([head, *(f"  {name:<20} {r}" for name, r in results.items())])

    def status(self) -> str:
        lines = {part.name: part.status() for part in self.parts()}
        if all(line.startswith("stopped") for line in lines.values()):
            ports = " ".join(f"{role}={p}" for role, p in self.ports().items())
            return f"stopped  {ports}"
        running = sum(line.startswith("running") for line in lines.values())
        head = f"{running} of {len(lines)} processes running"
        return "\n".join([head, *(f"  {name:<20} {line}" for name, line in lines.items())])


# --- crashing and restarting parts, for tests -------------------------------------------------


def taskmanager(index: int) -> Service:
    """TaskManager ``index`` (0 or 1)."""
    try:
        return _TASKMANAGER_CLASSES[index]()
    except IndexError:
        raise ServiceError(f"no TaskManager {index}: there are {MAX_TASKMANAGERS} (0, 1)") from None


def kill_taskmanager(index: int) -> int:
    """SIGKILL TaskManager ``index``, as a crash would; return the pid it had.

    The JobManager notices within the heartbeat timeout (15 s). Only a TaskManager the harness
    started is killed.
    """
    tm = taskmanager(index)
    with tm.lock():
        record = tm.live_record()
        if record is None:
            raise ServiceError(f"{tm.name} is not running from the harness (status: {tm.status()})")
        os.kill(record.pid, signal.SIGKILL)  # the JVM itself: the script exec'd java
        deadline = time.monotonic() + 10
        while pid_alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        tm.pid_file.unlink(missing_ok=True)
    return record.pid


def start_taskmanager(index: int) -> ServiceHandle:
    """Start TaskManager ``index`` again (or reuse it); returns once it has registered."""
    return taskmanager(index).ensure()


def stop_cluster() -> dict[str, str]:
    """Stop the TaskManagers and the JobManager the harness started (SIGTERM, as an operator
    would); the job server and the worker pool keep running."""
    with Flink().lock():
        parts = [*(cls() for cls in reversed(_TASKMANAGER_CLASSES)), FlinkJobManager()]
        return {part.name: part.stop() for part in parts}


def stop_service() -> str:
    """Stop the whole service as ``python -m integration.services stop flink`` does: every part
    the harness started, in reverse start order (the worker pool and the job server first)."""
    return Flink().stop()


def start_cluster() -> ServiceHandle:
    """Start whatever part of the cluster is not running, and wait until all of it is healthy."""
    return Flink().ensure()


def registered_taskmanagers() -> int:
    """How many TaskManagers the JobManager lists (0 when it does not answer); for polling."""
    if not port_open(_ports((_REST,))["rest"]):
        return 0
    try:
        return int(_rest_json("/overview").get("taskmanagers", 0))
    except Exception:
        return 0
