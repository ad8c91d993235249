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
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np
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

    def check_accumulator(self, data: bytes) -> None:
        check_hll_sketch(c.load_sketch(data, self.name), self.lg_k, self.hll_type, self.name)

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


# ---------------------------------------------------------------------------------------------
# The serialized sketch, checked before DataSketches reads it
# ---------------------------------------------------------------------------------------------
#
# The compact serialization of an HLL sketch, as hll_sketch.serialize_compact() writes it and
# hll_sketch.deserialize() reads it (Apache DataSketches C++, hll/include/HllUtil.hpp for the
# constants, HllSketchImplFactory.hpp: deserialize(), CouponList-internal.hpp: newList(),
# CouponHashSet-internal.hpp: newSet(), HllArray-internal.hpp: newHll(),
# AuxHashMap-internal.hpp: deserialize()). Eight bytes: preamble ints, serial version (1),
# family (7), lg_k, lg_arr, flags, list count (LIST) or cur_min (HLL), mode (bits 0-1: LIST,
# SET, HLL; bits 2-3: HLL_4, HLL_6, HLL_8). Then the coupons (LIST: 4 bytes each from byte 8;
# SET: a count at byte 8, coupons from byte 12) or the HLL array (from byte 40, after the HIP
# accumulator, kxq0 and kxq1 doubles and the num_at_cur_min and aux counts), then HLL_4's
# exceptions (aux pairs). The readers check little beyond the first three bytes: newList()
# copies `list count` coupons into an array of 8 whatever the count (a heap overflow),
# newHll() sizes arrays from an unchecked lg_k, and the estimators look up tables by lg_k
# (CompositeInterpolationXTable::get_x_arr). So each field is checked here, against what this
# aggregation writes (the view's lg_k and type) and the invariants a sketch keeps.

_LIST, _SET, _HLL = 0, 1, 2
_PREAMBLE_INTS = {_LIST: 2, _SET: 3, _HLL: 10}
_HLL_TYPE_CODE = {"HLL_4": 0, "HLL_6": 1, "HLL_8": 2}
_EMPTY_FLAG, _COMPACT_FLAG, _OUT_OF_ORDER_FLAG, _FULL_SIZE_FLAG = 4, 8, 16, 32
_KNOWN_FLAGS = _EMPTY_FLAG | _COMPACT_FLAG | _OUT_OF_ORDER_FLAG | _FULL_SIZE_FLAG
_LIST_START, _SET_START, _ARRAY_START = 8, 12, 40
_LIST_MAX = 7  # a list of 8 coupons is promoted (CouponList::couponUpdate)
_KEY_BITS, _MAX_VALUE, _AUX_TOKEN = 26, 63, 15
_HLL_HEADER = struct.Struct("<dddII")  # hip accumulator, kxq0, kxq1, num_at_cur_min, aux count


def check_hll_sketch(data: bytes, lg_k: int, hll_type: str, owner: str) -> None:
    """Raise ``ValueError`` unless ``data`` is a compact HLL sketch of ``lg_k`` and ``hll_type``
    that ``hll_sketch.deserialize`` and every later use of the sketch can read safely."""

    def bad(what: str) -> ValueError:
        return c.corrupt(owner, f"HLL sketch: {what}")

    size = len(data)
    if size < 8:
        raise bad(f"{size} bytes, shorter than the 8-byte preamble")
    preamble, version, family, sketch_lg_k, _, flags, count, mode = data[:8]
    if family != 7:
        raise bad(f"family id {family}, expected 7 (HLL)")
    if version != 1:
        raise bad(f"serial version {version}, expected 1")
    cur_mode, type_code = mode & 3, mode >> 2
    if cur_mode not in _PREAMBLE_INTS or type_code > 2:
        raise bad(f"mode byte 0x{mode:02x} names no mode and type")
    if preamble != _PREAMBLE_INTS[cur_mode]:
        raise bad(f"{preamble} preamble ints, expected {_PREAMBLE_INTS[cur_mode]} for its mode")
    if sketch_lg_k != lg_k or type_code != _HLL_TYPE_CODE[hll_type]:
        raise bad(
            f"lg_k {sketch_lg_k} and type HLL_{(4, 6, 8, 0)[type_code]}, but the view's "
            f"{owner} has lg_k {lg_k} and {hll_type}; it was written by another definition"
        )
    if flags & ~_KNOWN_FLAGS or not flags & _COMPACT_FLAG:
        raise bad(f"flags 0x{flags:02x}, expected a compact sketch and no unknown flag")
    k = 1 << lg_k
    if cur_mode == _LIST:
        if count > _LIST_MAX:
            raise bad(f"a list of {count} coupons, more than the {_LIST_MAX} a list holds")
        if bool(flags & _EMPTY_FLAG) != (count == 0):
            raise bad(f"a list of {count} coupons, flagged {'' if count else 'not '}empty")
        _check_coupons(data, _LIST_START, count, bad)
    elif cur_mode == _SET:
        if lg_k < 8:  # below that a full list becomes an HLL array (CouponList::couponUpdate)
            raise bad(f"a coupon set, but lg_k {lg_k} sketches have none")
        if size < _SET_START:
            raise bad(f"{size} bytes, shorter than a coupon set's 12-byte preamble")
        (count,) = struct.unpack_from("<I", data, 8)
        if not 1 <= count <= k >> 3:
            raise bad(f"a set of {count} coupons, expected 1 to {k >> 3}")
        _check_coupons(data, _SET_START, count, bad)
    else:
        _check_array(data, lg_k, hll_type, count, bad)


