"""The Prism profile: its options, the errors that say what to do, and the Prism-only parts of
the Kafka read and of Ctrl-C handling. No pipeline runs here (tests/conformance runs them)."""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path

import pytest

from integration.services import PrerequisiteError
from integration.services import prism as prism_build
from liveagg.errors import ViewError
from liveagg.loader import parse_view
from liveagg.pipelines.run import KafkaInput, RunConfig, _check_runner, pipeline_options
from liveagg.runners import RUNNERS, prism
from liveagg.transforms.kafka.source import PartitionRead, _process_watermark
from tests.support.cli import ROOT, liveagg

EARLY_VIEW = {
    "name": "early",
    "event_time": {"field": "ts"},
    "grouping_cols": ["k"],
    "window": {"size": "1m"},
    "emit": {"early": "5s"},
    "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "n"}],
}

EXAMPLE_VIEW = ROOT / "view_schemas" / "examples" / "network_telemetry.json"
EXAMPLE_INPUT = ROOT / "examples" / "data" / "events.jsonl"


def test_prism_is_a_runner_choice() -> None:
    assert RUNNERS == ("direct", "prism", "flink", "spark")


def test_beam_args_name_the_runner_and_the_binary(tmp_path: Path) -> None:
    binary = tmp_path / "prism"
    binary.write_bytes(b"")
    args = prism.PrismProfile(location=str(binary)).beam_args()
    assert args == [*prism.PrismProfile(location=None).beam_args(), f"--prism_location={binary}"]
    assert prism.PrismProfile(location=None).beam_args() == [
        "--runner=PrismRunner",
        "--prism_log_level=warn",
        "--experiments=prism_disable_sdf_split",
    ]


def test_prism_gets_the_experiment_that_turns_splits_off() -> None:
    config = RunConfig(views=[], runner="prism", beam_args=["--experiments=other"])
    options = pipeline_options(config).get_all_options()
    assert options["experiments"] == ["prism_disable_sdf_split", "other"]


def test_the_location_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAGG_PRISM_LOCATION", "/opt/prism")
    assert prism.PrismProfile().location == "/opt/prism"
    monkeypatch.setenv("LIVEAGG_PRISM_LOCATION", " ")
    assert prism.PrismProfile().location is None


def test_a_missing_binary_is_refused_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ViewError, match=r"--prism-location .*nope: no such file; .*go install"):
        prism.PrismProfile(location=str(missing)).check()
    prism.PrismProfile(location="https://example.invalid/prism.zip").check()  # Beam fetches it


def test_the_user_options_come_last(tmp_path: Path) -> None:
    config = RunConfig(views=[], runner="prism", beam_args=["--prism_log_level=debug"])
    options = pipeline_options(config).get_all_options()
    assert options["runner"] == "PrismRunner"
    assert options["prism_log_level"] == "debug"


def test_an_unbounded_read_needs_prism_not_direct() -> None:
    view = parse_view(EARLY_VIEW, origin="early.json")
    unbounded = KafkaInput(topics=["t"], unbounded=True)
    with pytest.raises(ViewError, match=r"\$.unbounded: .*run with --runner prism"):
        _check_runner(RunConfig(views=[], kafka=unbounded, runner="direct"), [view])
    _check_runner(RunConfig(views=[], kafka=unbounded, runner="prism"), [view])


def test_the_command_line_says_what_to_do_without_a_binary(tmp_path: Path) -> None:
    result = liveagg(
        *("run", "--views", str(EXAMPLE_VIEW), "--input", str(EXAMPLE_INPUT)),
        *("--output", str(tmp_path / "o")),
        *("--runner", "prism", "--prism-location", str(tmp_path / "missing")),
        ok=False,
    )
    assert result.returncode == 2  # a bad command line
    assert "--prism-location" in result.stderr and "no such file" in result.stderr


