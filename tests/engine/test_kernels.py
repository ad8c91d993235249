"""Every kernel against its CombineFn and against the independent checks of tests/combiners.

For each case of the shared harness: values drawn by the case, spread over random groups;
the kernel's outputs per group (from one batch, and from partials of several batches merged
in shuffled order) must pass the case's own check against that group's inputs, and equal the
CombineFn's outputs where the aggregation is deterministic. The states' accumulators must give
the same outputs through the CombineFn.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from liveagg.engine import values as v
from liveagg.engine.groups import factorize
from liveagg.engine.kernels import coupon_counts, kernel
from tests.combiners.cases import CASES, Case, assert_json_equal, coerce_all

PARAMS = [pytest.param(case, id=case.id) for case in CASES]
GROUPS = 12


def column(case: Case, fn: Any, values: list[Any]) -> Any:
    """The column the engine gives a kernel for these (coerced) values."""
    from liveagg.engine.columns import _python_input

    if fn.needs_event_time:
        times = np.array([t for t, _ in values], dtype=np.int64)
        return times, _python_input(case.kind, [x for _, x in values])
    if case.kind == "custom":
        return list(values)
    return _python_input(case.kind, values)


def group_outputs(case: Case, seed: int, n: int) -> tuple[Any, list[Any], list[list[Any]], Any]:
    fn = case.make()
    rng = random.Random(seed)
    inputs = coerce_all(fn, case.sample(rng, n))
    ids = np.array([rng.randrange(GROUPS) for _ in inputs], dtype=np.int64)
    per_group = [
        [x for x, g in zip(inputs, ids.tolist(), strict=True) if g == group]
        for group in range(GROUPS)
    ]
    return fn, inputs, per_group, ids


def _slice(values: Any, index: np.ndarray) -> Any:
    if isinstance(values, tuple):
        return values[0][index], values[1].take(index)
    if isinstance(values, list):
        return [values[i] for i in index.tolist()]
    if isinstance(values, np.ndarray):
        return values[index]
    return values.take(index)


@pytest.mark.parametrize("case", PARAMS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_matches_its_combine_fn(case: Case, seed: int) -> None:
    fn, inputs, per_group, ids = group_outputs(case, seed, 400)
    kern = kernel(fn)
    values = column(case, fn, inputs)
    whole = kern.extract(kern.batch(values, ids, GROUPS))
    # Partials of three batches, each with its own local group ids, merged in shuffled order.
    rng = random.Random(seed)
    order = list(range(len(inputs)))
    rng.shuffle(order)
    states, owners = [], []
    for chunk in np.array_split(np.array(order, dtype=np.int64), 3):
        local = factorize([ids[chunk]])
        states.append(kern.batch(_slice(values, chunk), local.ids, local.count))
        owners.append(np.asarray(local.keys[0]))
    pick = list(range(3))
    rng.shuffle(pick)
    merged = kern.merge(
        kern.concat([states[i] for i in pick]), np.concatenate([owners[i] for i in pick]), GROUPS
    )
    parts = kern.extract(merged)
    accumulators = kern.accumulators(merged)
    # What the streaming operator and level-1 envelopes do with them: their bytes, read back
    # through the checks level 2 applies to accumulators from outside.
    for acc in accumulators:
        data = fn.encode_accumulator(acc)
        fn.check_accumulator(data)
        fn.decode_accumulator(data)
    through_fn = [fn.extract_output(acc) for acc in accumulators]
    for group in range(GROUPS):
        expected_inputs = per_group[group]
        for actual in (whole[group], parts[group], through_fn[group]):
            case.check(actual, expected_inputs)
        if case.deterministic:
            expected = fn.extract_output(fn.add_inputs(fn.create_accumulator(), expected_inputs))
            assert_json_equal(whole[group], expected)
            assert_json_equal(parts[group], expected)


@pytest.mark.parametrize("case", PARAMS)
def test_vectorized_and_row_wise_states_merge(case: Case) -> None:
    """A partial held as CombineFn accumulators (what a value beyond 64 bits forces) merges
    with vectorized ones."""
    fn, inputs, per_group, ids = group_outputs(case, 9, 300)
    kern = kernel(fn)
    values = column(case, fn, inputs)
    half = len(inputs) // 2
    first = np.arange(half)
    second = np.arange(half, len(inputs))
    vec = kern.batch(_slice(values, first), ids[:half], GROUPS)
    row_wise = kern.py_batch(_slice(values, second), ids[half:], GROUPS)
    merged = kern.merge(
        kern.concat([vec, row_wise]), np.concatenate([np.arange(GROUPS)] * 2), GROUPS
    )
    for group, actual in enumerate(kern.extract(merged)):
        case.check(actual, per_group[group])


def test_scalar_forms_are_unified_before_they_meet() -> None:
    strings = v.scalars_from_python(["a", "b"])
    ints = v.scalars_from_python([1, 2])
    mixed = v.concat([strings, ints])
    assert mixed.type == v.TEXT
    assert v.python_values(mixed) == ["a", "b", 1, 2]
    assert v.canonical_text(2.0) == "2" and v.canonical_text(True) == "true"
    assert v.canonical_text(2**70) == "1.1805916207174113e+21"  # the double it equals
    assert v.canonical_text(2**70 + 1) == str(2**70 + 1)  # no double equals it: exact
    assert v.to_text(v.scalars_from_python(['q"x', "y"])).to_pylist() == ['"q\\"x"', '"y"']


@pytest.mark.parametrize("case", PARAMS)
def test_a_taken_state_is_a_copy(case: Case) -> None:
    """A sliding window takes a slice's state once per window it falls in, and grouping sets
    share the finest rows: merging what was taken leaves the state it came from as it was
    (a CombineFn merges into its first accumulator)."""
    fn, inputs, _, ids = group_outputs(case, 4, 200)
    kern = kernel(fn)
    values = column(case, fn, inputs)
    empty = kern.batch(_slice(values, np.arange(0)), np.zeros(0, dtype=np.int64), 2)
    for acc in kern.accumulators(empty):  # groups without values: the CombineFn's own empty
        data = fn.encode_accumulator(acc)
        fn.check_accumulator(data)
        assert_json_equal(
            fn.extract_output(fn.decode_accumulator(data)),
            fn.extract_output(fn.create_accumulator()),
        )
    for state in (kern.batch(values, ids, GROUPS), kern.py_batch(values, ids, GROUPS)):
        before = kern.extract(state)
        kern.merge(kern.take(state, np.array([0, 0, 1, 1], dtype=np.int64)), np.zeros(4, int), 1)
        assert_json_equal(kern.extract(state), before)


@pytest.mark.parametrize("name", ["variance", "stddev"])
@pytest.mark.parametrize("ddof", [0, 1, 3])
def test_moments_extracted_at_once_equal_the_combine_fns(name: str, ddof: int) -> None:
    """The vectorized extraction repeats the CombineFn's arithmetic bit for bit, ``None``
    for the groups with ``n <= ddof`` included (groups of 0 to 5 values here)."""
    from liveagg.combiners.registry import create

    fn = create(name, {"ddof": ddof})
    rng = random.Random(ddof)
    ids = np.array([g for g in range(GROUPS) for _ in range(g % 6)], dtype=np.int64)
    values = np.array([rng.uniform(-1e6, 1e6) for _ in ids])
    state = kernel(fn).batch(values, ids, GROUPS)
    got = kernel(fn).extract(state)
    expected = [fn.extract_output(acc) for acc in kernel(fn).accumulators(state)]
    assert [None if x is None else x.hex() for x in got] == [
        None if x is None else x.hex() for x in expected
    ]
    assert None in got and any(x is not None for x in got)


@pytest.mark.parametrize(
    ("hot", "rest"),
    [
        ('say "hi"', [f"ü{i}" for i in range(30)]),  # a string column, one value to escape
        (1, list(range(100, 130))),  # ints
        (1.5, [i + 0.25 for i in range(30)]),  # doubles
        (True, ["1", 1, 1.0, 2.5, False, "true", *range(3, 30)]),  # mixed: the text column
    ],
)
def test_top_k_past_its_exact_map_feeds_the_sketch_each_values_canonical_text(
    hot: Any, rest: list[Any]
) -> None:
    """A group with more distinct values than ``exact_up_to`` becomes a frequent-items
    sketch, fed the texts ``add_input`` stores: the heavy value comes out first as the value
    it was (``1``, ``1.0``, ``"1"`` and ``true`` are different values), and the accumulator
    passes the CombineFn's own check of its items."""
    from liveagg.combiners.registry import create

    fn = create("top_k", {"k": 3, "lg_max_map_size": 3})  # exact up to 6 values
    rng = random.Random(5)
    values = [hot if rng.random() < 0.5 else rng.choice(rest) for _ in range(300)]
    kern = kernel(fn)
    state = kern.batch(v.scalars_from_python(values), np.zeros(len(values), dtype=np.int64), 1)
    assert list(state.sketches) == [0]  # type: ignore[union-attr]
    (top, _count), *_ = kern.extract(state)[0]
    assert type(top) is type(hot) and top == hot
    (acc,) = kern.accumulators(state)
    fn.check_accumulator(fn.encode_accumulator(acc))


