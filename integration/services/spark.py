"""Beam's Spark job server, with Spark's local mode inside it.

One process, ``SparkJobServerDriver`` with ``--spark-master-url=local[2]``: Beam's portable Spark
runner runs each job in an embedded Spark (driver and executors in the job server's JVM), and
the pipeline's Python runs in the submitting process (LOOPBACK), so nothing else is needed.

The job server is assembled as Flink's is (``flink.py``): Beam's shaded
``beam-runners-spark-3-job-server`` jar is not on the reachable Maven Central mirror, so
``integration/java/spark-job-server/pom.xml`` resolves the unshaded ``beam-runners-spark-3``
2.62.0 (the newest there) and Spark 3.2.2 into ``.cache/spark/job-server/lib``, behind a
launcher jar whose manifest names the main class, the jars and the packages Spark opens by
reflection on Java 17 (``Add-Opens``, honoured for the jar ``java -jar`` runs). Beam's
``--spark_job_server_jar`` accepts the launcher as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import _maven
from ._core import HOST, Service, cache_dir, env_str, java_executable
from .flink import _grpc_call

BEAM_JOB_SERVER_VERSION = "2.62.0"
"""The newest ``beam-runners-spark-3`` on the mirror; the 2.77 Python SDK submits to it."""
MASTER = "local[2]"
"""Spark's local mode, two threads: the machines this runs on have two cores."""

_JOB_SERVER_MAIN = "org.apache.beam.runners.spark.SparkJobServerDriver"
_JOB = ("job", "LIVEAGG_SPARK_JOB_PORT", 18199)
_ARTIFACT = ("artifact", "LIVEAGG_SPARK_ARTIFACT_PORT", 18198)
# What Spark 3.3+ passes itself (launcher/JavaModuleOptions.java); Spark 3.2 does not, and on
# Java 17 its local mode fails with IllegalAccessError (StorageUtils and sun.nio.ch) without.
_OPENS = (
    "java.base/java.lang",
    "java.base/java.lang.invoke",
    "java.base/java.lang.reflect",
    "java.base/java.io",
    "java.base/java.net",
    "java.base/java.nio",
    "java.base/java.util",
    "java.base/java.util.concurrent",
    "java.base/java.util.concurrent.atomic",
    "java.base/sun.nio.ch",
    "java.base/sun.nio.cs",
    "java.base/sun.security.action",
    "java.base/sun.util.calendar",
)


@dataclass(frozen=True)
class SparkConnection:
    """Where liveagg's Spark profile (runners/spark.py) submits.

    Attributes:
        job_endpoint: Beam's job server (``--spark-job-endpoint``, Beam's ``--job_endpoint``).
        job_server_jar: the launcher jar (``--spark-job-server-jar``, ``java -jar`` works).
        master: the Spark master the job server runs jobs on.
    """

    job_endpoint: str
    job_server_jar: Path
    master: str = MASTER

    def env(self) -> dict[str, str]:
        """``LIVEAGG_SPARK_*`` variables; liveagg's Spark profile reads them."""
        return {
            "LIVEAGG_SPARK_JOB_ENDPOINT": self.job_endpoint,
            "LIVEAGG_SPARK_JOB_SERVER_JAR": str(self.job_server_jar),
        }


def job_server_jar() -> Path:
    """The launcher jar; ``lib/`` next to it holds the jars its manifest names."""
    name = f"liveagg-spark-job-server-{BEAM_JOB_SERVER_VERSION}.jar"
    return cache_dir() / "spark" / "job-server" / name


def job_server_launcher(log_file: Path) -> Path:
    """The job server's jars from Maven Central, and the launcher jar that runs them."""
    opens = {"Add-Opens": " ".join(_OPENS)}
    return _maven.launcher_jar(
        "spark-job-server", job_server_jar(), _JOB_SERVER_MAIN, log_file, opens
    )


class Spark(Service):
    """Beam's Spark job server on 127.0.0.1, running jobs in Spark's local mode."""

    name = "spark"
    port_settings = (_JOB, _ARTIFACT)
    default_start_timeout_s = 120.0
    stop_timeout_s = 20.0

    def connection(self) -> SparkConnection:
        return SparkConnection(f"{HOST}:{self.ports()['job']}", job_server_jar())

    def check_prerequisites(self) -> None:
        java_executable()
        if not _maven.jars_ready("spark-job-server", job_server_jar().parent / "lib"):
            _maven.maven_executable("spark-job-server")

    def prepare(self) -> None:
        job_server_launcher(self.log_file)
        (self.run_dir / "artifacts").mkdir(exist_ok=True)
        (self.run_dir / "tmp").mkdir(exist_ok=True)

    def command(self) -> list[str]:
        ports = self.ports()
        return [
            java_executable(),
            f"-Xmx{env_str('LIVEAGG_SPARK_JOB_SERVER_HEAP', '1g')}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.net.preferIPv4Stack=true",
            f"-Djava.io.tmpdir={self.run_dir / 'tmp'}",  # Spark's block manager and shuffle
            "-jar",
            str(job_server_jar()),
            f"--spark-master-url={MASTER}",
            f"--job-host={HOST}",
            f"--job-port={ports['job']}",
            f"--artifact-port={ports['artifact']}",
            "--expansion-port=0",
            f"--artifacts-dir={self.run_dir / 'artifacts'}",
        ]

    def health(self) -> str:
        """A ``GetJobs`` call on the Beam job service."""
        _grpc_call(self.client_port, "/org.apache.beam.model.job_management.v1.JobService/GetJobs")
        return "Beam job service answers GetJobs"
