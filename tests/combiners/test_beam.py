"""Every case inside a real Beam pipeline: pickled by Beam, combiner lifting, accumulators
crossing the shuffle through :class:`~liveagg.combiners.base.AccumulatorCoder`."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from .cases import CASES, check_case, coerce_all

KEYS = ("a", "b", "c")

# Inputs by case index and key. The pipeline carries indexes into it: Beam would pick an
# int64-only coder for the "sum-ints" values, while the runtime carries parsed JSON of any size.
Inputs = dict[int, dict[str, list[Any]]]


def _lookup(ref: tuple[int, str, int], inputs: Inputs) -> tuple[int, tuple[str, Any]]:
    case, key, index = ref
    return case, (key, inputs[case][key][index])


def _by_case(element: tuple[int, Any], partitions: int) -> int:
    return element[0]


def _matches(ids: list[str], inputs: Inputs) -> Callable[[list[Any]], None]:
    # Only plain data and module-level functions are captured: Beam pickles the matcher.
    def check(actual: list[tuple[int, str, Any]]) -> None:
        seen = sorted((case, key) for case, key, _ in actual)
        expected = sorted((case, key) for case in inputs for key in inputs[case])
        if seen != expected:
            raise BeamAssertException(f"got results for {seen}, expected {expected}")
        for case, key, output in actual:
            try:
                check_case(ids[case], output, inputs[case][key])
            except AssertionError as e:
                raise BeamAssertException(f"{ids[case]}[{key}]: {e}") from e

    return check


def test_every_case_in_a_beam_pipeline() -> None:
    fns = [case.make() for case in CASES]
    inputs: Inputs = {
        i: {
            key: coerce_all(fns[i], case.sample(random.Random(f"{case.id}/{key}"), 150))
            for key in KEYS
        }
        for i, case in enumerate(CASES)
    }
    refs = [
        (case, key, index)
        for case in inputs
        for key in KEYS
        for index in range(len(inputs[case][key]))
    ]
    with test_pipeline.TestPipeline() as pipeline:
        parts = (
            pipeline
            | "Create" >> beam.Create(refs)
            | "Values" >> beam.Map(_lookup, inputs)
            | "ByCase" >> beam.Partition(_by_case, len(CASES))
        )
        results = [
            parts[i]
            | f"Drop {case.id}" >> beam.Values()
            | f"Combine {case.id}" >> beam.CombinePerKey(fns[i])
            | f"Tag {case.id}" >> beam.MapTuple(lambda key, out, i=i: (i, key, out))
            for i, case in enumerate(CASES)
        ]
        assert_that(results | beam.Flatten(), _matches([case.id for case in CASES], inputs))
