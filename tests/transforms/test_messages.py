"""What a line becomes: a message, a blank line, or a dead letter with the parser's reason;
integers exact however long; event times whose windows cannot be written refused per view."""

from __future__ import annotations

import math
import sys
import tracemalloc
from typing import Any

import orjson
import pytest

from examples.custom_combiners import RangeFn
from liveagg.loader import parse_view
from liveagg.transforms.plan import (
    Reject,
    Tally,
    ViewPlan,
    decode,
    decode_key,
    encode_key,
    long_digits,
    route,
)

BIG = 18446744073709551616  # 2**64, the first integer orjson reads as a float


@pytest.mark.parametrize("as_text", [False, True])
@pytest.mark.parametrize(
    ("line", "reason", "detail"),
    [
        (b"null", "not_an_object", "expected a JSON object, got null"),
        (b"[1, 2]", "not_an_object", "expected a JSON object, got array"),
        (b'"text"', "not_an_object", "expected a JSON object, got string"),
        (b"1e400", "not_json", "number is infinity when parsed as double"),
        (b'{"a": -1e400}', "not_json", "number is infinity when parsed as double"),
        (b"[" * 1025 + b"]" * 1025, "not_json", "depth limit exceeded"),
        (b'{"a": NaN}', "not_json", "unexpected character"),
        (b'{"a": 1,}', "not_json", "trailing comma"),
        (b'{"a": 1} {"b": 2}', "not_json", "unexpected content after document"),
        (b"\x0b", "not_json", "the message is not valid JSON"),
        (
            b'\xef\xbb\xbf{"a": 1}',
            "not_json",
            "byte order mark (BOM) is not supported: line 1 column 1 (char 0) "
            "(a byte order mark is dropped only at the start of a file)",
        ),
    ],
)
def test_dead_letter_reasons(line: bytes, reason: str, detail: str, as_text: bool) -> None:
    with pytest.raises(Reject) as info:
        decode(line.decode() if as_text else line)
    assert info.value.reason == reason
    assert detail in info.value.detail


def test_invalid_utf8_names_the_byte() -> None:
    with pytest.raises(Reject, match=r"not valid UTF-8.*\(invalid UTF-8 at byte 6\)") as info:
        decode(b'{"a":"\xff"}')
    assert info.value.reason == "not_json"


@pytest.mark.parametrize("line", [b"", b"   ", b"\t \r", "", " \t"])
def test_blank_lines_carry_no_message(line: bytes | str) -> None:
    assert decode(line) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"a": 18446744073709551616}', {"a": BIG}),
        (b'{"a": -9223372036854775809}', {"a": -(2**63) - 1}),
        (
            b'{"a": [1, {"b": 123456789012345678901234567890}]}',
            {"a": [1, {"b": 12345678901234567890 * 10**10 + 1234567890}]},
        ),
        (b'{"a": 18446744073709551615}', {"a": 2**64 - 1}),  # orjson's own, exact
        (b'{"a": "12345678901234567890", "b": 1e19}', {"a": "12345678901234567890", "b": 1e19}),
        (b'{"a": 1.0000000000000000000001}', {"a": 1.0}),
        ('{"a": 18446744073709551616}', {"a": BIG}),
    ],
)
def test_integers_stay_exact(line: bytes | str, expected: dict[str, Any]) -> None:
    msg = decode(line)
    assert msg == expected
    assert [type(v) for v in msg.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("stack", [0, 400, 900])
@pytest.mark.parametrize("levels", [990, 1023])
def test_long_integers_nested_as_deep_as_orjson_reads_are_exact_from_any_stack_depth(
    stack: int, levels: int
) -> None:
    """The standard library's decoder counts its recursion from the caller's depth: a message
    must not be read or refused by where it is decoded from (its batch, its path)."""
    line = b"[" * (levels - 1) + b"18446744073709551616" + b"]" * (levels - 1)
    payload = b'{"a": ' + line + b"}"
    assert orjson.loads(payload)  # orjson takes it (the long integer as a float)

    def nested(depth: int) -> Any:
        return decode(payload) if depth == 0 else nested(depth - 1)

    limit = sys.getrecursionlimit()
    msg = nested(stack)
    assert sys.getrecursionlimit() == limit
    for _ in range(levels - 1):
        msg = msg["a"] if isinstance(msg, dict) else msg[0]
    assert msg == [2**64] and type(msg[0]) is int


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"1234567890123456789", True),
        (b'{"a":123456789012345678}', False),
        (b'{"a":"x1234567890123456789y"}', True),
        ("1234567890123456789", True),
        ("é123456789012345678", False),
    ],
)
def test_long_digits(payload: bytes | str, expected: bool) -> None:
    assert long_digits(payload) is expected


def test_group_keys_keep_integers_beyond_64_bits() -> None:
    # One canonical form: a double that holds the integer exactly is the double.
    assert encode_key((2**70,)) == encode_key((float(2**70),)) == b"[1.1805916207174113e+21]"
    key = encode_key(("a", 2**70 + 1))
    assert key == b'["a",1180591620717411303425] '
    assert decode_key(key) == ["a", 2**70 + 1]
    assert decode_key(encode_key(("a", 1))) == ["a", 1]


