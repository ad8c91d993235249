"""Beam's Java job servers (Flink's and Spark's), assembled from Maven Central and run alike.

Beam's shaded ``beam-runners-<runner>-job-server`` jars are not on the Maven Central mirror the
harness reaches, while the unshaded runners and their dependency trees are. So each job server
is a pom under ``integration/java/<pom>/`` whose jars Maven copies into the cache, behind a
launcher jar that holds only a manifest (``_maven.launcher_jar``): ``java -jar`` on it runs the
runner's ``JobServerDriver``, which is also what Beam's ``--<runner>_job_server_jar`` does.
:class:`BeamJobServer` is what the two have in common: prerequisites, the launcher, the command
line of the job service, and its health check.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from . import _maven
from ._core import HOST, PrerequisiteError, Service, cache_dir, env_str, java_executable

GET_JOBS = "/org.apache.beam.model.job_management.v1.JobService/GetJobs"


def launcher_path(runner: str, version: str) -> Path:
    """Where the launcher jar of ``runner``'s job server (Beam ``version``) is kept:
    ``.cache/<runner>/job-server/``, with the jars its manifest names in ``lib/`` beside it."""
    return cache_dir() / runner / "job-server" / f"liveagg-{runner}-job-server-{version}.jar"


def grpc_call(port: int, method: str) -> bytes:
    """A unary gRPC call with an empty request, without importing apache_beam (whose import
    is slow and logs warnings): enough to tell a Beam service from anything else."""
    try:
        import grpc
    except ImportError:
        raise PrerequisiteError(
            "the Beam services' health checks need grpcio (comes with apache-beam)"
        ) from None
    # An http_proxy in the environment must not capture a loopback connection.
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"{HOST}:{port}", options=options) as channel:
        return channel.unary_unary(method)(b"", timeout=3)


class BeamJobServer(Service):
    """A Beam job server on 127.0.0.1: ``java -jar <launcher> <driver args> --job-host ...``.

    Subclasses name the pom, the driver's main class, the heap setting and the launcher jar's
    path, and give the driver's own arguments (where it runs jobs).
    """

    pom: ClassVar[str]
    main_class: ClassVar[str]
    heap_setting: ClassVar[str]
    manifest_extra: ClassVar[dict[str, str]] = {}
    default_start_timeout_s = 120.0
    stop_timeout_s = 20.0

    def jar(self) -> Path:
        """The launcher jar; ``lib/`` beside it holds the jars its manifest names."""
        raise NotImplementedError

    def driver_args(self) -> list[str]:
        """The driver's arguments before the job service's own (its master, say)."""
        raise NotImplementedError

    def jvm_options(self) -> list[str]:
        return []

    def check_prerequisites(self) -> None:
        java_executable()
        if not _maven.jars_ready(self.pom, self.jar().parent / "lib"):
            _maven.maven_executable(self.pom)

    def launcher(self) -> Path:
        """The job server's jars from Maven Central, and the launcher jar that runs them."""
        return _maven.launcher_jar(
            self.pom, self.jar(), self.main_class, self.log_file, self.manifest_extra
        )

    def prepare(self) -> None:
        self.launcher()
        (self.run_dir / "artifacts").mkdir(exist_ok=True)

    def command(self) -> list[str]:
        ports = self.ports()
        return [
            java_executable(),
            f"-Xmx{env_str(self.heap_setting, '1g')}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.net.preferIPv4Stack=true",
            *self.jvm_options(),
            "-jar",
            str(self.jar()),
            *self.driver_args(),
            f"--job-host={HOST}",
            f"--job-port={ports['job']}",
            f"--artifact-port={ports['artifact']}",
            "--expansion-port=0",
            f"--artifacts-dir={self.run_dir / 'artifacts'}",
        ]

    def health(self) -> str:
        """A ``GetJobs`` call on the Beam job service."""
        grpc_call(self.client_port, GET_JOBS)
        return "Beam job service answers GetJobs"