@pytest.mark.parametrize("hll_type", ["HLL_4", "HLL_6", "HLL_8"])
def test_count_distinct_counted_without_a_sketch_is_what_the_sketch_estimates(
    hll_type: str,
) -> None:
    """Groups small enough to leave a sketch in list or set mode are counted from the number
    of their distinct values (``coupon_counts``): at every lg_k, for groups of every size
    from none to past the table's end (a sketch then), of strings, 64-bit ints, doubles and
    the values whose hashed form is special (``""``, ``true``, ``0``, ``-0.0``), the output
    is what the CombineFn's own sketch of the same values estimates."""
    from liveagg.combiners.registry import create

    rng = random.Random(hll_type)
    pool: list[Any] = [f"u{rng.random()}" for _ in range(700)]
    pool += [rng.getrandbits(64) - 2**63 for _ in range(700)] + [rng.random() for _ in range(700)]
    pool += ["", True, 0, -0.0]
    for lg_k in range(4, 22):
        fn = create("count_distinct", {"lg_k": lg_k, "hll_type": hll_type})
        kern = kernel(fn)
        end = len(coupon_counts(lg_k, fn._target))  # type: ignore[attr-defined]
        sizes = sorted({0, 1, 2, end - 2, end - 1, end, end + 3, rng.randrange(end + 1)})
        groups = [rng.sample(pool, size) for size in sizes if size >= 0]
        # Values of one hashed form: 2**63 and -2**63, 2**70 and its decimal string.
        groups.append(["", True, 0, -0.0, 1, 1.0, "1", False, 2**63, -(2.0**63)])
        groups.append([2**70, str(2**70), 5])
        values = [x for group in groups for x in group]
        ids = np.repeat(np.arange(len(groups)), [len(group) for group in groups])
        state = kern.batch(v.scalars_from_python(values), ids, len(groups))
        expected = [fn.extract_output(fn.add_inputs(fn.create_accumulator(), g)) for g in groups]
        assert kern.extract(state) == expected
        assert expected[:3] == [0, 1, 2] and expected[-1] == 2
        for doubles in ([2.0**63, -(2.0**63), 0.5], [5e-324, 1.0, 2.5], [0.5, 1.0, 2.0**52]):
            column = pa.array(doubles)
            state = kern.batch(column, np.zeros(3, dtype=np.int64), 1)
            sketch = fn.add_inputs(fn.create_accumulator(), doubles)
            assert kern.extract(state) == [fn.extract_output(sketch)]