def test_a_group_key_holds_only_its_own_bytes() -> None:
    """A key lives in the streaming operator's state as long as its windows: it must not
    keep the 4 KiB buffer orjson wrote it into (a million keys would hold 4 GiB)."""
    tracemalloc.start()
    try:
        keys = [encode_key((f"org{i}", i)) for i in range(1_000)]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 1_000 * 200, f"{held / 1_000:.0f} bytes per key"
    assert keys[7] == b'["org7",7]' and decode_key(keys[7]) == ["org7", 7]


def _plan(window: dict[str, Any], **extra: Any) -> ViewPlan:
    view = {
        "name": "v",
        "event_time": {"field": "ts", "format": "iso8601"},
        "grouping_cols": ["k"],
        "window": window,
        "aggregation_info": [{"aggregation": "sum", "col_name": "x", "aggregated_col_name": "s"}],
        **extra,
    }
    return ViewPlan(parse_view(view, origin="v.json"))


@pytest.mark.parametrize(
    ("window", "inside", "outside", "detail"),
    [
        (
            {"size": "1d"},
            ["9999-12-30T23:59:59.999999Z", "0001-01-01T00:00:00Z"],
            ["9999-12-31T00:00:00Z", "9999-12-31T23:59:59Z"],
            "ends after 9999-12-31T23:59:59.999999Z; this view takes event times up to "
            "9999-12-30T23:59:59.999999Z",
        ),
        (
            {"size": ["1m", "1d"]},  # every size must fit
            ["9999-12-30T23:59:59Z"],
            ["9999-12-31T00:00:00Z"],
            "this view takes event times up to 9999-12-30T23:59:59.999999Z",
        ),
        (
            {"type": "sliding", "size": "1d", "period": "1h"},
            ["0001-01-01T23:00:00Z", "9999-12-30T23:59:59Z"],
            ["0001-01-01T22:59:59.999999Z", "0001-01-01T00:00:00Z"],
            "starts before 0001-01-01T00:00:00Z; this view takes event times from "
            "0001-01-01T23:00:00Z",
        ),
        (
            {"type": "session", "gap": "30m"},
            ["9999-12-31T23:29:59.999999Z", "0001-01-01T00:00:00Z"],
            ["9999-12-31T23:30:00Z"],
            "this view takes event times up to 9999-12-31T23:29:59.999999Z",
        ),
    ],
)
def test_windows_must_be_writable(
    window: dict[str, Any], inside: list[str], outside: list[str], detail: str
) -> None:
    plan = _plan(window)
    msgs = [{"k": "a", "ts": ts, "x": 1} for ts in [*inside, *outside]]
    for msg in msgs[: len(inside)]:
        assert plan.extract(msg) is not None
    for msg in msgs[len(inside) :]:
        with pytest.raises(Reject) as info:
            plan.extract(msg)
        assert info.value.reason == "event_time_out_of_range"
        assert detail in info.value.detail
    # The batch path refuses the same messages, for the same reason.
    times, _, _, rejects = plan.extract_batch(msgs, {})
    assert len(times) == len(inside)
    assert [(i, r.reason) for i, r in rejects] == [
        (i, "event_time_out_of_range") for i in range(len(inside), len(msgs))
    ]


def test_a_time_outside_years_1_to_9999_is_out_of_range() -> None:
    plan = _plan({"size": "1m"})
    with pytest.raises(Reject, match="out of range for iso8601") as info:
        plan.extract({"k": "a", "ts": "0001-01-01T00:00:00+01:00", "x": 1})
    assert info.value.reason == "event_time_out_of_range"


def test_overflowed_results_are_null_with_a_dead_letter() -> None:
    plan = _plan(
        {"size": "1m"},
        aggregation_info=[
            {"aggregation": "sum", "col_name": "x", "aggregated_col_name": "s"},
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "approx_quantiles", "col_name": "x", "aggregated_col_name": "q"},
        ],
        derived=[{"name": "per", "expr": "s / n"}],
    )
    [(variant, key)] = plan.keys(("a",))
    letters: list[dict[str, Any]] = []
    row = plan.row(
        variant, 0, 60_000_000, key, (math.inf, 2, [1.0, math.nan]), "LATE", 3, letters=letters
    )
    assert row == {
        "view": "v",
        "window_start": "1970-01-01T00:00:00Z",
        "window_end": "1970-01-01T00:01:00Z",
        "k": "a",
        "s": None,
        "n": 2,
        "q": None,
        "per": None,
        "pane_timing": "LATE",
        "pane_index": 3,
    }
    assert [(d["reason"], d["view"], d["source"]) for d in letters] == [("overflow", "v", None)] * 2
    assert "column 's' (sum) is beyond the range of a double" in letters[0]["detail"]
    assert "column 'q' (approx_quantiles)" in letters[1]["detail"]
    assert orjson.loads(letters[0]["payload"]) == {
        "view": "v",
        "window_start": "1970-01-01T00:00:00Z",
        "window_end": "1970-01-01T00:01:00Z",
        "k": "a",
        "pane_timing": "LATE",
        "pane_index": 3,
    }
    finite = plan.row(
        variant, 0, 60_000_000, key, (1.5, 2, [1.0, 2.0]), "ON_TIME", 0, letters=letters
    )
    assert finite["s"] == 1.5 and finite["per"] == 0.75 and len(letters) == 2


