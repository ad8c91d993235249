"""``--runner direct`` runs on Beam's Python engines and never tries Prism."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import prism_runner
from apache_beam.testing.util import assert_that, equal_to

from liveagg.runners import direct
from tests.support.cli import liveagg


class _PrismTried(Exception):
    pass


@pytest.fixture
def prism_tries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Runs handed to ``PrismRunner``: each is refused, so that Beam falls back."""
    tries: list[str] = []

    def refuse(self: Any, pipeline: Any, options: Any) -> None:
        tries.append(type(self).__name__)
        raise _PrismTried

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    return tries


def _run(args: list[str]) -> None:
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        doubled = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: 2 * x)
        assert_that(doubled, equal_to([2, 4, 6]))


def test_beams_direct_runner_tries_prism_first(prism_tries: list[str]) -> None:
    """The behaviour liveagg's runner avoids (if this fails, Beam changed its switch)."""
    _run(["--runner=DirectRunner"])
    assert prism_tries == ["PrismRunner"]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_direct_profile_runs_without_trying_prism(prism_tries: list[str], workers: int) -> None:
    _run(direct.beam_args(workers))
    assert prism_tries == []


def test_a_pipeline_the_python_engine_cannot_run_still_gets_the_bundle_based_runner(
    prism_tries: list[str],
) -> None:
    """A ``TestStream`` needs the BundleBasedDirectRunner: the rest of Beam's switch holds."""
    from apache_beam.testing.test_stream import TestStream

    options = PipelineOptions([*direct.beam_args(), "--streaming"])
    with beam.Pipeline(options=options) as p:
        stream = TestStream().add_elements([1, 2]).advance_watermark_to_infinity()
        assert_that(p | stream | beam.Map(lambda x: x + 1), equal_to([2, 3]))
    assert prism_tries == []


def test_worker_processes_log_as_the_run_does(tmp_path: Path) -> None:
    """With two worker processes stderr stays empty (Beam's workers printed about 40 INFO
    lines), ``-v`` shows the workers' records, and the rows are those of one worker."""
    view = tmp_path / "v.json"
    view.write_text(
        '{"name": "per_key", "event_time": {"field": "ts"}, "grouping_cols": ["k"],'
        ' "window": {"size": "1m"}, "aggregation_info": [{"aggregation": "count",'
        ' "aggregated_col_name": "n"}, {"aggregation": "sum", "col_name": "v",'
        ' "aggregated_col_name": "total"}]}'
    )
    lines = [f'{{"ts": {1_700_000_000 + i}, "k": "k{i % 7}", "v": {i}}}' for i in range(500)]
    (tmp_path / "in.jsonl").write_text("\n".join([*lines, "not json"]) + "\n")
    rows = {}
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        args = ["--views", str(view), "--input", str(tmp_path / "in.jsonl"), "--output", str(out)]
        result = liveagg("run", *args, "--direct-num-workers", workers)
        assert result.stderr == "", result.stderr
        rows[workers] = sorted(
            line for path in (out / "per_key").iterdir() for line in path.read_text().splitlines()
        )
    assert rows["1"] == rows["2"] and len(rows["1"]) == 9 * 7  # windows x keys
    args = ["--views", str(view), "--input", str(tmp_path / "in.jsonl")]
    verbose = liveagg(
        "-v", "run", *args, "--output", str(tmp_path / "v"), "--direct-num-workers", "2"
    )
    assert "apache_beam.runners.worker.sdk_worker" in verbose.stderr