def test_coupon_counts_end_where_the_sketch_becomes_an_array() -> None:
    """The table covers the list and set modes only: at lg_k 12 a sketch holds 384 coupons
    before it becomes an HLL array (3/4 of a 512-slot set), and the table is 0..384."""
    from datasketches import tgt_hll_type

    counts = coupon_counts(12, tgt_hll_type.HLL_8)
    assert counts.tolist() == list(range(385))
    assert len(coupon_counts(4, tgt_hll_type.HLL_4)) < len(counts)


@pytest.mark.parametrize("k", [8, 200])
def test_quantiles_of_groups_held_as_values_are_the_sketchs(k: int) -> None:
    """Groups of up to ``k`` values (held as values, read at once) give what the CombineFn's
    own sketch of the same values gives, for ranks that fall on, between and at the ends of
    the values; larger groups (a sketch, compacted at random) give one of their values per
    rank, in order."""
    from liveagg.combiners.registry import create

    ranks = [0.0, 0.1, 1 / 3, 0.5, 0.75, 0.999, 1.0]
    fn = create("approx_quantiles", {"k": k, "quantiles": ranks})
    kern = kernel(fn)
    rng = random.Random(k)
    sizes = [
        0,
        1,
        2,
        3,
        5,
        7,
        k - 1,
        k,
        k + 1,
        3 * k,
        *(rng.randrange(1, k + 1) for _ in range(30)),
    ]
    groups = [
        [rng.choice([rng.uniform(-1e6, 1e6), float(rng.randrange(5))]) for _ in range(n)]
        for n in sizes
    ]
    values = np.array([x for group in groups for x in group])
    ids = np.repeat(np.arange(len(groups)), sizes)
    state = kern.batch(values, ids, len(groups))
    # The same groups again through a merge of two halves, in another order of rows.
    half = len(values) // 2
    parts = kern.concat(
        [
            kern.batch(values[half:], ids[half:], len(groups)),
            kern.batch(values[:half], ids[:half], len(groups)),
        ]
    )
    merged = kern.merge(parts, np.tile(np.arange(len(groups)), 2), len(groups))
    for got in (kern.extract(state), kern.extract(merged)):
        for group, found in zip(groups, got, strict=True):
            if len(group) <= k:
                expected = fn.extract_output(fn.add_inputs(fn.create_accumulator(), group))
                assert found == expected
            else:
                assert found == sorted(found) and set(found) <= set(group)
    assert kern.extract(state)[0] is None