class DeclaredFn(RangeFn):
    """A custom aggregation that declares ``declared`` and gives whatever the test hands
    ``row`` (the plan never calls the CombineFn's other methods here)."""

    def __init__(self, declared: str = "double") -> None:
        super().__init__()
        self.declared = declared

    def output_type(self) -> str:
        return self.declared


@pytest.mark.parametrize(
    ("declared", "good", "bad"),
    [
        ("double", 1, "1.5"),
        ("double", 2.5, True),
        ("bigint", 3, 2.0),
        ("bigint", -(2**63), 2**63),
        ("text", "a", 1),
        ("boolean", False, 0),
        ("list<double>", [1, 2.5, None], [1, "2"]),
        ("list<bigint>", [1, 2], 5),
        ("list<text>", ("a", "b"), ["a", {"b": 1}]),
    ],
)
def test_a_custom_result_of_another_type_is_null_with_a_dead_letter(
    declared: str, good: Any, bad: Any
) -> None:
    """A sink could not write it (Parquet's conversion failed the run with a traceback);
    the row is kept with null there, as for an overflow."""
    custom = {"combine_fn": "tests.transforms.test_messages:DeclaredFn", "declared": declared}
    plan = _plan(
        {"size": "1m"},
        aggregation_info=[
            {
                "aggregation": "custom",
                "col_name": "x",
                "aggregated_col_name": "c",
                "params": custom,
            },
            {"aggregation": "count", "aggregated_col_name": "n"},
        ],
    )
    [(variant, key)] = plan.keys(("a",))
    letters: list[dict[str, Any]] = []
    assert (
        plan.row(variant, 0, 60_000_000, key, (good, 1), "ON_TIME", 0, letters=letters)["c"] == good
    )
    assert (
        plan.row(variant, 0, 60_000_000, key, (None, 1), "ON_TIME", 0, letters=letters)["c"] is None
    )
    assert letters == []
    row = plan.row(variant, 0, 60_000_000, key, (bad, 1), "ON_TIME", 0, letters=letters)
    assert row["c"] is None and row["n"] == 1
    [letter] = letters
    assert letter["reason"] == "wrong_type" and letter["source"] is None
    assert letter["detail"].startswith(f"column 'c' (custom) declares {declared} but gave ")


def test_route_accounts_for_every_line() -> None:
    plan = _plan({"size": "1m"}, filter={"field": "kind", "op": "eq", "value": "a"})
    lines = [
        b"",  # blank
        b"  ",  # blank
        b"{",  # not_json
        b"null",  # not_an_object
        b'{"kind": "b"}',  # filtered, before anything else is read
        b'{"kind": "a", "ts": "soon", "k": 1, "x": 1}',  # invalid_event_time
        b'{"kind": "a", "ts": "2020-01-01T00:00:00Z", "k": 1, "x": 1}',  # used
        (b'{"kind": "a", "ts": "2020-01-01T00:00:00Z", "k": 1, "x": 1}', {"offset": 7}),
    ]
    tally = Tally("events")
    out = [item for line in lines for item in route([plan], line, tally)]
    letters = [d for d in out if isinstance(d, dict)]
    assert [(d["view"], d["reason"]) for d in letters] == [
        (None, "not_json"),
        (None, "not_an_object"),
        ("v", "invalid_event_time"),
    ]
    assert len(out) - len(letters) == 2
    assert dict(tally.counts) == {
        "lines_read": 8,
        "blank_lines": 2,
        "messages": 4,
        "filtered/v": 1,
    }


@pytest.mark.parametrize(
    ("total", "kept"),
    [
        (2**1023, True),
        (-(2**1023), True),
        (int(sys.float_info.max) + 1, True),  # rounds down to the largest double
        (2**1024, False),
        (-(2**1024) - 1, False),
        (10**400, False),
    ],
)
def test_an_int_sum_beyond_the_range_of_a_double_is_an_overflow(total: int, kept: bool) -> None:
    """Its column is a double: Parquet and Cassandra could not store it (Parquet's encoder
    failed the run), so it is null with an ``overflow`` dead letter, as a float sum is."""
    plan = _plan({"size": "1m"})
    [(variant, key)] = plan.keys(("a",))
    letters: list[dict[str, Any]] = []
    row = plan.row(variant, 0, 60_000_000, key, (total,), "ON_TIME", 0, letters=letters)
    if kept:
        assert row["s"] == total and type(row["s"]) is int and letters == []
    else:
        assert row["s"] is None
        assert [letter["reason"] for letter in letters] == ["overflow"]
