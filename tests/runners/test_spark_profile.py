"""The Spark profile: its options and the errors that name the flag. Pipelines run on Spark in
tests/conformance."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveagg.errors import ViewError
from liveagg.pipelines.run import RunConfig, _check_runner, pipeline_options
from liveagg.runners.spark import SparkProfile
from tests.support.cli import ROOT, liveagg

EXAMPLE_VIEW = ROOT / "view_schemas" / "examples" / "network_telemetry.json"
EXAMPLE_INPUT = ROOT / "examples" / "data" / "events.jsonl"


def test_beam_args_name_the_runner_master_and_job_server(tmp_path: Path) -> None:
    jar = tmp_path / "server.jar"
    jar.write_bytes(b"")
    profile = SparkProfile(master="local[2]", job_endpoint=None, job_server_jar=str(jar))
    assert profile.beam_args() == [
        "--runner=SparkRunner",
        "--spark_master_url=local[2]",
        f"--spark_job_server_jar={jar}",
    ]
    running = SparkProfile(master="local[2]", job_endpoint="127.0.0.1:1", job_server_jar=str(jar))
    assert running.beam_args()[-1] == "--job_endpoint=127.0.0.1:1"  # it wins over the jar


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAGG_SPARK_JOB_ENDPOINT", "127.0.0.1:18199")
    monkeypatch.delenv("LIVEAGG_SPARK_MASTER", raising=False)
    profile = SparkProfile()
    assert (profile.master, profile.job_endpoint) == ("local[2]", "127.0.0.1:18199")
    config = RunConfig(views=[], runner="spark", spark=profile)
    options = pipeline_options(config).get_all_options()
    assert (options["runner"], options["job_endpoint"]) == ("SparkRunner", "127.0.0.1:18199")


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (SparkProfile(master="yarn"), r"--spark-master 'yarn': expected local, local\[N\]"),
        (
            SparkProfile(job_server_jar="/nonexistent/server.jar"),
            r"--spark-job-server-jar /nonexistent/server.jar: no such file",
        ),
    ],
)
def test_impossible_flags_are_refused_before_the_run(profile: SparkProfile, message: str) -> None:
    with pytest.raises(ViewError, match=message):
        _check_runner(RunConfig(views=[], runner="spark", spark=profile), [])


def test_the_command_line_names_the_flag(tmp_path: Path) -> None:
    result = liveagg(
        *("run", "--views", str(EXAMPLE_VIEW), "--input", str(EXAMPLE_INPUT)),
        *("--output", str(tmp_path / "o")),
        *("--runner", "spark", "--spark-master", "mesos://x"),
        ok=False,
    )
    assert result.returncode == 2  # a bad command line
    assert "--spark-master 'mesos://x': expected local" in result.stderr