@pytest.mark.parametrize(
    "pool",
    [
        ["a", "b", "é", "z", "\uff5a", "\U0001f600", "A", "", "ab", "b\x00"],  # code points
        [-(2**63), -5, 0, 3, 7, 2**63 - 1, 12, -1],
        [-1.5, 0.25, 2.25, 1e300, -1e-300, 7.5, 3.5],
        [1, "1", 1.5, True, "x"],  # mixed: ranked row by row
    ],
)
def test_top_k_ranks_held_counts_as_the_combine_fn_does(pool: list[Any]) -> None:
    """Counts tie often here (few values, small groups), so the order of values decides: each
    group's top k is the CombineFn's, for strings beyond ASCII, 64-bit ints and doubles
    (ranked at once) and a mixed column (ranked per row)."""
    from liveagg.combiners.registry import create

    fn = create("top_k", {"k": 3})
    kern = kernel(fn)
    rng = random.Random(len(pool))
    # Values as the pipeline hands them over: coerced (an integral double is an int).
    pool = [fn.coerce(x) for x in pool]
    groups = [[rng.choice(pool) for _ in range(rng.randrange(0, 12))] for _ in range(300)]
    values = [x for group in groups for x in group]
    ids = np.repeat(np.arange(len(groups)), [len(group) for group in groups])
    column = v.scalars_from_python(values)
    if all(type(x) is float for x in values):
        column = pa.array(values, pa.float64())  # as Arrow's reader gives a double field
    state = kern.batch(column, ids, len(groups))
    expected = [fn.extract_output(fn.add_inputs(fn.create_accumulator(), g)) for g in groups]
    got = kern.extract(state)
    assert [[(type(x), x, n) for x, n in row or []] for row in got] == [
        [(type(x), x, n) for x, n in row or []] for row in expected
    ]
    assert got == expected


@pytest.mark.parametrize("name", ["min", "max"])
def test_extremes_read_at_once_equal_a_row_by_row_reading(name: str) -> None:
    """Rows of ints, of doubles (integral ones in and beyond the 64-bit range, -0.0), of
    both, and of none: the values, of the same Python types, that a row-by-row reading of
    the state gives, through the CombineFn's own ``normalize_number``."""
    from liveagg.combiners._common import normalize_number
    from liveagg.combiners.registry import create

    fn = create(name, {})
    kern = kernel(fn)
    pick = min if name == "min" else max

    def row_by_row(state: Any) -> list[Any]:
        best_int, has_int, best_float = state
        out = []
        columns = (best_int.tolist(), has_int.tolist(), best_float.tolist())
        for i, has, f in zip(*columns, strict=True):
            seen = ([i] if has else []) + ([normalize_number(f)] if f == f else [])
            out.append(pick(seen) if seen else None)
        return out

    doubles = np.array([1.5, 3.0, -0.0, 2.0**63, -(2.0**63), 2.0**64, 1e300, -7.25])
    ints = np.array([5, -3, 2**62], dtype=np.int64)
    floats_state = kern.batch(doubles, np.arange(len(doubles), dtype=np.int64), 10)
    ints_state = kern.batch(ints, np.array([0, 8, 9], dtype=np.int64), 10)
    # Both kinds in some rows (a field read as ints in one batch, doubles in another).
    merged = kern.merge(kern.concat([floats_state, ints_state]), np.tile(np.arange(10), 2), 10)
    for state in (floats_state, ints_state, merged):
        got = kern.extract(state)
        expected = row_by_row(state)
        assert [(type(x), x) for x in got] == [(type(x), x) for x in expected]
        assert kern.accumulators(state) == got
    got = kern.extract(merged)
    assert got[9] == 2**62 and got[1] == 3 and type(got[1]) is int and got[2] == 0
    assert got[0] == (1.5 if name == "min" else 5) and got[8] == -3