def _check_coupons(data: bytes, start: int, count: int, bad: Any) -> None:
    """Coupons: the exact byte length, each with a register value from 1 to 63 (the top 6
    bits: a coupon below 2**26 has value 0), and distinct in a list, whose estimate is its
    count (a set's count is recounted as its coupons are inserted)."""
    if len(data) != start + 4 * count:
        raise bad(f"{len(data)} bytes, but {count} coupons take {start + 4 * count}")
    coupons = struct.unpack_from(f"<{count}I", data, start)
    if count and min(coupons) < 1 << _KEY_BITS:
        raise bad("an empty coupon")
    if start == _LIST_START and len(set(coupons)) != count:
        raise bad("a repeated coupon")


def _check_array(data: bytes, lg_k: int, hll_type: str, cur_min: int, bad: Any) -> None:
    """The HLL array: sizes, estimator state and register values (at most 63, the largest
    HllUtil::coupon() makes); for HLL_4 the exceptions and their registers must agree."""
    k = 1 << lg_k
    array_bytes = {"HLL_4": k >> 1, "HLL_6": ((k * 3) >> 2) + 1, "HLL_8": k}[hll_type]
    if len(data) < _ARRAY_START:
        raise bad(f"{len(data)} bytes, shorter than an HLL array's 40-byte preamble")
    hip, kxq0, kxq1, at_cur_min, aux_count = _HLL_HEADER.unpack_from(data, 8)
    expected = _ARRAY_START + array_bytes + 4 * aux_count
    if len(data) != expected:
        raise bad(f"{len(data)} bytes, but lg_k {lg_k} {hll_type} takes {expected}")
    # The estimators divide by kxq0 + kxq1 (sum of 2**-register over k registers): between
    # k * 2**-63 and k. Out of that or not finite, an estimate is infinite or NaN.
    if not (
        0.0 <= hip <= 2.0**64
        and kxq0 >= 0.0
        and kxq1 >= 0.0
        and k * 2.0**-63 <= kxq0 + kxq1 <= k * (1 + 1e-9)
    ):
        raise bad(f"estimator state out of range (hip {hip!r}, kxq0 {kxq0!r}, kxq1 {kxq1!r})")
    if at_cur_min > k:
        raise bad(f"{at_cur_min} registers at the minimum, but it has {k}")
    registers = np.frombuffer(data, np.uint8, array_bytes, _ARRAY_START)
    if hll_type != "HLL_4":
        if aux_count or cur_min:
            raise bad(f"{hll_type} with exceptions or a minimum register value")
        if hll_type == "HLL_8" and int(registers.max()) > _MAX_VALUE:
            raise bad(f"a register value above {_MAX_VALUE}")
        return
    # HLL_4: slot i is the low (even i) or high (odd i) nibble of byte i // 2, holding the
    # value - cur_min, or 15 when the value is an exception in the aux map.
    nibbles = np.empty(k, np.uint8)
    nibbles[0::2] = registers & 15
    nibbles[1::2] = registers >> 4
    token = nibbles == _AUX_TOKEN
    if cur_min > _MAX_VALUE - _AUX_TOKEN + 1:  # else no nibble below 15 can exceed 63
        plain = nibbles[~token]
        if cur_min > _MAX_VALUE or (plain.size and cur_min + int(plain.max()) > _MAX_VALUE):
            raise bad(f"a register value above {_MAX_VALUE} (cur_min {cur_min})")
    pairs = np.frombuffer(data, "<u4", aux_count, _ARRAY_START + array_bytes)
    slots, values = pairs & ((1 << _KEY_BITS) - 1), pairs >> _KEY_BITS
    if aux_count and (int(values.min()) < cur_min + _AUX_TOKEN or int(slots.max()) >= k):
        raise bad("an exception whose slot or value does not fit the array")
    if not np.array_equal(np.sort(slots), np.flatnonzero(token)):
        raise bad("exceptions that do not match the registers marked as exceptions")
