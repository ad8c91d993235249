"""The cases the shared combiner harness runs: every built-in aggregation and a custom one.

Each case names an aggregation and its params, how to draw valid inputs (a hypothesis
strategy and a seeded generator), and how to check a result against the inputs with an
oracle written from the contract (SPEC section 1) in plain Python: ``statistics``, sorted
lists, ``collections.Counter``, exact fractions. Nothing here calls the code under test to
compute an expected value.
"""

from __future__ import annotations

import base64
import math
import random
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from datasketches import hll_sketch
from hypothesis import strategies as st

import liveagg.combiners as lc

CUSTOM_RANGE = "examples.custom_combiners:RangeFn"

# -------------------------------------------------------------------------------------------
# Value identity and order as the contract defines them
# -------------------------------------------------------------------------------------------


def json_kind(value: Any) -> str:
    """``b``oolean, ``n``umber or ``s``tring: JSON's types, where ``True`` is not ``1``."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int | float):
        return "n"
    if isinstance(value, str):
        return "s"
    raise TypeError(f"not a JSON scalar: {value!r}")


def identity(value: Any) -> tuple[str, Any]:
    """Equal for equal values: numbers by value (``1 == 1.0``), other types kept apart."""
    return (json_kind(value), value)


_RANK = {"n": 0, "s": 1, "b": 2}


def order(value: Any) -> tuple[int, Any]:
    """Numbers, then strings, then false < true."""
    return (_RANK[json_kind(value)], value)


def canon(value: Any) -> Any:
    """A form in which ``==`` is JSON equality: ``true != 1``, ``1 == 1.0``."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return tuple(canon(v) for v in value)
    return identity(value)


def assert_json_equal(actual: Any, expected: Any) -> None:
    assert canon(actual) == canon(expected), f"{actual!r} != {expected!r}"


def coerce_all(fn: lc.LiveaggCombineFn, raw: list[Any]) -> list[Any]:
    """What the runtime feeds ``add_input``: coerced values, paired with times if needed."""
    if fn.needs_event_time:
        return [(time_us, fn.coerce(value)) for time_us, value in raw]
    return [fn.coerce(value) for value in raw]


# -------------------------------------------------------------------------------------------
# Inputs
# -------------------------------------------------------------------------------------------

