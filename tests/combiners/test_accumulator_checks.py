"""Accumulators from outside the pipeline: each malformed one is refused, with what is wrong.

Level 2 of a two-level run reads accumulators from Kafka. ``check_accumulator`` checks the
serialized sketches field by field before DataSketches' native code reads them, and every
``decode_accumulator`` refuses JSON of the wrong shape or types. Each case below starts from
real bytes that an aggregation wrote and breaks one thing. (That every accumulator the
aggregations write passes the checks is asserted by the shared harness, which checks each
accumulator it ships through bytes.)
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from liveagg.combiners import create
from liveagg.transforms.combine import ViewCombineFn


def written(kind: str, params: dict[str, Any], values: list[Any]) -> bytes:
    """The accumulator bytes ``kind`` writes for ``values``."""
    fn = create(kind, params)
    acc = fn.add_inputs(fn.create_accumulator(), [fn.coerce(v) for v in values])
    return fn.encode_accumulator(acc)


def patch(data: bytes, offset: int, new: bytes) -> bytes:
    """``data`` with ``new`` at ``offset`` of the sketch (after the 0x10 header byte)."""
    at = 1 + offset
    return data[:at] + new + data[at + len(new) :]


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def f64(value: float) -> bytes:
    return struct.pack("<d", value)


Mutation = Callable[[bytes], bytes]

# ---------------------------------------------------------------------------------------------
# HLL
# ---------------------------------------------------------------------------------------------

HLL_LIST = written("count_distinct", {}, ["a", "b", "c"])  # lg_k 12, HLL_8: 3 coupons
HLL_SET = written("count_distinct", {}, [str(i) for i in range(200)])
HLL_8 = written("count_distinct", {}, [str(i) for i in range(5000)])
HLL_4 = written("count_distinct", {"hll_type": "HLL_4"}, [str(i) for i in range(20000)])
HLL_4_AUX = 1 + 40 + 2048  # where its 3 exceptions start, with the header byte


def _hll4_aux(i: int, slot: int, value: int) -> Mutation:
    def mutate(data: bytes) -> bytes:
        at = HLL_4_AUX + 4 * i
        return data[:at] + u32(value << 26 | slot) + data[at + 4 :]

    return mutate


def _first_aux_slot(data: bytes) -> int:
    (pair,) = struct.unpack_from("<I", data, HLL_4_AUX)
    return pair & (2**26 - 1)


HLL_CASES: list[tuple[str, bytes, Mutation, str]] = [
    ("family", HLL_LIST, lambda d: patch(d, 2, b"\x08"), r"family id 8, expected 7 \(HLL\)"),
    ("version", HLL_LIST, lambda d: patch(d, 1, b"\x02"), "serial version 2, expected 1"),
    ("mode", HLL_LIST, lambda d: patch(d, 7, b"\x0b"), "mode byte 0x0b names no mode"),
    ("preamble", HLL_LIST, lambda d: patch(d, 0, b"\x03"), "3 preamble ints, expected 2"),
    (
        "lg_k",
        HLL_LIST,
        lambda d: patch(d, 3, b"\x0b"),
        "lg_k 11 and type HLL_8, but the view's count_distinct has lg_k 12 and HLL_8; it was "
        "written by another definition",
    ),
    ("type", HLL_LIST, lambda d: patch(d, 7, b"\x04"), "lg_k 12 and type HLL_6, but"),
    ("not compact", HLL_LIST, lambda d: patch(d, 5, b"\x00"), "flags 0x00, expected a compact"),
    ("unknown flag", HLL_LIST, lambda d: patch(d, 5, b"\x88"), "flags 0x88"),
    (
        "list count",
        HLL_LIST,
        lambda d: patch(d, 6, b"\xc8"),
        "a list of 200 coupons, more than the 7 a list holds",
    ),
    ("list length", HLL_LIST, lambda d: d[:-4], "16 bytes, but 3 coupons take 20"),
    ("empty flag", HLL_LIST, lambda d: patch(d, 5, b"\x0c"), "a list of 3 coupons, flagged empty"),
    ("empty coupon", HLL_LIST, lambda d: patch(d, 8, u32(0)), "an empty coupon"),
    ("no value", HLL_SET, lambda d: patch(d, 12, u32(5)), "an empty coupon"),
    ("repeated coupon", HLL_LIST, lambda d: patch(d, 12, d[9:13]), "a repeated coupon"),
    ("set count", HLL_SET, lambda d: patch(d, 8, u32(2**31)), "a set of 2147483648 coupons"),
    ("set length", HLL_SET, lambda d: d + b"\0", "813 bytes, but 200 coupons take 812"),
    ("array length", HLL_8, lambda d: d + b"\0", "4137 bytes, but lg_k 12 HLL_8 takes 4136"),
    ("hip NaN", HLL_8, lambda d: patch(d, 8, f64(math.nan)), r"estimator state out of range"),
    ("kxq zero", HLL_8, lambda d: patch(d, 16, f64(0.0) * 2), r"estimator state out of range"),
    ("kxq above k", HLL_8, lambda d: patch(d, 16, f64(5000.0)), r"estimator state out of range"),
    ("register", HLL_8, lambda d: patch(d, 40, b"\x40"), "a register value above 63"),
    ("cur_min", HLL_8, lambda d: patch(d, 6, b"\x01"), "HLL_8 with exceptions or a minimum"),
    ("at cur_min", HLL_8, lambda d: patch(d, 32, u32(4097)), "4097 registers at the minimum"),
    ("hll4 cur_min", HLL_4, lambda d: patch(d, 6, b"\x3c"), r"above 63 \(cur_min 60\)"),
    ("aux value", HLL_4, lambda d: _hll4_aux(0, _first_aux_slot(d), 14)(d), "does not fit"),
    ("aux slot", HLL_4, _hll4_aux(0, 4096, 20), "an exception whose slot or value does not fit"),
    ("aux moved", HLL_4, _hll4_aux(0, 1, 20), "exceptions that do not match the registers"),
    ("aux lost", HLL_4, lambda d: patch(d, 40, b"\xff"), "exceptions that do not match"),
]


@pytest.mark.parametrize(
    ("data", "mutation", "message"),
    [pytest.param(d, m, msg, id=name) for name, d, m, msg in HLL_CASES],
)
def test_malformed_hll_sketches_are_refused(data: bytes, mutation: Mutation, message: str) -> None:
    fn = create("count_distinct", {"hll_type": "HLL_4" if data is HLL_4 else "HLL_8"})
    fn.check_accumulator(data)  # the real bytes pass
    with pytest.raises(ValueError, match="cannot decode a count_distinct accumulator: HLL "):
        fn.check_accumulator(mutation(data))
    with pytest.raises(ValueError, match=message):
        fn.check_accumulator(mutation(data))


def test_a_coupon_set_cannot_have_a_small_lg_k() -> None:
    fn = create("count_distinct", {"lg_k": 7})
    with pytest.raises(ValueError, match="a coupon set, but lg_k 7 sketches have none"):
        fn.check_accumulator(patch(HLL_SET, 3, b"\x07"))


# ---------------------------------------------------------------------------------------------
# KLL
# ---------------------------------------------------------------------------------------------

KLL = written("approx_quantiles", {}, [float(i) for i in range(300)])  # k 200, two levels
KLL_ONE = written("approx_quantiles", {}, [1.5])
KLL_EMPTY = written("approx_quantiles", {}, [])
KLL_ITEMS = 1 + 20 + 4 * 2  # where min, max and the items start, with the header byte

#: The regression: a 23-byte approx_quantiles accumulator, the first 20 bytes of a real sketch
#: of 300 values (as :data:`KLL`) and two bytes of its level offsets, changed. DataSketches
#: reads the offsets past the end of the bytes, and the process dies.
KLL_23 = bytes.fromhex("1005010f00c80008002c01000000000000c80002008558")


def _kll_level1_unsorted(data: bytes) -> bytes:
    (level0, level1) = struct.unpack_from("<2I", data, 1 + 20)
    at = KLL_ITEMS + 16 + 8 * (level1 - level0)  # the first two items of level 1
    first, second = data[at : at + 8], data[at + 8 : at + 16]
    return data[:at] + second + first + data[at + 16 :]


KLL_CASES: list[tuple[str, bytes, Mutation, str]] = [
    ("23 bytes", KLL, lambda d: KLL_23, "22 bytes, too short for the offsets of 2 levels"),
    ("family", KLL, lambda d: patch(d, 2, b"\x10"), r"family id 16, expected 15 \(KLL\)"),
    ("version", KLL, lambda d: patch(d, 1, b"\x03"), "serial version 3, expected 1 or 2"),
    ("m", KLL, lambda d: patch(d, 6, b"\x07"), "m 7, expected 8"),
    ("flags", KLL, lambda d: patch(d, 3, b"\x08"), "flags 0x08"),
    ("empty and one", KLL, lambda d: patch(d, 3, b"\x05"), "flags 0x05"),
    (
        "k",
        KLL,
        lambda d: patch(d, 4, struct.pack("<H", 100)),
        "k 100, but the view's approx_quantiles has k 200; it was written by another definition",
    ),
    ("empty size", KLL_EMPTY, lambda d: d + b"\0", "empty: 2 preamble ints, version 1, 9 bytes"),
    ("one item", KLL_ONE, lambda d: d[:-1], r"one item: 2 preamble ints, version 2, 15 bytes"),
    ("one NaN", KLL_ONE, lambda d: patch(d, 8, f64(math.nan)), "an item that is not a finite"),
    ("preamble", KLL, lambda d: patch(d, 0, b"\x02"), "2 preamble ints and 1644 bytes"),
    ("min_k", KLL, lambda d: patch(d, 16, struct.pack("<H", 300)), "min_k 300, expected 8 to k"),
    ("no levels", KLL, lambda d: patch(d, 18, b"\x00"), "0 levels, expected 1 to 61"),
    ("levels", KLL, lambda d: patch(d, 20, u32(400)), r"level offsets \[400, 233\] not in order"),
    ("size", KLL, lambda d: d + f64(1.0), "1652 bytes, but 200 retained items take 1644"),
    ("n", KLL, lambda d: patch(d, 8, struct.pack("<Q", 299)), "n 299, but its levels weigh 300"),
    ("NaN item", KLL, lambda d: patch(d, 28 + 16, f64(math.nan)), "not finite or not within"),
    ("beyond max", KLL, lambda d: patch(d, 28 + 16, f64(1e9)), "not finite or not within"),
    ("unsorted", KLL, _kll_level1_unsorted, "a level whose items are not sorted"),
]


@pytest.mark.parametrize(
    ("data", "mutation", "message"),
    [pytest.param(d, m, msg, id=name) for name, d, m, msg in KLL_CASES],
)
def test_malformed_kll_sketches_are_refused(data: bytes, mutation: Mutation, message: str) -> None:
    fn = create("approx_quantiles")
    fn.check_accumulator(data)
    with pytest.raises(ValueError, match="cannot decode a approx_quantiles accumulator: KLL "):
        fn.check_accumulator(mutation(data))
    with pytest.raises(ValueError, match=message):
        fn.check_accumulator(mutation(data))


@pytest.mark.parametrize(("k", "inputs"), [(8, 40), (200, 1000)], ids=["few", "many"])
def test_items_are_checked_however_many_there_are(k: int, inputs: int) -> None:
    # A few items are checked in Python, many with numpy: the same refusals either way.
    fn = create("approx_quantiles", {"k": k})
    data = written("approx_quantiles", {"k": k}, [float(i) for i in range(inputs)])
    num_levels = data[1 + 18]
    levels = struct.unpack_from(f"<{num_levels}I", data, 1 + 20)
    retained = (len(data) - 1 - 20 - 4 * num_levels) // 8 - 2
    assert num_levels == 3 and (retained <= 48) == (k == 8)
    start = 1 + 20 + 4 * num_levels + 16  # the first item
    bounds = [offset - levels[0] for offset in levels[1:]]
    values = struct.unpack_from(f"<{retained}d", data, start)
    # As written, the top level starts below where the level under it ends: allowed.
    assert values[bounds[1]] < values[bounds[1] - 1]
    fn.check_accumulator(data)
    at = start + 8 * bounds[1]  # the top level's first two items
    with pytest.raises(ValueError, match="not finite or not within its min and max"):
        fn.check_accumulator(data[:at] + f64(math.inf) + data[at + 8 :])
    swapped = data[:at] + data[at + 8 : at + 16] + data[at : at + 8] + data[at + 16 :]
    with pytest.raises(ValueError, match="a level whose items are not sorted"):
        fn.check_accumulator(swapped)


def test_level_zero_may_be_unsorted_unless_flagged_sorted() -> None:
    fn = create("approx_quantiles")
    (start, end) = struct.unpack_from("<2I", KLL, 1 + 20)
    level0 = struct.unpack_from(f"<{end - start}d", KLL, KLL_ITEMS + 16)
    assert KLL[1 + 3] == 0 and list(level0) != sorted(level0)  # as written: unsorted, unflagged
    fn.check_accumulator(KLL)
    with pytest.raises(ValueError, match="a level whose items are not sorted"):
        fn.check_accumulator(patch(KLL, 3, b"\x02"))


KLL_DESERIALIZE = "import sys, datasketches; datasketches.kll_doubles_sketch.deserialize(bytes.fromhex(sys.argv[1]))"  # noqa: E501


def test_the_23_byte_kll_accumulator_crashes_datasketches_and_is_refused_here() -> None:
    fn = create("approx_quantiles")
    assert KLL_23[:21] == KLL[:21]  # a real sketch's preamble, cut short
    # Unchecked, DataSketches' deserialize() reads the level offsets past the end of the
    # bytes and its item copy runs off the buffer: the process is killed.
    proc = subprocess.run(
        [sys.executable, "-c", KLL_DESERIALIZE, KLL_23[1:].hex()], capture_output=True, timeout=60
    )
    assert proc.returncode < 0, (proc.returncode, proc.stderr[-500:])
    with pytest.raises(ValueError, match="KLL sketch: 22 bytes, too short for the offsets"):
        fn.check_accumulator(KLL_23)


# ---------------------------------------------------------------------------------------------
# Frequent items (top_k)
# ---------------------------------------------------------------------------------------------

TOP = written("top_k", {}, ["a", "a", 1, True, 2**70])  # lg_max 10: 4 items
TOP_EMPTY = written("top_k", {}, [])
TOP_ITEMS = 32 + 8 * 4  # where the items start in the sketch


def _top_item(text: bytes) -> Mutation:
    """The first item replaced by ``text`` (and the lengths kept consistent)."""

    def mutate(data: bytes) -> bytes:
        at = 1 + TOP_ITEMS
        (length,) = struct.unpack_from("<I", data, at)
        return data[:at] + u32(len(text)) + text + data[at + 4 + length :]

    return mutate


TOP_CASES: list[tuple[str, bytes, Mutation, str]] = [
    ("family", TOP, lambda d: patch(d, 2, b"\x0b"), "family id 11, expected 10"),
    ("version", TOP, lambda d: patch(d, 1, b"\x02"), "serial version 2, expected 1"),
    (
        "lg_max",
        TOP,
        lambda d: patch(d, 3, b"\x0b"),
        "lg_max_map_size 11, but the view's top_k has 10; it was written by another definition",
    ),
    ("lg_cur", TOP, lambda d: patch(d, 4, b"\x0b"), "lg_cur_map_size 11, expected 3 to 10"),
    ("flags", TOP, lambda d: patch(d, 5, b"\x02"), "flags 0x02"),
    ("empty size", TOP_EMPTY, lambda d: d + b"\0", "empty: 1 preamble longs and 9 bytes"),
    ("preamble", TOP, lambda d: patch(d, 0, b"\x03"), "3 preamble longs"),
    ("no items", TOP, lambda d: patch(d, 8, u32(0)), "0 items, expected 1 to 768"),
    ("too many", TOP, lambda d: patch(d, 8, u32(769)), "769 items, expected 1 to 768"),
    ("offset", TOP, lambda d: patch(d, 24, struct.pack("<Q", 6)), "offset 6 out of range"),
    ("weight", TOP, lambda d: patch(d, 32, struct.pack("<Q", 0)), "item weights out of range"),
    ("weights cut", TOP, lambda d: d[: 1 + 40], "too short for the weights of 4 items"),
    ("item length", TOP, lambda d: patch(d, TOP_ITEMS, u32(2**31)), "bytes end within its 4"),
    ("last item", TOP, lambda d: d[:-1], "its 4 items run 1 bytes past its end"),
    ("trailing", TOP, lambda d: d + b"\0", "1 bytes after its 4 items"),
    ("not canonical", TOP, _top_item(b"01"), r"item b'01' is not a value as top_k stores it"),
    ("not JSON", TOP, _top_item(b'"a'), "is not a value as top_k stores it"),
    ("empty item", TOP, _top_item(b""), "is not a value as top_k stores it"),
    ("not UTF-8", TOP, _top_item(b'"\xff"'), "is not a value as top_k stores it"),
    ("not a scalar", TOP, _top_item(b"[1]"), "is not a value as top_k stores it"),
    ("infinite", TOP, _top_item(b"1e999"), "is not a value as top_k stores it"),
]


@pytest.mark.parametrize(
    ("data", "mutation", "message"),
    [pytest.param(d, m, msg, id=name) for name, d, m, msg in TOP_CASES],
)
def test_malformed_frequent_items_sketches_are_refused(
    data: bytes, mutation: Mutation, message: str
) -> None:
    fn = create("top_k")
    fn.check_accumulator(data)
    with pytest.raises(ValueError, match="cannot decode a top_k accumulator: frequent items "):
        fn.check_accumulator(mutation(data))
    with pytest.raises(ValueError, match=message):
        fn.check_accumulator(mutation(data))


def test_an_item_stays_readable_as_the_value_it_was() -> None:
    fn = create("top_k")
    # The texts top_k stores read back as the values: a big int as its digits, not a float.
    assert fn.extract_output(fn.decode_accumulator(TOP)) == [
        ["a", 2],
        [1, 1],
        [2**70, 1],
        [True, 1],
    ]


# ---------------------------------------------------------------------------------------------
# JSON accumulators
# ---------------------------------------------------------------------------------------------

JSON_CASES: list[tuple[str, dict[str, Any], bytes, str]] = [
    ("count", {}, b'\x01"x"', "expected a count of at least 0, got 'x'"),
    ("count", {}, b"\x01-1", "expected a count of at least 0, got -1"),
    ("count", {}, b"\x10\x02\x01", r"header 0x10, expected JSON \(0x01 or 0x02\)"),
    ("sum", {}, b"\x01[0,0.0,0.0,0,0,0]", r"expected \[int sum, float sum, compensation"),
    ("sum", {}, b'\x01["a",0.0,0.0,0,1]', r"expected \[int sum"),
    # An overflowed float sum is written as null by orjson: refused, not merged as a number.
    ("sum", {}, b"\x01[0,null,0.0,0,1]", r"expected \[int sum.* got \[0, None, 0\.0, 0, \.\.\.\]"),
    ("mean", {}, b"\x01[0,0.0,0.0,-1,0]", r"expected \[int sum"),
    ("sum", {}, b"\x02" + b"[" * 3000 + b"]" * 3000, "JSON nested too deeply"),
    ("min", {}, b'\x01"1"', "expected a finite number or null, got '1'"),
    ("max", {}, b"\x01true", "expected a finite number or null, got True"),
    ("max", {}, b"\x021e999", "expected a finite number or null, got inf"),
    ("variance", {}, b'\x01[1,"x",0.0]', r"expected \[count, mean, m2\]"),
    ("stddev", {}, b"\x01[-1,0.0,0.0]", r"expected \[count, mean, m2\]"),
    ("first", {}, b"\x01[1,null]", r"expected null or \[time, value\]"),
    ("last", {}, b'\x01["t",1]', r"expected null or \[time, value\]"),
    ("first", {}, b"\x01[1,[1]]", r"expected null or \[time, value\]"),
    ("collect_set", {}, b"\x01[[1,[2]],[]]", r"expected \[values, booleans\]"),
    ("collect_set", {}, b"\x01[[true],[]]", r"expected \[values, booleans\]"),
    ("collect_set", {}, b"\x01[[1],[1]]", r"expected \[values, booleans\]"),
    ("collect_set", {}, b"\x01[[null],[]]", r"expected \[values, booleans\]"),
    ("collect_set", {"max_size": 2}, b"\x01[[1,2,3,4,5],[]]", "5 values, more than the 4"),
    ("count_distinct_exact", {}, b'\x01[[{"a":1}],[]]', r"expected \[values, booleans\]"),
    ("histogram", {"bounds": [1, 2, 3]}, b"\x01[1,-1,0,0]", "expected counts of at least 0"),
    ("histogram", {"bounds": [1, 2, 3]}, b"\x01[1,1.5,0,0]", "expected counts of at least 0"),
    ("histogram", {"bounds": [1, 2, 3]}, b"\x01[1,1]", "expected 4 counts for bounds"),
]


@pytest.mark.parametrize(
    ("kind", "params", "data", "message"),
    [pytest.param(k, p, d, m, id=f"{k}-{i}") for i, (k, p, d, m) in enumerate(JSON_CASES)],
)
def test_malformed_json_accumulators_are_refused(
    kind: str, params: dict[str, Any], data: bytes, message: str
) -> None:
    fn = create(kind, params)
    with pytest.raises(ValueError, match=f"cannot decode a {kind} accumulator: {message}"):
        fn.check_accumulator(data)
        fn.decode_accumulator(data)


# ---------------------------------------------------------------------------------------------
# A view's accumulator: its framing
# ---------------------------------------------------------------------------------------------


def test_a_views_accumulator_is_framed_exactly() -> None:
    view = ViewCombineFn([create("count"), create("sum")])
    data = view.encode(view.add_input(view.create_accumulator(), (1, 2)))
    assert view.extract_output(view.decode_checked(data)) == (1, 2)
    cases = [
        (b"", r"aggregation_info\[0\] \(count\): the accumulator ends after 0 of its bytes"),
        (data[:-1], r"aggregation_info\[1\] \(sum\): length 16, but 15 bytes are left"),
        (data + b"\0\0\0", "3 bytes after the last aggregation's accumulator"),
        (
            struct.pack(">I", 3) + b"\x01-1" + data[6:],
            r"aggregation_info\[0\] \(count\): cannot decode a count accumulator",
        ),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            view.decode_checked(bad)
