"""``count_distinct_exact``, ``collect_set`` and ``histogram``: exact, set- or bucket-based.

``count_distinct_exact`` keeps every distinct value, so its memory grows with the number of
distinct values of a group (about 60-100 bytes each in memory, their JSON size when encoded);
use ``count_distinct`` for high-cardinality columns. ``collect_set`` keeps at most
``2 * max_size`` values; ``histogram`` one counter per bucket.

Which values are the same value, for ``count_distinct_exact`` and ``collect_set``: numbers equal
in value are one value (``1``, ``1.0``); strings are distinct from numbers (``"1"`` is not
``1``) and booleans from numbers (``true`` is not ``1``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

import numpy as np

from liveagg.combiners import _common as c
from liveagg.combiners.base import LiveaggCombineFn
from liveagg.combiners.registry import register


def _keys(elements: Iterable[Any]) -> Iterable[Any]:
    values = elements if isinstance(elements, list) else list(elements)
    if any([type(v) is bool for v in values]):
        return map(c.to_key, values)
    return values


_BOOL_KEYS = frozenset({c.TRUE_KEY, c.FALSE_KEY})


def _encode_keys(keys: set[Any]) -> bytes:
    # [other values, booleans]: set operations keep the per-value work in C.
    return c.dump_json([list(keys - _BOOL_KEYS), [key[1] for key in keys & _BOOL_KEYS]])


_VALUE_TYPES = frozenset({str, int, float})


def _decode_keys(data: bytes, owner: str, most: int | None = None) -> set[Any]:
    """Read :func:`_encode_keys` output of at most ``most`` values."""
    parts = c.load_json(data, owner)
    if not (
        type(parts) is list
        and len(parts) == 2
        and type(parts[0]) is list
        and type(parts[1]) is list
        and set(map(type, parts[0])) <= _VALUE_TYPES
        and set(map(type, parts[1])) <= {bool}
        and all(math.isfinite(v) for v in parts[0] if type(v) is float)
    ):
        raise c.corrupt(
            owner,
            "expected [values, booleans]: a list of strings and finite numbers, and a list of "
            f"booleans, got {c.brief(parts)}",
        )
    keys = set(parts[0])
    keys.update(map(c.to_key, parts[1]))
    if most is not None and len(keys) > most:
        raise c.corrupt(owner, f"{len(keys)} values, more than the {most} it keeps")
    return keys


@register("count_distinct_exact")
class CountDistinctExactFn(c.ScalarInput, LiveaggCombineFn):
    """Exact number of distinct values; 0 for an empty group.

    Example:
        ``{"aggregation": "count_distinct_exact", "col_name": "country",
        "aggregated_col_name": "countries"}``
    """

    name = "count_distinct_exact"

    def create_accumulator(self) -> set[Any]:
        return set()

    def add_input(self, accumulator: set[Any], element: Any) -> set[Any]:
        accumulator.add(c.to_key(element))
        return accumulator

    def add_inputs(self, accumulator: set[Any], elements: Iterable[Any]) -> set[Any]:
        accumulator.update(_keys(elements))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[set[Any]]) -> set[Any]:
        merged, rest = c.first_or_new(accumulators, set)
        for acc in rest:
            merged |= acc
        return merged

    def extract_output(self, accumulator: set[Any]) -> int:
        return len(accumulator)

    def output_type(self) -> str:
        return "bigint"

    def encode_accumulator(self, accumulator: set[Any]) -> bytes:
        return _encode_keys(accumulator)

    def decode_accumulator(self, data: bytes) -> set[Any]:
        return _decode_keys(data, self.name)


@register("collect_set")
class CollectSetFn(c.ScalarInput, LiveaggCombineFn):
    """Sorted list of the distinct values, truncated to the ``max_size`` smallest.

    Values sort as numbers, then strings (by code point), then ``false``, ``true``. Truncation
    keeps the smallest values, which is what makes the result independent of input and merge
    order and the accumulator bounded (at most ``2 * max_size`` values). An empty group
    yields ``None``.

    Example:
        ``{"aggregation": "collect_set", "col_name": "tag", "aggregated_col_name": "tags",
        "params": {"max_size": 20}}``
    """

    name = "collect_set"

    def __init__(self, max_size: int = 1000) -> None:
        """Check and keep the params.

        Args:
            max_size: the longest list reported, 1 to 1000000.
        """
        super().__init__()
        self.max_size = c.check_int_param(self.name, "max_size", max_size, 1, 1_000_000)

    def _trim(self, accumulator: set[Any]) -> set[Any]:
        # Pruning only at twice the size keeps the cost amortized O(log n) per value.
        if len(accumulator) > 2 * self.max_size:
            return set(heapq.nsmallest(self.max_size, accumulator, key=c.key_order))
        return accumulator

    def create_accumulator(self) -> set[Any]:
        return set()

    def add_input(self, accumulator: set[Any], element: Any) -> set[Any]:
        accumulator.add(c.to_key(element))
        return self._trim(accumulator)

    def add_inputs(self, accumulator: set[Any], elements: Iterable[Any]) -> set[Any]:
        accumulator.update(_keys(elements))
        return self._trim(accumulator)

    def merge_accumulators(self, accumulators: Iterable[set[Any]]) -> set[Any]:
        merged, rest = c.first_or_new(accumulators, set)
        for acc in rest:
            merged |= acc
        return self._trim(merged)

    def extract_output(self, accumulator: set[Any]) -> list[Any] | None:
        if not accumulator:
            return None
        keys = heapq.nsmallest(self.max_size, accumulator, key=c.key_order)
        return [c.from_key(key) for key in keys]

    def output_type(self) -> str:
        return "json"

    def encode_accumulator(self, accumulator: set[Any]) -> bytes:
        return _encode_keys(accumulator)

    def decode_accumulator(self, data: bytes) -> set[Any]:
        return _decode_keys(data, self.name, 2 * self.max_size)

    def display_data(self) -> dict[str, Any]:
        return {"max_size": self.max_size}


#: Below this batch size a Python loop beats numpy's searchsorted + bincount.
_NUMPY_BATCH = 64


def _least_double_from(bound: float) -> float:
    """The least double that is not below ``bound`` (an int or a double)."""
    try:
        nearest = float(bound)
    except OverflowError:  # an int beyond every double
        nearest = math.inf if bound > 0 else -math.inf
    return math.nextafter(nearest, math.inf) if nearest < bound else nearest


@register("histogram")
class HistogramFn(c.NumberInput, LiveaggCombineFn):
    """Counts per bucket ``(-inf, b0), [b0, b1), ..., [bn, +inf)`` for ``bounds = [b0..bn]``.

    An empty group yields a list of zeros (one more than there are bounds).

    Example:
        ``{"aggregation": "histogram", "col_name": "latency_ms", "aggregated_col_name": "h",
        "params": {"bounds": [10, 100, 1000]}}`` gives 4 counts.
    """

    name = "histogram"

    def __init__(self, bounds: list[int | float] | None = None) -> None:
        """Check and keep the params.

        Args:
            bounds: finite, strictly increasing numbers; at least one, at most 10000.
        """
        super().__init__()
        if bounds is None:
            raise ValueError(
                f'{self.name}: params.bounds is required, e.g. {{"bounds": [0, 10, 100]}}'
            )
        if (
            not isinstance(bounds, list | tuple)
            or not 1 <= len(bounds) <= 10_000
            or any(type(b) not in (int, float) or not math.isfinite(b) for b in bounds)
        ):
            raise ValueError(
                f"{self.name}: params.bounds must be a list of 1 to 10000 finite numbers, "
                f"e.g. [0, 10, 100], got {bounds!r}"
            )
        for low, high in itertools.pairwise(bounds):
            if not low < high:
                raise ValueError(
                    f"{self.name}: params.bounds must be strictly increasing, "
                    f"got {low!r} then {high!r}"
                )
        self.bounds = list(bounds)
        # Each bound as the least number of a column's type that is not below it: an int
        # reaches bound b when it reaches ceil(b), a double when it reaches the least double
        # >= b (a bound beyond 2**53 may lie between two doubles); so numpy's comparisons
        # are Python's, for int64 values beyond 2**53 too, which doubles would merge.
        ceilings = [math.ceil(b) for b in self.bounds]
        self._int_bounds = np.array(
            [max(c, -(2**63)) for c in ceilings if c < 2**63], dtype=np.int64
        )
        self._float_bounds = np.array(
            [_least_double_from(b) for b in self.bounds], dtype=np.float64
        )

    def buckets(self, values: np.ndarray) -> np.ndarray:
        """Each value's bucket, as :meth:`add_input` gives it, for an int64 or float64 array."""
        bounds = self._int_bounds if values.dtype.kind in "iu" else self._float_bounds
        return np.searchsorted(bounds, values, side="right")

    def create_accumulator(self) -> list[int]:
        return [0] * (len(self.bounds) + 1)

    def add_input(self, accumulator: list[int], element: int | float) -> list[int]:
        accumulator[bisect_right(self.bounds, element)] += 1
        return accumulator

    def add_inputs(self, accumulator: list[int], elements: Iterable[int | float]) -> list[int]:
        values = elements if isinstance(elements, list) else list(elements)
        bounds = self.bounds
        array = np.asarray(values) if len(values) >= _NUMPY_BATCH else None
        if (
            array is not None
            and array.dtype.kind == "f"  # numpy made doubles of ints no double holds
            and not all(map(c.double_holds, values))
        ):
            array = None
        if array is not None and array.dtype.kind in "iuf":
            counts = np.bincount(self.buckets(array), minlength=len(bounds) + 1).tolist()
            for i, count in enumerate(counts):
                accumulator[i] += count
        else:
            for value in values:
                accumulator[bisect_right(bounds, value)] += 1
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[int]]) -> list[int]:
        merged, rest = c.first_or_new(accumulators, self.create_accumulator)
        for acc in rest:
            for i, count in enumerate(acc):
                merged[i] += count
        return merged

    def extract_output(self, accumulator: list[int]) -> list[int]:
        return list(accumulator)

    def output_type(self) -> str:
        return "list<bigint>"

    def encode_accumulator(self, accumulator: list[int]) -> bytes:
        return c.dump_json(accumulator)

    def decode_accumulator(self, data: bytes) -> list[int]:
        acc = c.load_json(data, self.name)
        if type(acc) is not list or len(acc) != len(self.bounds) + 1:
            raise c.corrupt(
                self.name,
                f"expected {len(self.bounds) + 1} counts for bounds {self.bounds}, got "
                f"{c.brief(acc)}; were the bounds changed?",
            )
        if not all(map(c.is_count, acc)):
            raise c.corrupt(self.name, f"expected counts of at least 0, got {c.brief(acc)}")
        return acc

    def display_data(self) -> dict[str, Any]:
        return {"bounds": str(self.bounds)}
