"""Huge numbers never fail an aggregation, and a result beyond a double is an infinity.

Checked against exact rational arithmetic (``fractions.Fraction``), through every path an
accumulator takes: a batch, one value at a time, shards merged in any order after a trip
through bytes. ``ViewPlan.row`` turns an infinite result into null and an ``overflow`` dead
letter (tests/transforms/test_messages.py).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import liveagg.combiners as lc

HUGE = [1.7e308, -1.7e308, 1e308, -1e308, 9e307, 10**308, -(10**308), 1e154, -1e154]
SMALL = [1.5, -2.25, 0.0, 3, -7, 2**70, 1e-300]
VALUES = st.lists(st.sampled_from(HUGE + SMALL), min_size=1, max_size=12)
_MAX = Fraction(1.7976931348623157e308)


def _paths(fn: lc.LiveaggCombineFn, values: list[Any], order: list[int]) -> list[Any]:
    """The result of every way an accumulator can be built from ``values``: a batch, one by
    one, and one shard per value through bytes merged in ``order`` (all at once, pairwise,
    then through bytes again). Merges may reuse their first accumulator: each gets its own."""

    def shards() -> list[Any]:
        accs = [fn.add_input(fn.create_accumulator(), value) for value in values]
        accs = [fn.decode_accumulator(fn.encode_accumulator(acc)) for acc in accs]
        ranks = [i for i in order if i < len(accs)] or list(range(len(accs)))
        return [accs[i] for i in ranks]

    batch = fn.add_inputs(fn.create_accumulator(), list(values))
    single = fn.create_accumulator()
    for value in values:
        single = fn.add_input(single, value)
    merged = fn.merge_accumulators(shards())
    pieces = shards()
    pairwise = fn.merge_accumulators(
        [fn.merge_accumulators(pieces[i : i + 2]) for i in range(0, len(pieces), 2)]
    )
    through_bytes = fn.decode_accumulator(fn.encode_accumulator(pairwise))
    return [fn.extract_output(acc) for acc in (batch, single, merged, through_bytes)]


def _expect(results: list[Any], exact: Fraction, scale: float) -> None:
    try:
        expected = float(exact)
    except OverflowError:
        assert results == [math.inf if exact > 0 else -math.inf] * len(results)
        return
    for result in results:
        assert math.isclose(result, expected, rel_tol=1e-12, abs_tol=1e-28 * scale), results


@settings(max_examples=300, derandomize=True, deadline=None)
@given(VALUES, st.permutations(range(12)))
def test_sum_and_mean_are_the_exact_result_rounded(values: list[Any], order: list[int]) -> None:
    exact = sum(map(Fraction, values))
    scale = float(sum(abs(Fraction(v)) for v in values) / 2**20)  # Neumaier's error term
    if all(type(v) is int for v in values):
        assert _paths(lc.create("sum", {}), values, order) == [exact] * 4
    else:
        _expect(_paths(lc.create("sum", {}), values, order), exact, scale)
    _expect(_paths(lc.create("mean", {}), values, order), exact / len(values), scale)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(VALUES, st.permutations(range(12)))
def test_variance_overflows_only_when_its_sum_of_squares_does(
    values: list[Any], order: list[int]
) -> None:
    exact = [Fraction(v) for v in values]
    mean = sum(exact) / len(exact)
    m2 = sum((x - mean) ** 2 for x in exact)
    for kind in ("variance", "stddev"):
        results = _paths(lc.create(kind, {"ddof": 0}), values, order)
        if m2 > _MAX:
            assert results == [math.inf] * 4
        elif m2 <= _MAX / 4:  # between, the order of additions decides
            variance = m2 / len(exact)
            expected = float(variance) if kind == "variance" else math.sqrt(variance)
            scale = float(max(abs(x - mean) for x in exact)) ** 2 if m2 else 0.0
            for result in results:
                assert math.isclose(result, expected, rel_tol=1e-9, abs_tol=1e-12 * scale)


@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        ("sum", [1.7e308, 1.7e308], math.inf),
        ("sum", [-1.7e308, -1.7e308], -math.inf),
        ("sum", [1.7e308, 1.7e308, -1.7e308], 1.7e308),
        ("sum", [10**308, 10**308, 0.5], math.inf),
        ("sum", [10**308, 10**308], 2 * 10**308),  # an int sum is exact, of any size
        ("mean", [1.7e308, 1.7e308], 1.7e308),
        ("variance", [1e200, -1e200], math.inf),
        ("stddev", [1e200, -1e200], math.inf),
        ("variance", [0, 1.5e154], 1.1250000000000002e308),
        ("histogram", [1.7e308, -1.7e308, 10**308], [1, 0, 2]),
        ("min", [1.7e308, 10**308, -(10**308)], -(10**308)),
    ],
)
def test_examples(kind: str, values: list[Any], expected: Any) -> None:
    params = {"bounds": [0, 1]} if kind == "histogram" else {}
    fn = lc.create(kind, params)
    values = [fn.coerce(v) for v in values]
    assert _paths(fn, values, []) == [expected] * 4


def test_spilled_sums_keep_a_sixth_field_and_ordinary_ones_their_bytes() -> None:
    fn = lc.create("sum", {})
    ordinary = fn.add_inputs(fn.create_accumulator(), [1.5, 2])
    assert fn.encode_accumulator(ordinary) == b"\x01[2,1.5,0.0,1,1]"
    spilled = fn.add_inputs(fn.create_accumulator(), [1.7e308, 1.7e308])
    assert len(spilled) == 6
    decoded = fn.decode_accumulator(fn.encode_accumulator(spilled))
    assert decoded == spilled
    assert fn.extract_output(fn.merge_accumulators([decoded, ordinary])) == math.inf
    back_to_zero = fn.add_inputs(fn.create_accumulator(), [1.7e308, 1.7e308, -1.7e308, -1.7e308])
    assert back_to_zero[5] == 0 and fn.extract_output(back_to_zero) == 0.0
    assert fn.encode_accumulator(back_to_zero) == b"\x01[0,0.0,0.0,0,4]"
    with pytest.raises(ValueError, match=r"expected \[int sum.*other than 0"):
        fn.decode_accumulator(b"\x01[0,0.0,0.0,0,4,0]")
    with pytest.raises(ValueError, match=r"expected \[int sum"):
        fn.decode_accumulator(b"\x01[1,2]")


def test_overflowed_moments_survive_bytes_and_merges() -> None:
    fn = lc.create("variance", {})
    over = fn.add_inputs(fn.create_accumulator(), [1e200, -1e200])
    assert over == [2, None, None]
    back = fn.decode_accumulator(fn.encode_accumulator(over))
    small = fn.add_inputs(fn.create_accumulator(), [1.0, 2.0])
    assert fn.merge_accumulators([small, back]) == [4, None, None]
    assert fn.extract_output(fn.add_input(back, 3.0)) == math.inf
