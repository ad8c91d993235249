"""The sorts the engine groups by, against numpy's own stable sort and a dict of first rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from liveagg.engine.groups import distinct, order_within, stable_order
from liveagg.engine.kernels import _distinct_pairs

#: Bounds on both sides of each number of radix passes, and past the last (timsort).
BOUNDS = [
    1,
    2,
    255,
    1 << 16,
    (1 << 16) + 1,
    1 << 32,
    (1 << 32) + 7,
    1 << 48,
    (1 << 48) + 1,
    1 << 62,
]


@st.composite
def keys_below(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    bound = draw(st.sampled_from(BOUNDS))
    # Few distinct keys, so that runs of equal keys (whose order the sort must keep) occur.
    pool = draw(st.lists(st.integers(0, bound - 1), min_size=1, max_size=8))
    keys = draw(st.lists(st.sampled_from(pool), max_size=300))
    return np.array(keys, dtype=np.int64), bound


@settings(max_examples=300, deadline=None)
@given(keys_below())
def test_stable_order_is_numpys_stable_argsort(case: tuple[np.ndarray, int]) -> None:
    keys, bound = case
    assert stable_order(keys, bound).tolist() == np.argsort(keys, kind="stable").tolist()


@settings(max_examples=200, deadline=None)
@given(keys_below(), st.booleans())
def test_distinct_gives_each_values_first_row_and_total(
    case: tuple[np.ndarray, int], weighted: bool
) -> None:
    codes, bound = case
    weights = np.arange(1, len(codes) + 1, dtype=np.int64) if weighted else None
    first, totals = distinct(codes, bound, weights)
    expected: dict[int, list[int]] = {}
    for row, code in enumerate(codes.tolist()):
        entry = expected.setdefault(code, [row, 0])
        entry[1] += row + 1 if weighted else 1
    assert [codes[f] for f in first.tolist()] == sorted(expected)
    assert [[f, t] for f, t in zip(first.tolist(), totals.tolist(), strict=True)] == [
        expected[code] for code in sorted(expected)
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from("abcdefg")), max_size=200),
    st.booleans(),
)
def test_distinct_pairs_keep_each_groups_values_in_order_of_arrival(
    rows: list[tuple[int, str]], counted: bool
) -> None:
    ids = np.array([g for g, _ in rows], dtype=np.int64)
    values = pa.array([x for _, x in rows], pa.string())
    counts = np.arange(1, len(rows) + 1, dtype=np.int64) if counted else None
    owner, held, totals = _distinct_pairs(values, ids, 6, counts, share=False)
    expected: dict[tuple[int, str], int] = {}  # insertion order: first arrival
    for row, pair in enumerate(rows):
        expected[pair] = expected.get(pair, 0) + (row + 1 if counted else 1)
    order = sorted(expected, key=lambda pair: pair[0])  # stable: arrival within a group
    got = list(zip(owner.tolist(), held.to_pylist(), strict=True))
    assert got == order
    assert totals.tolist() == [expected[pair] for pair in order]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(-5, 5)), max_size=300))
def test_order_within_sorts_by_owner_then_key(entries: list[tuple[int, int]]) -> None:
    owner = np.array([o for o, _ in entries], dtype=np.int64)
    keys = np.array([k for _, k in entries], dtype=np.int64)
    order = order_within(owner, 41, keys)
    assert sorted(order.tolist()) == list(range(len(entries)))
    pairs = zip(owner[order].tolist(), keys[order].tolist(), strict=True)
    assert list(pairs) == sorted(entries)