_FLOAT = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
NUMBERS = st.lists(
    st.one_of(st.integers(-1000, 1000), _FLOAT, st.sampled_from([0.0, -0.0, 2.0, 0.5, 10, 100])),
    max_size=60,
)
INTS = st.lists(st.integers(-(2**80), 2**80), max_size=40)
_SCALAR = st.one_of(
    st.sampled_from(["a", "b", "1", "true", "", "é", "Z"]),
    st.text(max_size=3),
    st.integers(-3, 3),
    st.sampled_from([1.0, 2.0, -0.0, 0.5, 2**70, -(2**70), 2.0**70, 1e300]),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
SCALARS = st.lists(_SCALAR, max_size=60)
WIDE_NUMBERS = st.lists(
    st.one_of(
        st.integers(-(2**70), 2**70),
        _FLOAT,
        st.sampled_from([0, 0.0, -0.0, 2, 2.0, 2**70, 2.0**70, 2**70 + 1, -1e300, 1e300]),
    ),
    max_size=60,
)
#: Doubles only, integral ones beyond 64 bits among them (a column the engine holds as float64).
WIDE_FLOATS = st.lists(
    st.one_of(_FLOAT, st.sampled_from([0.0, -0.0, 2.0, 2.0**70, -(2.0**70), -1e300, 1e308])),
    max_size=60,
)
PAIRS = st.lists(st.tuples(st.integers(0, 20), _SCALAR), max_size=40)
ANYTHING = st.lists(
    st.one_of(_SCALAR, st.lists(st.integers(), max_size=2), st.dictionaries(st.text(), st.none())),
    max_size=60,
)


def sample_numbers(rng: random.Random, n: int) -> list[Any]:
    def one() -> Any:
        r = rng.random()
        if r < 0.4:
            return rng.randint(-1000, 1000)
        if r < 0.8:
            return rng.uniform(-1e6, 1e6)
        return rng.choice([0.0, -0.0, 2.0, 0.5, 10, 100, 1e-9])

    return [one() for _ in range(n)]


def sample_scalars(rng: random.Random, n: int) -> list[Any]:
    def one() -> Any:
        r = rng.random()
        if r < 0.3:
            return rng.choice(["a", "b", "1", "true", "", "é"]) + str(rng.randint(0, 30))
        if r < 0.6:
            return rng.randint(-50, 50)
        if r < 0.8:
            return rng.choice([1.0, 2.0, -0.0, 0.5, 2.5, 2**70, 2.0**70, 1e300])
        if r < 0.9:
            return rng.random() < 0.5
        return rng.uniform(-10, 10)

    return [one() for _ in range(n)]


def sample_wide_numbers(rng: random.Random, n: int) -> list[Any]:
    """Numbers, with big ints (exact beyond 64 bits) and equal ints and floats mixed in."""
    numbers = sample_numbers(rng, n)
    return [rng.randint(-(2**70), 2**70) if rng.random() < 0.2 else v for v in numbers]


def sample_wide_floats(rng: random.Random, n: int) -> list[Any]:
    """Doubles only, with integral ones beyond 64 bits (``1e308`` is a double, not an int)."""
    big = [2.0**70, -(2.0**70), -1e300, 1e308]
    return [rng.choice(big) if rng.random() < 0.2 else rng.uniform(-1e6, 1e6) for _ in range(n)]


def sample_pairs(rng: random.Random, n: int) -> list[Any]:
    return list(
        zip([rng.randint(0, n // 4) for _ in range(n)], sample_scalars(rng, n), strict=True)
    )


def sample_anything(rng: random.Random, n: int) -> list[Any]:
    return [[v] if rng.random() < 0.1 else v for v in sample_scalars(rng, n)]


def sample_big_ints(rng: random.Random, n: int) -> list[Any]:
    return [rng.randint(-(2**80), 2**80) for _ in range(n)]


# -------------------------------------------------------------------------------------------
# Checks: ``check(actual, inputs)`` raises AssertionError when ``actual`` is wrong
# -------------------------------------------------------------------------------------------

Check = Callable[[Any, list[Any]], None]


def exact(oracle: Callable[[list[Any]], Any]) -> Check:
    def check(actual: Any, inputs: list[Any]) -> None:
        assert_json_equal(actual, oracle(inputs))

    return check


def _close(actual: float | None, expected: float | None, abs_tol: float) -> None:
    if expected is None:
        assert actual is None, actual
        return
    assert isinstance(actual, float), actual
    assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=abs_tol), (actual, expected)


def check_sum(actual: Any, inputs: list[Any]) -> None:
    if not inputs:
        assert actual is None
    elif all(type(v) is int for v in inputs):
        assert type(actual) is int and actual == sum(inputs), (actual, sum(inputs))
    else:
        expected = float(sum(Fraction(v) for v in inputs))
        scale = math.fsum(abs(v) for v in inputs)
        _close(actual, expected, abs_tol=4 * scale * 2**-52)


def check_mean(actual: Any, inputs: list[Any]) -> None:
    if not inputs:
        assert actual is None
        return
    expected = float(sum(Fraction(v) for v in inputs) / len(inputs))
    _close(actual, expected, abs_tol=4 * max(abs(v) for v in inputs) * 2**-52)


def exact_variance(inputs: list[Any], ddof: int) -> float | None:
    n = len(inputs)
    if n <= ddof:
        return None
    mean = sum(Fraction(v) for v in inputs) / n
    return float(sum((Fraction(v) - mean) ** 2 for v in inputs) / (n - ddof))


def check_variance(ddof: int, root: bool) -> Check:
    def check(actual: Any, inputs: list[Any]) -> None:
        expected = exact_variance(inputs, ddof)
        if expected is not None and root:
            expected = math.sqrt(expected)
        # Rounding error of a moment computation grows with the squared magnitude of the data.
        scale = max((abs(v) for v in inputs), default=0.0)
        _close(actual, expected, abs_tol=len(inputs) * (scale if root else scale * scale) * 1e-14)

    return check


def check_extreme(pick: Callable[..., Any]) -> Check:
    """min/max: the smallest / largest number, an input itself (ints stay ints)."""

    def check(actual: Any, inputs: list[Any]) -> None:
        if not inputs:
            assert actual is None, actual
            return
        expected = pick(inputs)
        assert type(actual) is type(expected) and actual == expected, (actual, expected)

    return check


def distinct(inputs: list[Any]) -> set[tuple[str, Any]]:
    return {identity(v) for v in inputs}


def hll_bound(lg_k: int, true_count: int) -> float:
    """3 relative standard errors of a merged HLL estimate (1.04 / sqrt(K)), plus rounding."""
    return 3 * 1.04 / math.sqrt(2**lg_k) * true_count + 1


def check_count_distinct(lg_k: int) -> Check:
    def check(actual: Any, inputs: list[Any]) -> None:
        true_count = len(distinct(inputs))
        assert type(actual) is int
        assert abs(actual - true_count) <= hll_bound(lg_k, true_count), (actual, true_count)

    return check


def check_hll_sketch(lg_k: int) -> Check:
    def check(actual: Any, inputs: list[Any]) -> None:
        if not inputs:
            assert actual is None
            return
        sketch = hll_sketch.deserialize(base64.b64decode(actual, validate=True))
        assert sketch.lg_config_k == lg_k
        true_count = len(distinct(inputs))
        assert abs(sketch.get_estimate() - true_count) <= hll_bound(lg_k, true_count)

    return check


#: KLL normalized rank error for k=200, as published for the whole-distribution query.
KLL_EPS_200 = 0.0165


def check_quantiles(quantiles: list[float], k: int, eps: float) -> Check:
    """Each result must be an input whose rank in the sorted data is within ``eps`` of ``q``.

    With at most ``k`` inputs the sketch is exact and the inclusive definition must hold
    exactly: the smallest value ``v`` with ``#(x <= v) >= q n``.
    """

    def check(actual: Any, inputs: list[Any]) -> None:
        if not inputs:
            assert actual is None
            return
        data = sorted(float(v) for v in inputs)
        n = len(data)
        assert isinstance(actual, list) and len(actual) == len(quantiles)
        assert actual == sorted(actual), "quantiles must not decrease with the rank"
        for q, value in zip(quantiles, actual, strict=True):
            assert type(value) is float
            below, at_or_below = bisect_left(data, value), bisect_right(data, value)
            assert at_or_below > below, f"{value} is not one of the inputs"
            if q == 0:
                assert value == data[0]
            elif q == 1:
                assert value == data[-1]
            elif n <= k:
                assert below < q * n * (1 + 1e-12) and q * n <= at_or_below * (1 + 1e-12), (
                    q,
                    value,
                    below,
                    at_or_below,
                    n,
                )
            else:
                assert below / n - eps <= q <= at_or_below / n + eps, (q, value, below / n)

    return check


def check_monotone_quantiles(quantiles: list[float]) -> Check:
    """For a tiny ``k``: results are inputs, ordered, with the exact extremes at 0 and 1."""

    def check(actual: Any, inputs: list[Any]) -> None:
        if not inputs:
            assert actual is None
            return
        data = {float(v) for v in inputs}
        assert actual == sorted(actual)
        assert all(value in data for value in actual)
        assert actual[quantiles.index(0)] == min(data)
        assert actual[quantiles.index(1)] == max(data)

    return check


def top_k(inputs: list[Any], k: int) -> list[list[Any]] | None:
    if not inputs:
        return None
    counts = Counter(identity(v) for v in inputs)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], order(item[0][1])))
    return [[ident[1], count] for ident, count in ranked[:k]]


