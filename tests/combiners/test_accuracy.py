"""The sketches against their documented error bounds, on data large enough to need them.

Expected values are computed exactly and independently (sets, sorted lists, Counter). The
inputs are seeded; HLL and frequent items are deterministic for given inputs, KLL is
randomized but its observed error stays well inside the published 99th-percentile bound
(about 0.6% against 1.65% at k=200 in thousands of trials).
"""

from __future__ import annotations

import base64
import math
import random
from bisect import bisect_left, bisect_right
from collections import Counter
from typing import Any

import pytest
from datasketches import hll_sketch, hll_union

import liveagg.combiners as lc

from .cases import identity, order


def accumulate_sharded(fn: lc.LiveaggCombineFn, values: list[Any], shards: int, seed: int) -> Any:
    """Accumulate ``values`` in ``shards`` random pieces, through bytes, merged shuffled."""
    rng = random.Random(seed)
    pieces: list[list[Any]] = [[] for _ in range(shards)]
    for value in values:
        pieces[rng.randrange(shards)].append(value)
    accs = [
        fn.decode_accumulator(fn.encode_accumulator(fn.add_inputs(fn.create_accumulator(), p)))
        for p in pieces
    ]
    rng.shuffle(accs)
    return fn.merge_accumulators(accs)


def distinct_values(n: int, seed: int) -> list[Any]:
    """``n`` distinct values of mixed JSON types, each repeated 1 to 3 times, shuffled."""
    rng = random.Random(seed)
    kinds = [lambda i: f"user-{i}", lambda i: i * 7919, lambda i: i + 0.25]
    distinct = [kinds[i % 3](i) for i in range(n)]
    values = [v for v in distinct for _ in range(rng.randint(1, 3))]
    rng.shuffle(values)
    return values


HLL_PARAMS = [(12, "HLL_8"), (10, "HLL_4"), (14, "HLL_6")]


@pytest.mark.parametrize("lg_k, hll_type", HLL_PARAMS)
@pytest.mark.parametrize("n", [10_000, 30_000, 100_000])
def test_count_distinct_within_three_rse(lg_k: int, hll_type: str, n: int) -> None:
    fn = lc.create("count_distinct", {"lg_k": lg_k, "hll_type": hll_type})
    values = [fn.coerce(v) for v in distinct_values(n, seed=n + lg_k)]
    true_count = len({identity(v) for v in values})
    assert true_count == n
    bound = 3 * 1.04 / math.sqrt(2**lg_k) * n  # 3 RSE of the merged (composite) estimator
    one_piece = fn.extract_output(fn.add_inputs(fn.create_accumulator(), values))
    merged = fn.extract_output(accumulate_sharded(fn, values, shards=8, seed=n))
    assert abs(one_piece - n) <= bound, (one_piece, n, bound)
    assert abs(merged - n) <= bound, (merged, n, bound)


def test_hll_sketch_output_merges_downstream() -> None:
    """Two groups' sketches, decoded and unioned elsewhere, estimate the union's size."""
    fn = lc.create("hll_sketch", {"lg_k": 12})
    group_a = [f"user-{i}" for i in range(0, 30_000)]
    group_b = [f"user-{i}" for i in range(20_000, 60_000)]
    union = hll_union(12)
    for group in (group_a, group_b):
        text = fn.extract_output(fn.add_inputs(fn.create_accumulator(), group))
        sketch = hll_sketch.deserialize(base64.b64decode(text))
        assert abs(sketch.get_estimate() - len(group)) <= 3 * 0.0163 * len(group)
        union.update(sketch)
    assert abs(union.get_estimate() - 60_000) <= 3 * 0.0163 * 60_000


KLL_RANKS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999]


def _datasets() -> dict[str, list[float | int]]:
    rng = random.Random(2024)
    return {
        "uniform": [rng.uniform(-1e3, 1e3) for _ in range(50_000)],
        "lognormal": [rng.lognormvariate(0, 2) for _ in range(50_000)],
        "few-distinct-ints": [rng.randint(0, 500) for _ in range(30_000)],
        "sorted": sorted(rng.gauss(0, 1) for _ in range(20_000)),
    }


@pytest.mark.parametrize("name", ["uniform", "lognormal", "few-distinct-ints", "sorted"])
@pytest.mark.parametrize("k, eps", [(200, 0.0165), (100, 0.0318)])
def test_quantiles_within_normalized_rank_error(name: str, k: int, eps: float) -> None:
    """Each quantile's true rank in the sorted data is within eps of the requested rank."""
    data = _datasets()[name]
    fn = lc.create("approx_quantiles", {"quantiles": KLL_RANKS, "k": k})
    ordered = sorted(data)
    n = len(ordered)
    for acc in (
        fn.add_inputs(fn.create_accumulator(), data),
        accumulate_sharded(fn, data, shards=10, seed=k),
    ):
        for q, value in zip(KLL_RANKS, fn.extract_output(acc), strict=True):
            low, high = bisect_left(ordered, value) / n, bisect_right(ordered, value) / n
            assert high > low, f"{value} is not an input"
            assert low - eps <= q <= high + eps, (name, q, value, low, high)


def zipf_values(distinct: int, n: int, seed: int, s: float = 1.1) -> list[Any]:
    rng = random.Random(seed)
    population = [f"item-{i}" if i % 2 else i for i in range(distinct)]
    weights = [1 / (rank + 1) ** s for rank in range(distinct)]
    values = rng.choices(population, weights, k=n - distinct) + population  # each at least once
    rng.shuffle(values)
    return values


def expected_top(values: list[Any], k: int) -> list[list[Any]]:
    counts = Counter(values)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], order(item[0])))
    return [[value, count] for value, count in ranked[:k]]


@pytest.mark.parametrize("k, lg", [(10, None), (25, 6)])
def test_top_k_exact_while_distinct_values_fit(k: int, lg: int | None) -> None:
    params = {"k": k} if lg is None else {"k": k, "lg_max_map_size": lg}
    fn = lc.create("top_k", params)
    fits = 3 * 2 ** (lg or 10) // 4  # 768 at the default map size, 48 at lg 6
    values = zipf_values(fits, 20 * fits, seed=k)
    assert len(set(values)) == fits
    expected = expected_top(values, k)
    assert fn.extract_output(fn.add_inputs(fn.create_accumulator(), values)) == expected
    assert fn.extract_output(accumulate_sharded(fn, values, shards=7, seed=k)) == expected


@pytest.mark.parametrize("lg", [6, 10])
def test_top_k_error_bound_beyond_the_map(lg: int) -> None:
    """Counts are over-estimated by at most 3.5 n / 2**lg; heavy hitters are never lost."""
    k = 10
    fn = lc.create("top_k", {"k": k, "lg_max_map_size": lg})
    values = zipf_values(20 * 2**lg, 100_000, seed=lg, s=1.3)
    true = Counter(values)
    slack = 3.5 / 2**lg * len(values)
    merged = fn.extract_output(accumulate_sharded(fn, values, shards=8, seed=lg))
    assert len(merged) == k
    for value, count in merged:
        assert true[value] <= count <= true[value] + slack, (value, count, true[value], slack)
    kth_true = sorted(true.values(), reverse=True)[k - 1]
    reported = {value for value, _ in merged}
    for value, count in true.items():
        if count > kth_true + slack:
            assert value in reported, (value, count)
