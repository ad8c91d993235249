"""The Spark profile: run the pipeline on Apache Spark through Beam's portable SparkRunner.

The job server is Beam's ``SparkJobServerDriver``, which runs each job on a Spark master; with
``local[N]`` (the default) Spark runs inside the job server's JVM. Where it comes from:

* ``job_endpoint`` (``--spark-job-endpoint``, ``$LIVEAGG_SPARK_JOB_ENDPOINT``): one already
  running, such as the integration harness's (``python -m integration.services start spark``);
* ``job_server_jar`` (``--spark-job-server-jar``, ``$LIVEAGG_SPARK_JOB_SERVER_JAR``): Beam
  starts ``java -jar JAR`` for the run (the harness's launcher jar works);
* neither: Beam downloads its release's ``beam-runners-spark-3-job-server`` jar from Maven
  Central, which fails where that jar is not published (docs/runners.md, "Spark").

The pipeline's Python runs in the submitting process (LOOPBACK, SparkRunner's default for a
local master). Only the bounded path is tested on Spark (docs/runners.md).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveagg.errors import COMMAND_LINE, ViewError
from liveagg.settings import SparkSettings

_MASTER = re.compile(r"^(local(\[(\d+|\*)\])?|spark://.+)$")


@dataclass(frozen=True)
class SparkProfile(SparkSettings):
    """What ``--runner spark`` and its flags mean, over :class:`SparkSettings`
    (``LIVEAGG_SPARK_*``)."""

    def check(self) -> None:
        """Reject flags that cannot work before anything starts, naming the flag."""
        if not _MASTER.match(self.master):
            raise ViewError(
                COMMAND_LINE,
                "$.spark_master",
                f"--spark-master {self.master!r}: expected local, local[N], local[*] or "
                "spark://HOST:PORT",
            )
        if self.job_server_jar and not Path(self.job_server_jar).is_file():
            raise ViewError(
                COMMAND_LINE,
                "$.spark_job_server_jar",
                f"--spark-job-server-jar {self.job_server_jar}: no such file (`python -m "
                "integration.services start spark` assembles one)",
            )

    def beam_args(self) -> list[str]:
        """PipelineOptions arguments for Beam's SparkRunner."""
        args = ["--runner=SparkRunner", f"--spark_master_url={self.master}"]
        if self.job_endpoint:
            args.append(f"--job_endpoint={self.job_endpoint}")
        elif self.job_server_jar:
            args.append(f"--spark_job_server_jar={self.job_server_jar}")
        return args


def supervise(result: Any) -> str:
    """Wait for the job and return its final state; on Ctrl-C or SIGTERM (``KeyboardInterrupt``
    from the run's signal handler) cancel it on the job server, which would otherwise run it
    to the end, and let the interrupt go on."""
    try:
        state = result.wait_until_finish()
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):  # the job may have ended meanwhile
            result.cancel()
        raise
    return str(getattr(state, "name", state)).upper()