def collect_set(inputs: list[Any], max_size: int) -> list[Any] | None:
    if not inputs:
        return None
    values = {identity(v): v for v in inputs}.values()
    return sorted(values, key=order)[:max_size]


def histogram(inputs: list[Any], bounds: list[float]) -> list[int]:
    counts = [0] * (len(bounds) + 1)
    for value in inputs:
        if value < bounds[0]:
            counts[0] += 1
            continue
        for i in range(len(bounds)):
            upper = bounds[i + 1] if i + 1 < len(bounds) else math.inf
            if bounds[i] <= value < upper:
                counts[i + 1] += 1
    return counts


def first_or_last(pairs: list[Any], last: bool) -> Any:
    if not pairs:
        return None
    ranked = sorted(pairs, key=lambda pair: (pair[0], order(pair[1])))
    return ranked[-1 if last else 0][1]


def value_range(inputs: list[Any]) -> float | None:
    if not inputs:
        return None
    return float(max(inputs)) - float(min(inputs))


# -------------------------------------------------------------------------------------------
# The cases
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One aggregation with fixed params, its inputs and its oracle.

    Attributes:
        id: pytest id.
        kind: the ``aggregation`` name of a view (``custom`` for a dotted path).
        params: the view's ``params``.
        values: hypothesis strategy of raw input lists.
        sample: seeded generator of raw input lists, ``sample(rng, n)``.
        check: ``check(actual, coerced_inputs)`` asserts the result is right.
        deterministic: equal inputs give an equal result whatever the sharding and merge
            order (exact aggregations); otherwise only ``check`` must hold.
    """

    id: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    values: st.SearchStrategy = NUMBERS
    sample: Callable[[random.Random, int], list[Any]] = sample_numbers
    check: Check = field(default=exact(len))
    deterministic: bool = True

    def make(self) -> lc.LiveaggCombineFn:
        return lc.create(self.kind, self.params)


_HIST_BOUNDS = [0, 10, 100]
_HIST_FLOAT_BOUNDS = [-1.5, 0.0, 2.5, 1e5]
_QUANTILES = [0.5, 0.9, 0.99]
_ALL_QUANTILES = [0, 0.01, 0.25, 0.5, 0.75, 0.99, 1]

CASES: list[Case] = [
    Case("count", "count", values=ANYTHING, sample=sample_anything),
    Case("count-numbers", "count"),
    Case("sum", "sum", check=check_sum, deterministic=False),
    Case("sum-ints", "sum", values=INTS, sample=sample_big_ints, check=check_sum),
    Case(
        "min",
        "min",
        values=WIDE_NUMBERS,
        sample=sample_wide_numbers,
        check=check_extreme(min),
    ),
    Case(
        "max",
        "max",
        values=WIDE_NUMBERS,
        sample=sample_wide_numbers,
        check=check_extreme(max),
    ),
    Case(
        "max-floats", "max", values=WIDE_FLOATS, sample=sample_wide_floats, check=check_extreme(max)
    ),
    Case(
        "min-floats", "min", values=WIDE_FLOATS, sample=sample_wide_floats, check=check_extreme(min)
    ),
    Case("mean", "mean", check=check_mean, deterministic=False),
    Case("variance", "variance", check=check_variance(1, False), deterministic=False),
    Case(
        "variance-ddof0",
        "variance",
        {"ddof": 0},
        check=check_variance(0, False),
        deterministic=False,
    ),
    Case("stddev", "stddev", check=check_variance(1, True), deterministic=False),
    Case("stddev-ddof2", "stddev", {"ddof": 2}, check=check_variance(2, True), deterministic=False),
    Case(
        "count_distinct",
        "count_distinct",
        values=SCALARS,
        sample=sample_scalars,
        check=check_count_distinct(12),
        deterministic=False,
    ),
    Case(
        "count_distinct-lg4-hll4",
        "count_distinct",
        {"lg_k": 4, "hll_type": "HLL_4"},
        values=SCALARS,
        sample=sample_scalars,
        check=check_count_distinct(4),
        deterministic=False,
    ),
    Case(
        "hll_sketch-lg10-hll6",
        "hll_sketch",
        {"lg_k": 10, "hll_type": "HLL_6"},
        values=SCALARS,
        sample=sample_scalars,
        check=check_hll_sketch(10),
        deterministic=False,
    ),
    Case(
        "count_distinct_exact",
        "count_distinct_exact",
        values=SCALARS,
        sample=sample_scalars,
        check=exact(lambda xs: len(distinct(xs))),
    ),
    Case(
        "approx_quantiles",
        "approx_quantiles",
        check=check_quantiles(_QUANTILES, 200, KLL_EPS_200),
        deterministic=False,
    ),
    Case(
        "approx_quantiles-all-ranks",
        "approx_quantiles",
        {"quantiles": _ALL_QUANTILES},
        check=check_quantiles(_ALL_QUANTILES, 200, KLL_EPS_200),
        deterministic=False,
    ),
    Case(
        "approx_quantiles-k8",
        "approx_quantiles",
        {"quantiles": _ALL_QUANTILES, "k": 8},
        check=check_monotone_quantiles(_ALL_QUANTILES),
        deterministic=False,
    ),
    Case(
        "top_k",
        "top_k",
        values=SCALARS,
        sample=sample_scalars,
        check=exact(lambda xs: top_k(xs, 10)),
    ),
    Case(
        "top_k-3",
        "top_k",
        {"k": 3},
        values=SCALARS,
        sample=sample_scalars,
        check=exact(lambda xs: top_k(xs, 3)),
    ),
    Case(
        "collect_set",
        "collect_set",
        values=SCALARS,
        sample=sample_scalars,
        check=exact(lambda xs: collect_set(xs, 1000)),
    ),
    Case(
        "collect_set-5",
        "collect_set",
        {"max_size": 5},
        values=SCALARS,
        sample=sample_scalars,
        check=exact(lambda xs: collect_set(xs, 5)),
    ),
    Case(
        "histogram",
        "histogram",
        {"bounds": _HIST_BOUNDS},
        check=exact(lambda xs: histogram(xs, _HIST_BOUNDS)),
    ),
    Case(
        "histogram-float-bounds",
        "histogram",
        {"bounds": _HIST_FLOAT_BOUNDS},
        check=exact(lambda xs: histogram(xs, _HIST_FLOAT_BOUNDS)),
    ),
    Case(
        "first",
        "first",
        values=PAIRS,
        sample=sample_pairs,
        check=exact(lambda xs: first_or_last(xs, last=False)),
    ),
    Case(
        "last",
        "last",
        values=PAIRS,
        sample=sample_pairs,
        check=exact(lambda xs: first_or_last(xs, last=True)),
    ),
    Case(
        "custom-range",
        "custom",
        {"combine_fn": CUSTOM_RANGE},
        check=exact(value_range),
    ),
]

CASES_BY_ID = {case.id: case for case in CASES}


def check_case(case_id: str, actual: Any, inputs: list[Any]) -> None:
    """``CASES_BY_ID[case_id].check``, reachable by name from a pickled closure."""
    CASES_BY_ID[case_id].check(actual, inputs)


#: What a group with no non-null input yields (SPEC section 1), by aggregation.
EMPTY_OUTPUT: dict[str, Any] = {
    "count": 0,
    "count_distinct": 0,
    "count_distinct_exact": 0,
}


def empty_output(case: Case) -> Any:
    if case.kind == "histogram":
        return [0] * (len(case.params["bounds"]) + 1)
    return EMPTY_OUTPUT.get(case.kind)
