"""``count_distinct`` and ``hll_sketch``: Apache DataSketches HyperLogLog.

Accuracy and memory (``K = 2**lg_k``): the relative standard error (RSE) is about
``0.836 / sqrt(K)`` for a sketch built in one piece (HIP estimator) and ``1.04 / sqrt(K)`` once
sketches have been merged; 99.7% of estimates fall within 3 RSE. A sketch holds at most
``K`` bytes (HLL_8), ``0.75 K`` (HLL_6) or ``0.5 K`` (HLL_4) plus a small header; below about
``K / 8`` distinct values it is a much smaller list of hashes and is nearly exact.

=====  =========  ==============  ===========  ===========  ===========
lg_k   K          RSE merged      HLL_8 size   HLL_6 size   HLL_4 size
=====  =========  ==============  ===========  ===========  ===========
4      16         26%             56 B         53 B         64 B
10     1 024      3.25%           1 KiB        0.8 KiB      0.6 KiB
12     4 096      1.63%           4 KiB        3 KiB        2.2 KiB
14     16 384     0.81%           16 KiB       12 KiB       8.3 KiB
16     65 536     0.41%           64 KiB       48 KiB       33 KiB
21     2 097 152  0.07%           2 MiB        1.5 MiB      1 MiB
=====  =========  ==============  ===========  ===========  ===========

Which values are the same value: each value is hashed by its JSON type, the way other
DataSketches users hash the same data, so that ``hll_sketch`` output merges with sketches
built elsewhere:

* strings by their UTF-8 text;
* integers, and floats with an integral value, as 64-bit integers: ``1``, ``1.0`` and ``-0.0``
  / ``0`` are one value; integers in ``[2**63, 2**64)`` wrap to negative 64-bit integers, as
  unsigned 64-bit ids do in Java (so ``2**64 - 1`` and ``-1`` are one value); integers beyond
  64 bits hash as their decimal text (so ``2**70`` and the string ``"1180591620717411303424"``
  are one value);
* other floats as 64-bit doubles;
* ``true``, ``false`` and the empty string as three values no finite number or string hashes
  to: the doubles ``+inf``, ``-inf`` and NaN, which are refused as inputs. (DataSketches
  ignores an empty string; SQL counts it as a value, and so does ``count_distinct``.)

So ``"1"`` and ``1`` are two values, and ``true`` is not ``1``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from datasketches import hll_sketch, hll_union, tgt_hll_type

from liveagg.combiners import _common as c
from liveagg.combiners.base import LiveaggCombineFn
from liveagg.combiners.registry import register

HLL_TYPES = ("HLL_4", "HLL_6", "HLL_8")
_INT64_MIN = -(2**63)
_INT64_END = 2**63
_UINT64_END = 2**64
_TRUE = float("inf")
_FALSE = float("-inf")
_EMPTY_STRING = float("nan")


def hash_form(value: Any) -> int | float | str:
    """What a scalar other than a non-empty string is handed to ``hll_sketch.update`` as.

    See the module doc for why.
    """
    kind = type(value)
    if kind is str:
        return value or _EMPTY_STRING
    if kind is int:
        if _INT64_MIN <= value < _INT64_END:
            return value
        if _INT64_END <= value < _UINT64_END:
            return value - _UINT64_END
        return str(value)
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is float and value.is_integer():
        # Integral floats hash as the integer they equal, whatever their size.
        return hash_form(int(value))
    return value


class _HllFn(c.ScalarInput, LiveaggCombineFn):
    """The sketch-building part shared by ``count_distinct`` and ``hll_sketch``."""

    name = "hll"

    def __init__(self, lg_k: int = 12, hll_type: str = "HLL_8") -> None:
        """Check and keep the params.

        Args:
            lg_k: log2 of the number of HLL buckets, 4 to 21; accuracy and memory grow with it.
            hll_type: bits per bucket once the sketch is full: ``HLL_4``, ``HLL_6`` or
                ``HLL_8``. Smaller is more compact and slower to update; estimates are the same.
        """
        super().__init__()
        self.lg_k = c.check_int_param(self.name, "lg_k", lg_k, 4, 21)
        if hll_type not in HLL_TYPES:
            raise ValueError(
                f"{self.name}: params.hll_type must be one of {', '.join(HLL_TYPES)}, "
                f"got {hll_type!r}"
            )
        self.hll_type = hll_type

    @property
    def _target(self) -> tgt_hll_type:
        return getattr(tgt_hll_type, self.hll_type)

    def create_accumulator(self) -> hll_sketch:
        return hll_sketch(self.lg_k, self._target)

    def add_input(self, accumulator: hll_sketch, element: Any) -> hll_sketch:
        accumulator.update(element if type(element) is str and element else hash_form(element))
        return accumulator

    def add_inputs(self, accumulator: hll_sketch, elements: Iterable[Any]) -> hll_sketch:
        update = accumulator.update
        for element in elements:
            update(element if type(element) is str and element else hash_form(element))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[hll_sketch]) -> hll_sketch:
        sketches = list(accumulators)
        if len(sketches) == 1:
            return sketches[0]
        union = hll_union(self.lg_k)
        for sketch in sketches:
            union.update(sketch)
        return union.get_result(self._target)

    def encode_accumulator(self, accumulator: hll_sketch) -> bytes:
        return c.dump_sketch(accumulator.serialize_compact())

    def decode_accumulator(self, data: bytes) -> hll_sketch:
        return hll_sketch.deserialize(c.load_sketch(data, self.name))

    def display_data(self) -> dict[str, Any]:
        return {"lg_k": self.lg_k, "hll_type": self.hll_type}


@register("count_distinct")
class CountDistinctFn(_HllFn):
    """Estimated number of distinct values (HyperLogLog); 0 for an empty group.

    ``lg_k=12, HLL_8`` (the default): ~1.3% RSE built in one piece, ~1.6% after merges,
    at most 4 KiB per group and window.

    Example:
        ``{"aggregation": "count_distinct", "col_name": "user_id",
        "aggregated_col_name": "users", "params": {"lg_k": 14}}``
    """

    name = "count_distinct"

    def extract_output(self, accumulator: hll_sketch) -> int:
        return round(accumulator.get_estimate())

    def output_type(self) -> str:
        return "bigint"


@register("hll_sketch")
class HllSketchFn(_HllFn):
    """The HLL sketch itself, serialized compact and base64-encoded, for merging downstream.

    Read it with ``datasketches.hll_sketch.deserialize(base64.b64decode(text))``, or with any
    Apache DataSketches HLL implementation (Java, C++, the Druid and Spark DataSketches
    functions); HyperLogLog++ sketches such as BigQuery's ``HLL_COUNT`` are another format.
    An empty group yields ``None``.
    """

    name = "hll_sketch"

    def extract_output(self, accumulator: hll_sketch) -> str | None:
        if accumulator.is_empty():
            return None
        return base64.b64encode(accumulator.serialize_compact()).decode("ascii")

    def output_type(self) -> str:
        return "text"
