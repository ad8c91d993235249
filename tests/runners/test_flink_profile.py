"""The Flink profile: flags to Beam options, flag checks, finding a checkpoint to restore,
reports, and the figures of a job liveagg stopped."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from liveagg.errors import ViewError
from liveagg.pipelines.run import KafkaInput, RunConfig, _report, pipeline_options
from liveagg.runners.flink import (
    FlinkJavaOptions,
    FlinkProfile,
    newest_restore_point,
    resolve_restore,
)
from liveagg.runners.flink_rest import accumulated_metrics, counter_values, format_metrics

DATA = Path(__file__).resolve().parents[1] / "data"


def _profile(**kwargs: object) -> FlinkProfile:
    base = dict(master="127.0.0.1:8081", worker_pool=None, job_endpoint=None, job_server_jar=None)
    return FlinkProfile(**{**base, **kwargs})  # type: ignore[arg-type]


def test_a_cluster_with_a_worker_pool_runs_external_and_checkpoints_when_streaming() -> None:
    profile = _profile(worker_pool="127.0.0.1:50000", parallelism=4, job_name="j1")
    args = profile.beam_args(streaming=True)
    assert "--runner=FlinkRunner" in args
    assert "--flink_master=127.0.0.1:8081" in args
    assert "--environment_type=EXTERNAL" in args
    assert "--environment_config=127.0.0.1:50000" in args
    assert "--parallelism=4" in args
    assert "--job_name=j1" in args
    assert "--checkpointing_interval=1000" in args
    assert "--sdk_worker_parallelism=2" in args
    assert profile.rest_url == "http://127.0.0.1:8081"


def test_bounded_runs_do_not_checkpoint_and_embedded_flink_runs_loopback() -> None:
    profile = _profile(master="[local]")
    args = profile.beam_args(streaming=False)
    assert "--environment_type=LOOPBACK" in args
    assert not any(a.startswith("--checkpointing_interval") for a in args)
    assert not any(a.startswith("--sdk_worker_parallelism") for a in args)
    assert profile.rest_url is None


def test_java_side_options_survive_into_the_submitted_options() -> None:
    """The Python SDK drops options it does not know; FlinkJavaOptions declares them."""
    config = RunConfig(
        views=[],
        runner="flink",
        kafka=KafkaInput(unbounded=True),
        flink=_profile(checkpoint_interval=timedelta(seconds=2), job_endpoint="127.0.0.1:1"),
    )
    options = pipeline_options(config).get_all_options(retain_unknown_options=False)
    assert options["checkpointing_interval"] == 2000
    assert options["externalized_checkpoints_enabled"] is True
    assert options["retain_externalized_checkpoints_on_cancellation"] is True
    assert options["max_bundle_size"] == 10000
    # The SDK's state cache: Beam's default (0) leaves it off.
    assert options["max_cache_memory_usage_mb"] == 256
    assert PipelineOptions([]).get_all_options()["max_cache_memory_usage_mb"] == 0
    assert options["job_endpoint"] == "127.0.0.1:1"
    assert options["streaming"] is True
    assert PipelineOptions([]).view_as(FlinkJavaOptions).savepoint_path is None


def test_a_users_beam_argument_overrides_liveaggs_default() -> None:
    config = RunConfig(
        views=[],
        runner="flink",
        kafka=KafkaInput(unbounded=True),
        flink=_profile(worker_pool="127.0.0.1:50000", job_endpoint="127.0.0.1:1"),
        beam_args=["--max_bundle_size=500", "--sdk_worker_parallelism=1"],
    )
    options = pipeline_options(config).get_all_options(retain_unknown_options=False)
    assert options["max_bundle_size"] == 500
    assert str(options["sdk_worker_parallelism"]) == "1"  # liveagg's default is 2


@pytest.mark.parametrize(
    ("kwargs", "field", "says"),
    [
        ({"version": "1.17"}, "$.flink_version", "1.19, 1.20, 2.0, 2.1, 2.2"),
        ({"environment": "external"}, "$.flink_worker_pool", "--flink-worker-pool"),
        ({"parallelism": 0}, "$.parallelism", "positive"),
        ({"master": "[local]", "savepoint_on_stop": True}, "$.savepoint_on_stop", "cluster"),
        ({"job_server_jar": "/nonexistent.jar"}, "$.flink_job_server_jar", "no such file"),
    ],
)
def test_contradictory_flags_are_rejected_by_name(kwargs: dict, field: str, says: str) -> None:
    with pytest.raises(ViewError) as error:
        _profile(**kwargs).check()
    assert error.value.path == field
    assert says in str(error.value)


def _checkpoint(folder: Path, mtime: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "_metadata").write_bytes(b"x")
    os.utime(folder / "_metadata", (mtime, mtime))
    os.utime(folder, (mtime, mtime))
    return folder


def test_restore_takes_a_savepoint_as_is_and_the_newest_checkpoint_of_a_folder(
    tmp_path: Path,
) -> None:
    savepoint = _checkpoint(tmp_path / "savepoints" / "savepoint-abc", 100)
    assert resolve_restore(str(savepoint)) == str(savepoint)
    _checkpoint(tmp_path / "job" / "chk-3", 100)
    newest = _checkpoint(tmp_path / "job" / "chk-7", 200)
    (tmp_path / "job" / "chk-8").mkdir()  # in progress: no _metadata yet
    assert resolve_restore(str(tmp_path / "job")) == str(newest)
    assert resolve_restore(f"file://{tmp_path / 'job'}") == str(newest)
    assert resolve_restore(f"file:{savepoint}") == str(savepoint)
    assert resolve_restore("s3://bucket/savepoint-1") == "s3://bucket/savepoint-1"
    with pytest.raises(ViewError, match="no savepoint or completed checkpoint"):
        resolve_restore(str(tmp_path / "job" / "chk-8"))


def test_metrics_are_grouped_per_view_dead_letter_reason_and_partition() -> None:
    text = format_metrics(
        {
            "rows/v1": 10,
            "lag_seconds/v1": 42,
            "live_keys/v1": 3,
            "dead_letter/not_json": 2,
            "dead_letter/v1/not_json": 2,
            "kafka_lag_offsets/t/0": 5,
        }
    )
    assert "view v1: rows 10, lag 42 s, live keys 3" in text
    assert "dead letters: not_json 2" in text
    assert "kafka offsets behind: t/0 5" in text


def test_the_first_report_lists_every_view_and_partition_before_they_have_figures() -> None:
    text = format_metrics(
        {"rows/v2": 4, "kafka_lag_offsets/t/2": 7},
        views=["v1", "v2"],
        partitions=["t/0", "t/10", "t/2"],
    )
    assert "view v1: rows 0, live keys 0" in text
    assert "view v2: rows 4, live keys 0" in text
    assert "kafka offsets behind: t/0 -, t/2 7, t/10 -" in text  # "-": not measured yet


def test_the_newest_checkpoint_on_disk_wins_over_what_rest_named(tmp_path: Path) -> None:
    job = tmp_path / "checkpoints" / "job1"
    _checkpoint(job / "chk-6", 100)
    newest = _checkpoint(job / "chk-7", 200)
    savepoint = _checkpoint(tmp_path / "savepoints" / "savepoint-1", 150)
    # REST named an older savepoint, and a checkpoint Flink has deleted since.
    named = [f"file:{savepoint}", f"file:{job / 'chk-5'}"]
    assert newest_restore_point(named, f"file://{job}") == str(newest)
    assert newest_restore_point([], str(job)) == str(newest)
    later = _checkpoint(tmp_path / "savepoints" / "savepoint-2", 300)
    assert newest_restore_point([f"file:{later}"], str(job)) == str(later)


def test_a_remote_restore_point_is_what_rest_named_or_the_jobs_folder(tmp_path: Path) -> None:
    assert (
        newest_restore_point(["s3://b/ck/job1/chk-9"], "s3://b/ck/job1") == "s3://b/ck/job1/chk-9"
    )
    assert newest_restore_point([], "s3://b/ck/job1") == "s3://b/ck/job1 (its newest chk-N folder)"
    assert newest_restore_point([], str(tmp_path / "none")) is None  # no checkpoint completed
    assert newest_restore_point([], None) is None


def test_a_stopped_jobs_summary_comes_from_its_flink_accumulator() -> None:
    """Beam's job service has no metrics for a cancelled job; Flink keeps them in the job's
    accumulator (recorded from a cancelled job of the harness's cluster)."""
    found = json.loads((DATA / "flink_accumulators.json").read_text())
    counters = counter_values(accumulated_metrics(found["user-task-accumulators"]))
    assert sum(n for name, n in counters if name == "cassandra/rows_written") == 104 + 996
    assert not [name for name, _ in counters if name.startswith(("lag_seconds/", "kafka_lag"))]
    summary = _report(counters, None, ["ad_impressions", "network_telemetry"]).summary()
    assert "read 2000 lines = 1993 messages + 0 blank + 7 not messages (dead letters)" in summary
    assert "view ad_impressions: 996 rows" in summary
    assert "1993 messages = 481 used + 1509 filtered out + 3 dead letters" in summary
    assert "view network_telemetry: 104 rows" in summary
    assert "dead letters: 12" in summary
    assert accumulated_metrics([{"name": "other", "value": "1"}]) is None


def test_a_savepoint_refused_while_the_job_restarts_is_asked_for_again() -> None:
    """Flink refuses a savepoint while a restarted job's tasks deploy (the exact text of
    CheckpointFailureReason.NOT_ALL_REQUIRED_TASKS_RUNNING): liveagg asks again."""
    from liveagg.runners.flink_rest import initializing

    refused = (
        "CheckpointException: Checkpoint triggering task Source: Impulse (1/1) of job 1abc is "
        "not being executed at the moment. Aborting checkpoint. Failure reason: Not all "
        "required tasks are currently running."
    )
    assert initializing(refused)
    assert initializing("org.apache.flink...: JobManager is initializing")
    assert not initializing("CheckpointException: Checkpoint expired before completing.")
