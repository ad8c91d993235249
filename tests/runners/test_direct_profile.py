"""``--runner direct`` runs on Beam's Python engines and never tries Prism."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import prism_runner
from apache_beam.testing.util import assert_that, equal_to

from liveagg.runners import direct


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
