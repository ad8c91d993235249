"""Beam's Spark job server, with Spark's local mode inside it.

One process, ``SparkJobServerDriver`` with ``--spark-master-url=local[2]``: Beam's portable Spark
runner runs each job in an embedded Spark (driver and executors in the job server's JVM), and
the pipeline's Python runs in the submitting process (LOOPBACK), so nothing else is needed.

The job server is assembled as Flink's is (``_job_server.py``): Beam's shaded
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
from typing import ClassVar

from ._core import HOST
from ._job_server import BeamJobServer, launcher_path

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
    return launcher_path("spark", BEAM_JOB_SERVER_VERSION)


class Spark(BeamJobServer):
    """Beam's Spark job server on 127.0.0.1, running jobs in Spark's local mode."""

    name = "spark"
    port_settings = (_JOB, _ARTIFACT)
    pom = "spark-job-server"
    main_class = _JOB_SERVER_MAIN
    heap_setting = "LIVEAGG_SPARK_JOB_SERVER_HEAP"
    manifest_extra: ClassVar[dict[str, str]] = {"Add-Opens": " ".join(_OPENS)}

    def connection(self) -> SparkConnection:
        return SparkConnection(f"{HOST}:{self.ports()['job']}", job_server_jar())

    def jar(self) -> Path:
        return job_server_jar()

    def prepare(self) -> None:
        super().prepare()
        (self.run_dir / "tmp").mkdir(exist_ok=True)

    def jvm_options(self) -> list[str]:
        return [f"-Djava.io.tmpdir={self.run_dir / 'tmp'}"]  # Spark's block manager and shuffle

    def driver_args(self) -> list[str]:
        return [f"--spark-master-url={MASTER}"]
