"""``top_k``: the most frequent values, with Apache DataSketches frequent items.

Exactness and memory: the sketch's map holds up to ``0.75 * 2**lg_max_map_size`` distinct
values (768 at the default ``lg_max_map_size=10``, which is raised for large ``k`` so that the
map always holds at least ``3 k`` values). While a group (merges included) has no more
distinct values than that, the counts and the ranking are exact. Beyond it, the sketch evicts
rare values and each count may be over-estimated by at most ``ε · n`` (``n`` = the group's
number of inputs, ``ε = 3.5 / 2**lg_max_map_size``: 0.34% at 10, 0.085% at 12); values more
frequent than ``ε · n`` are never lost. Memory is one map slot per value kept: the value's JSON
text plus about 12 bytes serialized, so ~32 KiB for a full default map of 30-character values.

Values keep their JSON type: they are stored as canonical JSON text (``"a"``, ``1``, ``1.5``,
``true``) and read back. ``1`` and ``1.0`` are one value; ``"1"``, ``1`` and ``true`` are three.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
from datasketches import frequent_items_error_type, frequent_strings_sketch

from liveagg.combiners import _common as c
from liveagg.combiners.base import LiveaggCombineFn
from liveagg.combiners.registry import register

_ALL_ITEMS = frequent_items_error_type.NO_FALSE_NEGATIVES
_dumps = orjson.dumps


def default_lg_max_map_size(k: int) -> int:
    """log2 of the map size: at least 10, and large enough to hold ``3 k`` values."""
    return max(10, (4 * k - 1).bit_length())


@register("top_k")
class TopKFn(c.ScalarInput, LiveaggCombineFn):
    """The ``k`` most frequent values as ``[[value, count], ...]``, most frequent first.

    Ties are ordered by value (numbers, then strings, then booleans), so equal counts give the
    same list whatever the order of inputs and merges. An empty group yields ``None``.

    Example:
        ``{"aggregation": "top_k", "col_name": "url", "aggregated_col_name": "top_urls",
        "params": {"k": 5}}``
    """

    name = "top_k"

    def __init__(self, k: int = 10, lg_max_map_size: int | None = None) -> None:
        """Check and keep the params.

        Args:
            k: how many values to report, 1 to 100000.
            lg_max_map_size: log2 of the sketch's map size, 3 to 26; counts are exact up to
                ``0.75 * 2**lg_max_map_size`` distinct values. Default: see
                :func:`default_lg_max_map_size`.
        """
        super().__init__()
        self.k = c.check_int_param(self.name, "k", k, 1, 100_000)
        if lg_max_map_size is None:
            lg_max_map_size = default_lg_max_map_size(self.k)
        self.lg_max_map_size = c.check_int_param(
            self.name, "lg_max_map_size", lg_max_map_size, 3, 26
        )

    @property
    def exact_up_to(self) -> int:
        """The number of distinct values per group up to which counts are exact."""
        return 3 * 2**self.lg_max_map_size // 4

    def create_accumulator(self) -> frequent_strings_sketch:
        return frequent_strings_sketch(self.lg_max_map_size)

    def add_input(self, accumulator: frequent_strings_sketch, element: Any) -> Any:
        try:
            text = _dumps(element).decode()
        except TypeError:  # an int beyond 64 bits
            text = str(element)
        accumulator.update(text)
        return accumulator

    def add_inputs(self, accumulator: frequent_strings_sketch, elements: Iterable[Any]) -> Any:
        # Counting the batch first and making weighted updates measured no faster: the
        # sketch's update is as cheap as a Counter's.
        update = accumulator.update
        for element in elements:
            try:
                text = _dumps(element).decode()
            except TypeError:  # an int beyond 64 bits
                text = str(element)
            update(text)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[frequent_strings_sketch]) -> Any:
        merged, rest = c.first_or_new(accumulators, self.create_accumulator)
        for sketch in rest:
            merged.merge(sketch)
        return merged

    def extract_output(self, accumulator: frequent_strings_sketch) -> list[list[Any]] | None:
        if accumulator.is_empty():
            return None
        items = accumulator.get_frequent_items(_ALL_ITEMS, 0)
        if len(items) > self.k:
            # Only items whose estimate reaches the k-th largest can rank among the k: the
            # rest of a large map is neither read back from its text nor sorted.
            kth = heapq.nlargest(self.k, [item[1] for item in items])[-1]
            items = [item for item in items if item[1] >= kth]
        rows = [(c.from_text(item), estimate) for item, estimate, _lower, _upper in items]
        rows.sort(key=lambda row: (-row[1], c.order_key(row[0])))
        return [[value, count] for value, count in rows[: self.k]]

    def output_type(self) -> str:
        return "json"

    def encode_accumulator(self, accumulator: frequent_strings_sketch) -> bytes:
        return c.dump_sketch(accumulator.serialize())

    def decode_accumulator(self, data: bytes) -> frequent_strings_sketch:
        return frequent_strings_sketch.deserialize(c.load_sketch(data, self.name))

    def check_accumulator(self, data: bytes) -> None:
        check_frequent_strings(c.load_sketch(data, self.name), self.lg_max_map_size, self.name)

    def display_data(self) -> dict[str, Any]:
        return {"k": self.k, "lg_max_map_size": self.lg_max_map_size}


# ---------------------------------------------------------------------------------------------
# The serialized sketch, checked before DataSketches reads it
# ---------------------------------------------------------------------------------------------
#
# frequent_strings_sketch.serialize() and .deserialize() (Apache DataSketches C++,
# fi/include/frequent_items_sketch.hpp for the constants, frequent_items_sketch_impl.hpp:
# serialize(unsigned) and deserialize(const void*, size_t, ...), reverse_purge_hash_map.hpp;
# common/include/serde.hpp: serde<std::string>). Eight bytes: preamble longs (1 empty, else 4),
# serial version (1), family (10), lg_max_map_size, lg_cur_map_size, flags (0, or 5 when
# empty), two unused. Then, unless empty: the number of items (uint32), unused (uint32), the
# total weight and the offset (uint64), one weight per item (uint64), and the items, each a
# uint32 length and that many bytes.
#
# deserialize() checks the version, family and lg_cur <= lg_max, but not lg_max itself (the
# map allocates 2**lg_cur slots from it), and ignores bytes left over. Each item is also read
# back as this aggregation's canonical JSON text (extract_output parses it), and must be UTF-8
# (the binding turns it into a Python str).

_FI_FAMILY, _LG_MIN_MAP_SIZE = 10, 3
_FI_HEADER = struct.Struct("<IIQQ")  # items, unused, total weight, offset
_FI_START = 32
_MAX_WEIGHT = 2**62  # a count of updates: far beyond any stream, and estimates stay int64
_LENGTH = struct.Struct("<I")


def check_frequent_strings(data: bytes, lg_max_map_size: int, owner: str) -> None:
    """Raise ``ValueError`` unless ``data`` is a frequent-strings sketch of
    ``lg_max_map_size`` holding this aggregation's JSON texts, that
    ``frequent_strings_sketch.deserialize`` and ``extract_output`` can read safely."""

    def bad(what: str) -> ValueError:
        return c.corrupt(owner, f"frequent items sketch: {what}")

    size = len(data)
    if size < 8:
        raise bad(f"{size} bytes, shorter than the 8-byte preamble")
    preamble, version, family, lg_max, lg_cur, flags = data[:6]
    if family != _FI_FAMILY:
        raise bad(f"family id {family}, expected {_FI_FAMILY} (frequent items)")
    if version != 1:
        raise bad(f"serial version {version}, expected 1")
    if lg_max != lg_max_map_size:
        raise bad(
            f"lg_max_map_size {lg_max}, but the view's {owner} has {lg_max_map_size}; it was "
            "written by another definition"
        )
    if not _LG_MIN_MAP_SIZE <= lg_cur <= lg_max:
        raise bad(f"lg_cur_map_size {lg_cur}, expected {_LG_MIN_MAP_SIZE} to {lg_max}")
    if flags not in (0, 1, 5):
        raise bad(f"flags 0x{flags:02x}")
    if flags:
        if preamble != 1 or size != 8:
            raise bad(f"empty: {preamble} preamble longs and {size} bytes, expected 1 and 8")
        return
    if preamble != 4 or size < _FI_START:
        raise bad(f"{preamble} preamble longs and {size} bytes, expected 4 and at least 32")
    count, _, total, offset = _FI_HEADER.unpack_from(data, 8)
    most = 3 << lg_max >> 2  # reverse_purge_hash_map's load factor, 0.75
    if not 1 <= count <= most:
        raise bad(f"{count} items, expected 1 to {most}")
    if total > _MAX_WEIGHT or offset > total:
        raise bad(f"total weight {total} and offset {offset} out of range")
    pos = _FI_START + 8 * count
    if size < pos:
        raise bad(f"{size} bytes, too short for the weights of {count} items")
    weights = np.frombuffer(data, "<u8", count, _FI_START)
    if int(weights.min()) < 1 or int(weights.max()) > total:
        raise bad(f"item weights out of range 1 to the total weight {total}")
    items = []
    unpack, append = _LENGTH.unpack_from, items.append
    try:
        for _ in range(count):  # the bounds are checked once, after the loop
            (length,) = unpack(data, pos)
            append(data[pos + 4 : pos + 4 + length])
            pos += 4 + length
    except struct.error:
        raise bad(f"{size} bytes end within its {count} items") from None
    if pos > size:
        raise bad(f"its {count} items run {pos - size} bytes past its end")
    if pos != size:
        raise bad(f"{size - pos} bytes after its {count} items")
    if not _all_items(items):
        bad_item = next((raw for raw in items if not _is_item(raw)), items[0])
        raise bad(f"item {c.brief(bad_item)} is not a value as {owner} stores it")


_SCALAR_TYPES = frozenset({str, int, float, bool})


def _all_items(items: list[bytes]) -> bool:
    """Whether every item is a canonical JSON scalar text, as ``add_input`` stores it.

    In two passes of orjson over all items as one JSON array, one item per line: the array
    must parse to as many scalars as there are items (orjson reads no NaN or infinity), and
    print back, one per line, as exactly those lines. A scalar prints on one line, so each
    item is the text of its own value, not part of a neighbour's. Ints beyond 64 bits,
    stored as their digits, read back as floats there, and are checked one by one.
    """
    lines = b"[\n  " + b",\n  ".join(items) + b"\n]"
    try:
        values = orjson.loads(lines)
    except orjson.JSONDecodeError:
        return False
    if (
        len(values) == len(items)
        and set(map(type, values)) <= _SCALAR_TYPES
        and orjson.dumps(values, option=orjson.OPT_INDENT_2) == lines
    ):
        return True
    return all(map(_is_item, items))


def _is_item(raw: bytes) -> bool:
    """Whether ``raw`` is the canonical JSON text of a scalar, as ``add_input`` stores it."""
    try:
        text = raw.decode()
        value = c.from_text(text)
    except (ValueError, IndexError):  # UnicodeDecodeError and JSONDecodeError included
        return False
    if not c.is_scalar(value):
        return False
    try:
        return _dumps(value).decode() == text
    except TypeError:  # an int beyond 64 bits
        return str(value) == text