def test_each_partition_reports_the_minimum_watermark_of_the_read() -> None:
    reads = [PartitionRead("t", p, 0, None, 3, "read-1") for p in range(3)]
    assert _process_watermark(reads[0], 300) is None  # the others not heard from yet
    assert _process_watermark(reads[1], 100) is None
    assert _process_watermark(reads[2], None) is None  # known, but no event time yet
    assert _process_watermark(reads[2], 200) == 100
    assert _process_watermark(reads[1], 500) == 200  # partition 1 moved on
    other = PartitionRead("t", 0, 0, None, 1, "read-2")  # another read keeps its own
    assert _process_watermark(other, 7) == 7


def test_worker_tracebacks_go_to_debug_when_needless_or_after_a_cancel() -> None:
    stream = io.StringIO()
    quiet = prism._WorkerTracebacksToDebug(stream)
    worker = "Traceback (most recent call last):\n  File apache_beam/runners/worker/x\n"
    needless = f"{worker}RuntimeError: Bundle is not in a finalizable state for inst-7\n"
    print(needless, file=quiet)
    print(f"{worker}ValueError: a real failure", file=quiet)
    quiet.after_cancel = True
    print(f"{worker}grpc: cancelled", file=quiet)
    print("Traceback (most recent call last):\n  File mine.py", file=quiet)
    print("a line of the run", file=quiet)
    assert stream.getvalue() == (
        f"{worker}ValueError: a real failure\n"
        "Traceback (most recent call last):\n  File mine.py\na line of the run\n"
    )


def test_after_a_cancel_worker_records_go_to_debug() -> None:
    drop = prism._DropAfterCancel()

    def record(name: str, level: int, message: str = "m") -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    assert not drop.filter(record("PrismRunner", logging.ERROR))
    assert not drop.filter(record("apache_beam.runners.worker.sdk_worker", logging.ERROR))
    assert drop.filter(record("liveagg.pipelines.run", logging.ERROR))
    needless = prism._NotFinalizableToDebug()
    sdk = "apache_beam.runners.worker.sdk_worker"
    assert not needless.filter(record(sdk, logging.ERROR, "Bundle is not in a finalizable state"))
    assert needless.filter(record(sdk, logging.ERROR, "Error processing instruction 3"))


def test_thread_exceptions_from_beam_go_to_debug_after_a_cancel() -> None:
    handed_on: list[BaseException] = []
    hook = prism._quiet_beam_threads(lambda args: handed_on.append(args.exc_value))

    def raise_in(code: str) -> threading.ExceptHookArgs:
        try:
            exec(compile(code, filename, "exec"), {})
        except RuntimeError as e:
            return threading.ExceptHookArgs((RuntimeError, e, e.__traceback__, None))
        raise AssertionError("no exception")

    filename = f"/x/apache_beam{os.sep}runners{os.sep}worker/sdk_worker.py"
    hook(raise_in("raise RuntimeError('stream removed')"))
    filename = "/x/liveagg/mine.py"
    mine = raise_in("raise RuntimeError('mine')")
    hook(mine)
    assert handed_on == [mine.exc_value]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"time":"t","level":"WARN","msg":"Unexpected split","bundle":"b1"}',
         (logging.WARNING, "Unexpected split (bundle='b1')")),
        ('{"time":"t","level":"ERROR+2","msg":"boom"}', (logging.ERROR + 2, "boom")),
        ('{"time":"t","level":"INFO","msg":"log from SDK worker","sdk":{"msg":"hi"}}',
         (logging.DEBUG, "hi")),
        ("not json at all", (logging.INFO, "not json at all")),
        ('{"level": "WARN"}', (logging.INFO, '{"level": "WARN"}')),
    ],
)  # fmt: skip
def test_prism_log_lines_keep_their_level(line: str, expected: tuple[int, str]) -> None:
    assert prism.prism_record(line) == expected


def test_building_prism_without_go_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PrerequisiteError, match=r"go not found on the PATH: .*--prism-location"):
        prism_build.go_executable()


def test_the_binary_is_kept_per_beam_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LIVEAGG_CACHE_DIR", str(tmp_path))
    assert prism_build.binary_path("2.77.0") == tmp_path / "prism" / "v2.77.0" / "prism"
    assert prism_build.binary_path().parent.name == f"v{prism_build.beam_version()}"


def test_the_version_is_the_one_the_sdk_reports() -> None:
    from apache_beam.version import __version__

    assert prism_build.beam_version() == __version__
