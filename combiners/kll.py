"""``approx_quantiles``: Apache DataSketches KLL sketch of doubles.

Accuracy and memory: the normalized rank error (the quantile returned for rank ``q`` has a
true rank within ``q ± ε``, with 99% confidence per query) is about ``ε = 1.33%`` for
``k=200`` (``2.6%`` at ``k=100``, ``0.68%`` at ``k=400``, ``0.28%`` at ``k=1000``); the
bound for the whole distribution at once (as ``get_pmf`` needs it) is ``1.65%`` at ``k=200``.
While a group has at most ``k`` values the sketch keeps them all and the quantiles are exact.
A sketch retains about ``3 k`` values: ~5 KiB at ``k=200`` for a million inputs, 8 bytes per
value below ``k`` values.

Quantiles follow the inclusive definition: the ``q``-quantile is the smallest value ``v`` such
that at least a fraction ``q`` of the inputs is ``<= v`` (numpy's ``inverted_cdf``), so every
result is one of the inputs. Ranks 0 and 1 give the exact minimum and maximum.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterable
from functools import cache
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

from liveagg.combiners import _common as c
from liveagg.combiners.base import LiveaggCombineFn
from liveagg.combiners.registry import register

_isfinite = math.isfinite

#: Below this batch size a Python loop beats building a numpy array.
_NUMPY_BATCH = 32


@register("approx_quantiles")
class ApproxQuantilesFn(LiveaggCombineFn):
    """Approximate quantiles of numbers, one float per requested rank; ``None`` when empty.

    Example:
        ``{"aggregation": "approx_quantiles", "col_name": "latency_ms",
        "aggregated_col_name": "latency_p", "params": {"quantiles": [0.5, 0.99]}}``
    """

    name = "approx_quantiles"

    def __init__(self, quantiles: list[float] | None = None, k: int = 200) -> None:
        """Check and keep the params.

        Args:
            quantiles: the ranks to report, each from 0 to 1; default ``[0.5, 0.9, 0.99]``.
            k: the KLL accuracy parameter, 8 to 65535; error shrinks and memory grows with it.
        """
        super().__init__()
        if quantiles is None:
            quantiles = [0.5, 0.9, 0.99]
        if (
            not isinstance(quantiles, list | tuple)
            or not quantiles
            or any(type(q) not in (int, float) or not 0 <= q <= 1 for q in quantiles)
        ):
            raise ValueError(
                f"{self.name}: params.quantiles must be a non-empty list of numbers from 0 to 1, "
                f"got {quantiles!r}"
            )
        self.quantiles = [float(q) for q in quantiles]
        self.k = c.check_int_param(self.name, "k", k, 8, 65535)

    def coerce(self, value: Any) -> float:
        """Accept ints and floats, as floats; refuse booleans, strings, NaN and infinity.

        ``-0.0`` is ``0.0`` (``+ 0.0``), as for ``min`` and distinct counts: the sketch keeps
        the zero it was fed first, so a quantile of both would depend on arrival order."""
        if type(value) is float and _isfinite(value):
            return value + 0.0
        # The sketch holds doubles, and its update takes an int ten times slower than a float.
        return float(c.check_number(value, self.name))

    def create_accumulator(self) -> kll_doubles_sketch:
        return kll_doubles_sketch(self.k)

    def add_input(self, accumulator: kll_doubles_sketch, element: int | float) -> Any:
        accumulator.update(element if type(element) is float else float(element))
        return accumulator

    def add_inputs(self, accumulator: kll_doubles_sketch, elements: Iterable[int | float]) -> Any:
        values = elements if isinstance(elements, list) else list(elements)
        if len(values) >= _NUMPY_BATCH:
            accumulator.update(np.array(values, dtype=np.float64))
        else:
            update = accumulator.update
            for value in values:
                update(value if type(value) is float else float(value))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[kll_doubles_sketch]) -> Any:
        merged, rest = c.first_or_new(accumulators, self.create_accumulator)
        for sketch in rest:
            merged.merge(sketch)
        return merged

    def extract_output(self, accumulator: kll_doubles_sketch) -> list[float] | None:
        if accumulator.is_empty():
            return None
        values = accumulator.get_quantiles(self.quantiles, inclusive=True)
        # The sketch knows the exact extremes; ranks 0 and 1 report them rather than the
        # nearest retained item.
        low, high = accumulator.get_min_value(), accumulator.get_max_value()
        return [
            low if q == 0.0 else high if q == 1.0 else value
            for q, value in zip(self.quantiles, values, strict=True)
        ]

    def output_type(self) -> str:
        return "list<double>"

    def encode_accumulator(self, accumulator: kll_doubles_sketch) -> bytes:
        return c.dump_sketch(accumulator.serialize())

    def decode_accumulator(self, data: bytes) -> kll_doubles_sketch:
        return kll_doubles_sketch.deserialize(c.load_sketch(data, self.name))

    def check_accumulator(self, data: bytes) -> None:
        check_kll_doubles(c.load_sketch(data, self.name), self.k, self.name)

    def display_data(self) -> dict[str, Any]:
        return {"quantiles": str(self.quantiles), "k": self.k}


# ---------------------------------------------------------------------------------------------
# The serialized sketch, checked before DataSketches reads it
# ---------------------------------------------------------------------------------------------
#
# kll_doubles_sketch.serialize() and .deserialize() (Apache DataSketches C++,
# kll/include/kll_sketch.hpp for the layout and constants, kll_sketch_impl.hpp:
# serialize(unsigned, const SerDe&) and deserialize(const void*, size_t, ...),
# kll_helper_impl.hpp: compute_total_capacity()). Eight bytes: preamble ints (2 when empty or
# one item, else 5), serial version (1, or 2 for one item), family (15), flags (bit 0 empty,
# 1 level zero sorted, 2 one item), k (uint16), m (8), unused. One item: its double follows.
# Otherwise: n (uint64), min_k (uint16), num_levels (uint8), unused, the first num_levels
# level offsets (uint32; the last is the capacity), min and max, then the retained items
# (capacity - levels[0] doubles, level 0 first).
#
# deserialize() checks m, the preamble ints, version and family, and that the bytes hold the
# preamble; it reads the level offsets without checking that the bytes hold them, and never
# checks k, min_k, num_levels or the offsets themselves: levels[0] beyond the capacity makes it
# read and write out of bounds (a 22-byte sketch whose levels are cut short crashes the
# process). So every field is checked here, with the invariants the sketch keeps: sizes that
# add up to the byte length, offsets in order within the capacity, weights that sum to n
# (merge() throws on anything else), finite items within [min, max], levels above 0 sorted.

_FAMILY, _M, _MIN_K, _MAX_LEVELS = 15, 8, 8, 61  # int_cap_aux() throws for depth > 60
_EMPTY, _SORTED, _SINGLE = 1, 2, 4
_FULL = struct.Struct("<QHB")  # n, min_k, num_levels (then one unused byte)
_FULL_START = 20
_SMALL = 48  # up to this many items, plain Python checks them faster than numpy


@cache
def kll_capacity(k: int, num_levels: int) -> int:
    """``kll_helper::compute_total_capacity(k, 8, num_levels)``: the items a sketch of
    ``num_levels`` levels holds, each level max(m, k * (2/3) ** depth rounded)."""

    def cap(k: int, depth: int) -> int:  # int_cap_aux_aux
        return ((2 * k << depth) // 3**depth + 1) >> 1

    total = 0
    for depth in range(num_levels):
        width = cap(k, depth) if depth <= 30 else cap(cap(k, depth // 2), depth - depth // 2)
        total += max(_M, width)
    return total


def check_kll_doubles(data: bytes, k: int, owner: str) -> None:
    """Raise ``ValueError`` unless ``data`` is a KLL doubles sketch of ``k`` that
    ``kll_doubles_sketch.deserialize`` and every later use of the sketch can read safely."""

    def bad(what: str) -> ValueError:
        return c.corrupt(owner, f"KLL sketch: {what}")

    size = len(data)
    if size < 8:
        raise bad(f"{size} bytes, shorter than the 8-byte preamble")
    preamble, version, family, flags = data[:4]
    (sketch_k,) = struct.unpack_from("<H", data, 4)
    if family != _FAMILY:
        raise bad(f"family id {family}, expected {_FAMILY} (KLL)")
    if version not in (1, 2):
        raise bad(f"serial version {version}, expected 1 or 2")
    if data[6] != _M:
        raise bad(f"m {data[6]}, expected {_M}")
    if flags & ~(_EMPTY | _SORTED | _SINGLE) or (flags & _EMPTY and flags & _SINGLE):
        raise bad(f"flags 0x{flags:02x}")
    if sketch_k != k:
        raise bad(
            f"k {sketch_k}, but the view's {owner} has k {k}; it was written by another definition"
        )
    if flags & (_EMPTY | _SINGLE):
        expected = 8 if flags & _EMPTY else 16
        if preamble != 2 or size != expected or (flags & _SINGLE and version != 2):
            raise bad(
                f"{'empty' if flags & _EMPTY else 'one item'}: {preamble} preamble ints, "
                f"version {version}, {size} bytes; expected 2, {1 if flags & _EMPTY else 2}, "
                f"{expected}"
            )
        if flags & _SINGLE and not math.isfinite(struct.unpack_from("<d", data, 8)[0]):
            raise bad("an item that is not a finite number")
        return
    if preamble != 5 or size < _FULL_START:
        raise bad(f"{preamble} preamble ints and {size} bytes, expected 5 and at least 20")
    n, min_k, num_levels = _FULL.unpack_from(data, 8)
    if not _MIN_K <= min_k <= k:
        raise bad(f"min_k {min_k}, expected {_MIN_K} to k ({k})")
    if not 1 <= num_levels <= _MAX_LEVELS:
        raise bad(f"{num_levels} levels, expected 1 to {_MAX_LEVELS}")
    items_start = _FULL_START + 4 * num_levels
    if size < items_start:
        raise bad(f"{size} bytes, too short for the offsets of {num_levels} levels")
    capacity = kll_capacity(k, num_levels)
    levels = (*struct.unpack_from(f"<{num_levels}I", data, _FULL_START), capacity)
    if any(levels[i] > levels[i + 1] for i in range(num_levels)):
        raise bad(f"level offsets {list(levels[:-1])} not in order within capacity {capacity}")
    retained = capacity - levels[0]
    expected = items_start + 8 * (retained + 2)
    if size != expected:
        raise bad(f"{size} bytes, but {retained} retained items take {expected}")
    weight = sum((levels[i + 1] - levels[i]) << i for i in range(num_levels))
    if weight != n or n < 2:
        raise bad(f"n {n}, but its levels weigh {weight}")
    low, high = struct.unpack_from("<2d", data, items_start)
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise bad(f"min {low!r} and max {high!r}, expected finite numbers in order")
    # Each level above 0 is sorted, and level 0 when flagged so (merges rely on it).
    first = 0 if flags & _SORTED else levels[1] - levels[0] if num_levels > 1 else retained
    bounds = [offset - levels[0] for offset in levels]
    if retained <= _SMALL:
        items = struct.unpack_from(f"<{retained}d", data, items_start + 16)
        # NaN compares false: refused as out of range.
        if not all(low <= item <= high for item in items):
            raise bad("items that are not finite or not within its min and max")
        for a, b in itertools.pairwise(bounds):
            if b > first and any(y < x for x, y in itertools.pairwise(items[max(a, first) : b])):
                raise bad("a level whose items are not sorted")
        return
    array = np.frombuffer(data, "<f8", retained, items_start + 16)
    # min() and max() are NaN if an item is: the comparisons are then false.
    if not (low <= array.min() and array.max() <= high):
        raise bad("items that are not finite or not within its min and max")
    if retained - first < 2:
        return
    tail = array[first:]
    starts = set(bounds[1:-1])
    for at in np.flatnonzero(tail[1:] < tail[:-1]).tolist():
        if at + 1 + first not in starts:  # the items step down only where a level starts
            raise bad("a level whose items are not sorted")
