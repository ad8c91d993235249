"""The test oracle, the comparator and the data generator, on inputs small enough to check by hand.

Every expected value below is worked out from the messages written in the same test.
"""

from __future__ import annotations

import base64
import itertools
import math
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from datasketches import hll_sketch, tgt_hll_type

from liveagg.spec import (
    Aggregation,
    AllOf,
    AnyOf,
    Derived,
    Duration,
    EventTime,
    Predicate,
    ViewSpec,
    Window,
)
from liveagg.transforms.eventtime import parser
from tests.support.compare import assert_rows_match
from tests.support.datagen import (
    BAD_KINDS,
    DOMAINS,
    DOTTED_VARIANTS,
    ISO_VARIANTS,
    NUMERIC_FIELDS,
    generate,
)
from tests.support.eventtime_cases import ISO_CASES, Instant
from tests.support.eventtime_cases import micros as case_micros
from tests.support.field_cases import FIELD_CASES
from tests.support.oracle import (
    Oracle,
    expected_rows,
    format_instant,
    parse_arith,
    parse_instant,
    public_rows,
)

# ---------------------------------------------------------------------------------------------
# Helpers


def agg(kind: str, out: str, col: str | None = None, **params: Any) -> Aggregation:
    return Aggregation(kind, out, col, MappingProxyType(params))


def fixed(*sizes: str) -> Window:
    return Window(
        "fixed", tuple(Duration.parse(s) for s in sizes), multi_granularity=len(sizes) > 1
    )


def view(
    aggs: tuple[Aggregation, ...] | list[Aggregation],
    *,
    name: str = "v",
    group: tuple[str, ...] = (),
    window: Window | None = None,
    event_time: EventTime | None = None,
    **kw: Any,
) -> ViewSpec:
    return ViewSpec(
        name=name,
        event_time=event_time or EventTime("ts"),
        grouping_cols=group,
        window=window or fixed("1m"),
        aggregations=tuple(aggs),
        **kw,
    )


def write(tmp_path: Path, lines: list[Any], name: str = "in.jsonl") -> Path:
    """Dicts become JSON objects; strings are written as they are (bad lines)."""
    path = tmp_path / name
    text = [x if isinstance(x, str) else orjson.dumps(x).decode() for x in lines]
    path.write_text("\n".join(text) + "\n")
    return path


def rows_of(v: ViewSpec, path: Path) -> list[dict[str, Any]]:
    return public_rows(expected_rows(v, path))


def T(hms: str) -> str:
    return f"2024-03-01T{hms}Z"


def by(rows: list[dict[str, Any]], *cols: str) -> dict[Any, dict[str, Any]]:
    return {tuple(r[c] for c in cols) if len(cols) > 1 else r[cols[0]]: r for r in rows}


# ---------------------------------------------------------------------------------------------
# Basic counting, bad lines and bad values

BASIC = [
    {"ts": T("10:00:05"), "host": "a", "bytes": 100},
    {"ts": T("10:00:50"), "host": "a", "bytes": 50},
    {"ts": T("10:00:30"), "host": "b", "bytes": 7},
    {"ts": T("10:01:00"), "host": "a", "bytes": 1},  # starts the next window
    {"ts": T("10:00:59.999"), "host": "a", "bytes": None},  # a row, no value
    {"ts": T("10:00:10"), "host": "a"},  # a row, no value
    "not json at all",
    '{"ts": "2024-03-01T10:00:10Z", "host": "a", "bytes": 5',
    "[1, 2, 3]",
    '"a string"',
    "",
    {"host": "a", "bytes": 1000},  # no event time
    {"ts": "yesterday", "host": "a", "bytes": 1000},
    {"ts": T("10:00:10"), "host": "a", "bytes": "lots"},  # unusable under sum only
    {"ts": T("10:00:10"), "host": "a", "bytes": True},  # unusable under sum only
]


def test_counts_sums_and_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path, BASIC)
    v = view(
        [
            agg("count", "n"),
            agg("count", "n_bytes", "bytes"),
            agg("sum", "bytes", "bytes"),
            agg("min", "min_b", "bytes"),
            agg("max", "max_b", "bytes"),
            agg("mean", "mean_b", "bytes"),
        ],
        name="traffic",
        group=("host",),
    )
    rows = rows_of(v, path)
    assert rows == [
        {
            "view": "traffic",
            "window_start": T("10:00:00"),
            "window_end": T("10:01:00"),
            "host": "a",
            "n": 4,
            "n_bytes": 2,
            "bytes": 150,
            "min_b": 50,
            "max_b": 100,
            "mean_b": 75.0,
            "pane_timing": "ON_TIME",
            "pane_index": 0,
        },
        {
            "view": "traffic",
            "window_start": T("10:00:00"),
            "window_end": T("10:01:00"),
            "host": "b",
            "n": 1,
            "n_bytes": 1,
            "bytes": 7,
            "min_b": 7,
            "max_b": 7,
            "mean_b": 7.0,
            "pane_timing": "ON_TIME",
            "pane_index": 0,
        },
        {
            "view": "traffic",
            "window_start": T("10:01:00"),
            "window_end": T("10:02:00"),
            "host": "a",
            "n": 1,
            "n_bytes": 1,
            "bytes": 1,
            "min_b": 1,
            "max_b": 1,
            "mean_b": 1.0,
            "pane_timing": "ON_TIME",
            "pane_index": 0,
        },
    ]
    assert type(rows[0]["bytes"]) is int


def test_unusable_value_only_spoils_views_that_need_a_number(tmp_path: Path) -> None:
    path = write(tmp_path, BASIC)
    # count(bytes) accepts any non-null value: "lots" and true now count.
    v = view([agg("count", "n"), agg("count", "n_bytes", "bytes")], group=("host",))
    a = by(rows_of(v, path), "window_start", "host")[(T("10:00:00"), "a")]
    assert (a["n"], a["n_bytes"]) == (6, 4)


def test_sum_type_and_nulls(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"ts": T("10:00:01"), "k": "ints", "x": 2},
            {"ts": T("10:00:02"), "k": "ints", "x": 3},
            {"ts": T("10:00:01"), "k": "mixed", "x": 2},
            {"ts": T("10:00:02"), "k": "mixed", "x": 0.5},
            {"ts": T("10:00:01"), "k": "floats", "x": 1.25},
            {"ts": T("10:00:01"), "k": "floats", "x": 1.0},
            {"ts": T("10:00:01"), "k": "nulls", "x": None},
            {"ts": T("10:00:02"), "k": "nulls"},
        ],
    )
    v = view(
        [agg("sum", "s", "x"), agg("min", "lo", "x"), agg("max", "hi", "x"), agg("mean", "m", "x")],
        group=("k",),
    )
    rows = by(rows_of(v, path), "k")
    assert (rows["ints"]["s"], type(rows["ints"]["s"])) == (5, int)
    assert (rows["mixed"]["s"], type(rows["mixed"]["s"])) == (2.5, float)
    assert (rows["mixed"]["lo"], rows["mixed"]["hi"]) == (0.5, 2)
    assert type(rows["mixed"]["hi"]) is int
    assert (rows["floats"]["s"], rows["floats"]["m"]) == (2.25, 1.125)
    assert type(rows["floats"]["lo"]) is int  # min(1.25, 1.0): the integral 1.0 is 1
    nulls = rows["nulls"]
    assert (nulls["s"], nulls["lo"], nulls["hi"], nulls["m"]) == (None, None, None, None)


def test_variance_and_stddev(tmp_path: Path) -> None:
    # 2 4 4 4 5 5 7 9: mean 5, squared deviations sum to 32.
    values = [2, 4, 4, 4, 5, 5, 7, 9]
    lines: list[Any] = [{"ts": T("10:00:01"), "k": "many", "x": x} for x in values]
    lines.append({"ts": T("10:00:01"), "k": "one", "x": 3.5})
    v = view(
        [
            agg("variance", "var", "x"),
            agg("stddev", "sd", "x"),
            agg("variance", "var_pop", "x", ddof=0),
            agg("stddev", "sd_pop", "x", ddof=0),
        ],
        group=("k",),
    )
    rows = by(rows_of(v, write(tmp_path, lines)), "k")
    many, one = rows["many"], rows["one"]
    assert many["var"] == pytest.approx(32 / 7, rel=1e-12)
    assert many["sd"] == pytest.approx(math.sqrt(32 / 7), rel=1e-12)
    assert (many["var_pop"], many["sd_pop"]) == (pytest.approx(4.0), pytest.approx(2.0))
    assert (one["var"], one["sd"]) == (None, None)  # n <= ddof
    assert (one["var_pop"], one["sd_pop"]) == (0.0, 0.0)


SKETCHY = [
    # t, user, event, country, status, latency, q
    ("10:00:10", "u1", "view", "US", 200, 5, 1),
    ("10:00:05", "u2", "view", "DE", 404, 10, 2),
    ("10:00:50", "u1", "like", "US", 500, 50, 3),
    ("10:00:05", "u3", "view", "BR", 503, 100, 4),
    ("10:00:20", "u2", "share", None, None, 150, 5),
    ("10:00:01", "u4", "like", "DE", None, None, 6),
]


def _sketchy_lines() -> list[Any]:
    keys = ("user", "event", "country", "status", "latency", "q")
    lines: list[Any] = []
    for t, *values in SKETCHY:
        msg = {"ts": T(t), **{k: v for k, v in zip(keys, values, strict=True) if v is not None}}
        lines.append(msg)
    lines += [{"ts": T("10:00:30"), "q": q} for q in (7, 8, 9, 10)]
    return lines


def test_sketch_and_collection_aggregations(tmp_path: Path) -> None:
    path = write(tmp_path, _sketchy_lines())
    v = view(
        [
            agg("count_distinct", "users", "user"),
            agg("count_distinct_exact", "users_exact", "user"),
            agg("hll_sketch", "users_hll", "user"),
            agg("top_k", "top_events", "event", k=2),
            agg("collect_set", "countries", "country", max_size=2),
            agg("collect_set", "all_countries", "country"),
            agg("first", "first_status", "status"),
            agg("last", "last_status", "status"),
            agg("histogram", "latency_hist", "latency", bounds=[10, 100]),
            agg("approx_quantiles", "q", "q", quantiles=[0, 0.5, 0.9, 1]),
        ]
    )
    [full] = expected_rows(v, path)
    row = public_rows([full])[0]
    assert row["users"] == row["users_exact"] == row["users_hll"] == 4
    # view 3, like 2, share 1
    assert row["top_events"] == [["view", 3], ["like", 2]]
    assert sorted(full["__counts__top_events"]) == [["like", 2], ["share", 1], ["view", 3]]
    assert row["countries"] == ["BR", "DE"]
    assert row["all_countries"] == ["BR", "DE", "US"]
    # status at 10:00:05 is 404 (line 2) and 503 (line 4); the earlier null status is skipped.
    assert row["first_status"] == 404
    assert sorted(full["__ties__first_status"]) == [404, 503]
    assert row["last_status"] == 500
    # latencies 5 | 10 50 | 100 150  over (-inf,10) [10,100) [100,inf)
    assert row["latency_hist"] == [1, 2, 2]
    # q = 1..10: sorted[max(ceil(q*n)-1, 0)]
    assert row["q"] == [1.0, 5.0, 9.0, 10.0]
    assert full["__values__q"] == [float(x) for x in range(1, 11)]


def test_all_null_group(tmp_path: Path) -> None:
    path = write(tmp_path, [{"ts": T("10:00:01"), "x": None}, {"ts": T("10:00:02")}])
    kinds = [
        "sum", "min", "max", "mean", "variance", "stddev", "count_distinct",
        "count_distinct_exact", "hll_sketch", "top_k", "collect_set", "first", "last",
    ]  # fmt: skip
    v = view(
        [agg("count", "n"), agg("count", "nx", "x")]
        + [agg(k, k, "x") for k in kinds]
        + [
            agg("approx_quantiles", "approx_quantiles", "x"),
            agg("histogram", "histogram", "x", bounds=[0, 1]),
        ]
    )
    [row] = rows_of(v, path)
    assert (row["n"], row["nx"]) == (2, 0)
    assert (row["count_distinct"], row["count_distinct_exact"]) == (0, 0)
    assert row["histogram"] == [0, 0, 0]
    nulls = set(kinds) - {"count_distinct", "count_distinct_exact"} | {"approx_quantiles"}
    assert {k: row[k] for k in nulls} == dict.fromkeys(nulls)


def test_numbers_are_equal_by_value_and_types_stay_apart(tmp_path: Path) -> None:
    values = ["1", 1, "1", 2.5, False, True, "a", 1.0]
    lines = [{"ts": T("10:00:01"), "x": x} for x in values]
    lines.append('{"ts": "2024-03-01T10:00:01Z", "x": 1.00}')
    lines.append('{"ts": "2024-03-01T10:00:01Z", "x": 1e20}')  # beyond 2**64: stays a float
    lines.append('{"ts": "2024-03-01T10:00:01Z", "x": 1e18}')  # integral: the int 10**18
    path = write(tmp_path, lines)
    distinct = view(
        [
            agg("count_distinct_exact", "d", "x"),
            agg("collect_set", "s", "x"),
            agg("top_k", "top", "x", k=3),
            agg("last", "last", "x"),
        ]
    )
    [row] = rows_of(distinct, path)
    # 1 (three times as 1, 1.0, 1.00), 2.5, 10**18, 1e20, "1" (twice), "a", false, true
    assert row["d"] == 8
    assert row["s"] == [1, 2.5, 10**18, 1e20, "1", "a", False, True]
    assert [type(x) for x in row["s"]] == [int, float, int, float, str, str, bool, bool]
    assert row["top"] == [[1, 3], ["1", 2], [2.5, 1]]  # ties: numbers, strings, booleans
    assert (row["last"], type(row["last"])) == (10**18, int)  # all tie; the last line's value
    grouped = rows_of(view([agg("count", "n")], group=("x",)), path)
    assert [(r["x"], r["n"]) for r in grouped] == [
        (1, 3), (2.5, 1), (10**18, 1), (1e20, 1), ("1", 2), ("a", 1), (False, 1), (True, 1),
    ]  # fmt: skip
    assert type(grouped[0]["x"]) is int


def test_objects_are_unusable_for_scalar_aggregations_and_grouping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"ts": T("10:00:01"), "g": "a", "x": "p"},
            {"ts": T("10:00:02"), "g": "a", "x": {"nested": 1}},
            {"ts": T("10:00:03"), "g": ["a"], "x": "q"},
        ],
    )
    # The object under count_distinct spoils line 2; the array key spoils line 3.
    [row] = rows_of(view([agg("count", "n"), agg("count_distinct", "d", "x")], group=("g",)), path)
    assert (row["g"], row["n"], row["d"]) == ("a", 1, 1)
    # count(x) accepts any non-null value; without grouping the array key does not matter.
    [row] = rows_of(view([agg("count", "n"), agg("count", "nx", "x")]), path)
    assert (row["n"], row["nx"]) == (3, 3)


# ---------------------------------------------------------------------------------------------
# Windows


def test_sliding_windows(tmp_path: Path) -> None:
    path = write(tmp_path, [{"ts": T("10:07:00")}, {"ts": T("10:03:00")}])
    v = view(
        [agg("count", "n")],
        window=Window("sliding", (Duration.parse("10m"),), Duration.parse("5m")),
    )
    assert [(r["window_start"], r["window_end"], r["n"]) for r in rows_of(v, path)] == [
        (T("09:55:00"), T("10:05:00"), 1),
        (T("10:00:00"), T("10:10:00"), 2),
        (T("10:05:00"), T("10:15:00"), 1),
    ]


def test_sliding_windows_size_not_a_multiple_of_period(tmp_path: Path) -> None:
    # 2024-03-01T00:00Z is minute 28487520 since the epoch, a multiple of 3, so starts fall on
    # 10:00, 10:03, 10:06; 10:07 is in [10:03, 10:08) and [10:06, 10:11) but not [10:00, 10:05).
    path = write(tmp_path, [{"ts": T("10:07:00")}])
    v = view(
        [agg("count", "n")], window=Window("sliding", (Duration.parse("5m"),), Duration.parse("3m"))
    )
    assert [(r["window_start"], r["window_end"]) for r in rows_of(v, path)] == [
        (T("10:03:00"), T("10:08:00")),
        (T("10:06:00"), T("10:11:00")),
    ]


def test_session_windows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"ts": T("10:15:00"), "user": "u1", "x": 3},  # gap to 10:05 is exactly 10m: new session
            {"ts": T("10:00:00"), "user": "u1", "x": 1},
            {"ts": T("10:02:00"), "user": "u2", "x": 10},
            {"ts": T("10:20:00"), "user": "u1", "x": 4},
            {"ts": T("10:05:00"), "user": "u1", "x": 2},
            {"ts": T("10:00:00.250"), "user": "u3", "x": 5},
        ],
    )
    v = view(
        [agg("count", "n"), agg("sum", "s", "x")],
        group=("user",),
        window=Window("session", gap=Duration.parse("10m")),
    )
    assert [
        (r["user"], r["window_start"], r["window_end"], r["n"], r["s"]) for r in rows_of(v, path)
    ] == [
        ("u1", T("10:00:00"), T("10:15:00"), 2, 3),
        ("u3", T("10:00:00.250"), T("10:10:00.250"), 1, 5),
        ("u2", T("10:02:00"), T("10:12:00"), 1, 10),
        ("u1", T("10:15:00"), T("10:30:00"), 2, 7),
    ]


def test_granularities(tmp_path: Path) -> None:
    path = write(tmp_path, [{"ts": T("10:00:30")}, {"ts": T("10:01:30")}, {"ts": T("11:00:00")}])
    v = view([agg("count", "n")], window=fixed("1m", "1h"))
    got = [(r["granularity"], r["window_start"], r["window_end"], r["n"]) for r in rows_of(v, path)]
    assert sorted(got) == sorted(
        [
            ("1m", T("10:00:00"), T("10:01:00"), 1),
            ("1m", T("10:01:00"), T("10:02:00"), 1),
            ("1m", T("11:00:00"), T("11:01:00"), 1),
            ("1h", T("10:00:00"), T("11:00:00"), 2),
            ("1h", T("11:00:00"), T("12:00:00"), 1),
        ]
    )


def test_day_windows_are_utc_days(tmp_path: Path) -> None:
    path = write(tmp_path, [{"ts": "2024-03-01T23:30:00-02:00"}])  # 2024-03-02T01:30Z
    [row] = rows_of(view([agg("count", "n")], window=fixed("1d")), path)
    assert (row["window_start"], row["window_end"]) == (
        "2024-03-02T00:00:00Z",
        "2024-03-03T00:00:00Z",
    )


def test_grouping_sets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"ts": T("10:00:01"), "org": "acme", "site": "fra1", "b": 1},
            {"ts": T("10:00:02"), "org": "acme", "site": "ams2", "b": 2},
            {"ts": T("10:00:03"), "org": "acme", "site": "fra1", "b": 3},
            {"ts": T("10:00:04"), "org": "globex", "site": "fra1", "b": 4},
            {"ts": T("10:00:05"), "site": "fra1", "b": 5},  # org missing: a null group
        ],
    )
    v = view(
        [agg("sum", "b", "b")],
        group=("org", "site"),
        grouping_sets=(("org", "site"), ("org",), ()),
    )
    got = [(r["grouping_set"], r["org"], r["site"], r["b"]) for r in rows_of(v, path)]
    assert sorted(got, key=repr) == sorted(
        [
            (0, "acme", "fra1", 4),
            (0, "acme", "ams2", 2),
            (0, "globex", "fra1", 4),
            (0, None, "fra1", 5),
            (1, "acme", None, 6),
            (1, "globex", None, 4),
            (1, None, None, 5),
            (2, None, None, 15),
        ],
        key=repr,
    )


def test_sessions_per_grouping_set(tmp_path: Path) -> None:
    # Per user the two messages are 8m apart (two sessions with a 5m gap); over all users
    # they chain at 4m steps into one session.
    path = write(
        tmp_path,
        [
            {"ts": T("10:00:00"), "user": "a"},
            {"ts": T("10:04:00"), "user": "b"},
            {"ts": T("10:08:00"), "user": "a"},
            {"ts": T("10:12:00"), "user": "b"},
        ],
    )
    v = view(
        [agg("count", "n")],
        group=("user",),
        grouping_sets=(("user",), ()),
        window=Window("session", gap=Duration.parse("5m")),
    )
    got = [
        (r["grouping_set"], r["user"], r["window_start"], r["window_end"], r["n"])
        for r in rows_of(v, path)
    ]
    assert sorted(got, key=repr) == sorted(
        [
            (0, "a", T("10:00:00"), T("10:05:00"), 1),
            (0, "a", T("10:08:00"), T("10:13:00"), 1),
            (0, "b", T("10:04:00"), T("10:09:00"), 1),
            (0, "b", T("10:12:00"), T("10:17:00"), 1),
            (1, None, T("10:00:00"), T("10:17:00"), 4),
        ],
        key=repr,
    )


# ---------------------------------------------------------------------------------------------
# Event time

# (message event time, format, expected instant or None when invalid); ISO 8601 strings are
# the shared table ISO_CASES, below.
EVENT_TIMES: list[tuple[Any, str | None, str | None]] = [
    ("2024-03-01T10:00:00Z", "iso8601", "2024-03-01T10:00:00Z"),
    (1709287200, None, "2024-03-01T10:00:00Z"),  # numbers default to epoch seconds
    (1709287200.25, "epoch_s", "2024-03-01T10:00:00.250Z"),
    (1709287200123, "epoch_ms", "2024-03-01T10:00:00.123Z"),
    (1709287200123.5, "epoch_ms", "2024-03-01T10:00:00.123500Z"),
    (1709287200123456, "epoch_us", "2024-03-01T10:00:00.123456Z"),
    (-1, "epoch_ms", "1969-12-31T23:59:59.999Z"),
    ("1709287200123", "epoch_ms", None),  # numeric strings are not epoch numbers
    ("2024-03-01T10:00:00Z", "epoch_s", None),
    (1709287200, "iso8601", None),
    (True, None, None),
    (None, None, None),
    ({"s": 1}, None, None),
    (["2024-03-01T10:00:00Z"], None, None),
    (1e300, "epoch_s", None),  # beyond year 9999
]


@pytest.mark.parametrize(("value", "fmt", "instant"), EVENT_TIMES)
def test_event_time(tmp_path: Path, value: Any, fmt: str | None, instant: str | None) -> None:
    path = write(tmp_path, [{"id": 1, "t": value}])
    # A session window starts exactly at the event time, to the microsecond.
    v = view(
        [agg("count", "n")],
        event_time=EventTime("t", fmt),  # type: ignore[arg-type]
        window=Window("session", gap=Duration.parse("1s")),
    )
    rows = rows_of(v, path)
    assert [r["window_start"] for r in rows] == ([instant] if instant else [])


@pytest.fixture(scope="module")
def iso_instants(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """Each ISO_CASES line's event time as the oracle reads it, by case index: the start of
    its session window (one key per line)."""
    lines = [{"id": i, "t": text} for i, (text, _, _) in enumerate(ISO_CASES)]
    path = write(tmp_path_factory.mktemp("iso"), lines)
    v = view(
        [agg("count", "n")],
        group=("id",),
        event_time=EventTime("t", "iso8601"),
        window=Window("session", gap=Duration.parse("1s")),
    )
    return {r["id"]: r["window_start"] for r in rows_of(v, path)}


@pytest.mark.parametrize(
    ("index", "text", "instant", "rule"),
    [(i, *case) for i, case in enumerate(ISO_CASES)],
    ids=[f"{r}: {t!r}" for t, _, r in ISO_CASES],
)
def test_iso_grammar(
    iso_instants: dict[int, str], index: int, text: str, instant: Instant | None, rule: str
) -> None:
    expected = None if instant is None else format_instant(case_micros(instant))
    assert iso_instants.get(index) == expected, rule


@pytest.fixture(scope="module")
def field_oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    lines = [{"id": i, "ts": T("10:00:00"), **msg} for i, (msg, *_) in enumerate(FIELD_CASES)]
    oracle = Oracle(write(tmp_path_factory.mktemp("fields"), lines))
    yield oracle
    oracle.close()


@pytest.mark.parametrize(
    ("index", "field", "value", "rule"),
    [(i, name, value, rule) for i, (_, name, value, rule) in enumerate(FIELD_CASES)],
    ids=[rule for *_, rule in FIELD_CASES],
)
def test_field_names(field_oracle: Oracle, index: int, field: str, value: Any, rule: str) -> None:
    aggs = [agg("count", "n", field)]
    if not isinstance(value, dict):  # first() takes scalars only
        aggs.append(agg("first", "v", field))
    rows = {r["id"]: r for r in public_rows(field_oracle.rows(view(aggs, group=("id",))))}
    assert rows[index]["n"] == (value is not None), rule
    assert rows[index].get("v", value) == value, rule


def test_missing_event_time_field(tmp_path: Path) -> None:
    path = write(tmp_path, [{"other": T("10:00:00")}])
    assert rows_of(view([agg("count", "n")]), path) == []


# ---------------------------------------------------------------------------------------------
# Filters

STATUSES: list[Any] = [200, 404, "200", 500.0, "<missing>", None, True]

FILTERS: list[tuple[Any, int]] = [
    (Predicate("status", "eq", 200), 1),
    (Predicate("status", "eq", 500), 1),  # 500 == 500.0
    (Predicate("status", "eq", "200"), 1),
    (Predicate("status", "eq", True), 1),
    (Predicate("status", "eq", None), 0),
    (Predicate("status", "ne", 200), 4),  # 404, "200", 500.0, true; not missing or null
    (Predicate("status", "in", [200, 404]), 2),
    (Predicate("status", "not_in", [200, 404]), 3),  # "200", 500.0, true
    (Predicate("status", "exists"), 5),
    (Predicate("status", "exists", False), 2),
    (Predicate("status", "gt", 250), 2),
    (Predicate("status", "ge", 404), 2),
    (Predicate("status", "lt", 404), 1),
    (Predicate("status", "le", 404), 2),
    (Predicate("status", "gt", "1"), 1),  # strings compare with strings only
    (Predicate("status", "gt", False), 0),
    (AllOf((Predicate("status", "ge", 200), Predicate("status", "lt", 500))), 2),
    (AnyOf((Predicate("status", "eq", "200"), Predicate("status", "eq", True))), 2),
    (AllOf(()), 7),
    (AnyOf(()), 0),
    (Predicate("other", "ne", 1), 0),
]


@pytest.mark.parametrize(("flt", "count"), FILTERS, ids=[repr(f) for f, _ in FILTERS])
def test_filters(tmp_path: Path, flt: Any, count: int) -> None:
    lines = [
        {"ts": T("10:00:01")} if s == "<missing>" else {"ts": T("10:00:01"), "status": s}
        for s in STATUSES
    ]
    rows = rows_of(view([agg("count", "n")], filter=flt), write(tmp_path, lines))
    assert [r["n"] for r in rows] == ([count] if count else [])


def test_filter_rejection_is_not_a_dead_letter_for_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"ts": T("10:00:01"), "kind": "cdn", "bytes": 5},
            {"ts": T("10:00:01"), "kind": "other", "bytes": "lots"},
        ],
    )
    v = view([agg("sum", "b", "bytes")], filter=Predicate("kind", "eq", "cdn"))
    assert [r["b"] for r in rows_of(v, path)] == [5]


# ---------------------------------------------------------------------------------------------
# Derived columns


def test_derived_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"ts": T("10:00:01"), "c": "x", "click": 1, "cost": 2.5},
            {"ts": T("10:00:02"), "c": "x", "cost": 1.5},
            {"ts": T("10:00:03"), "c": "x"},
            {"ts": T("10:00:04"), "c": "x", "click": 1},
            {"ts": T("10:00:05"), "c": "y"},
        ],
    )
    v = view(
        [agg("count", "impressions"), agg("count", "clicks", "click"), agg("sum", "cost", "cost")],
        group=("c",),
        derived=(
            Derived("ctr", "clicks / impressions"),
            Derived("weird", "-(clicks + 1) * 2 - impressions / 8"),
            Derived("per_click", "cost / clicks"),
            Derived("zero", "clicks / (impressions - impressions)"),
            Derived("pct", "ctr * 100"),
            Derived("literal", "1.5e1 / 3"),
        ),
    )
    rows = by(rows_of(v, path), "c")
    x, y = rows["x"], rows["y"]
    # x: 4 impressions, 2 clicks, cost 4.0
    assert (x["ctr"], x["weird"], x["per_click"], x["zero"], x["pct"], x["literal"]) == (
        0.5,
        -6.5,
        2.0,
        None,
        50.0,
        5.0,
    )
    # y: 1 impression, 0 clicks, cost null
    assert (y["ctr"], y["weird"], y["per_click"], y["zero"], y["pct"]) == (
        0.0,
        -2.125,
        None,
        None,
        0.0,
    )


def test_parse_arith_rejects_what_is_not_arithmetic() -> None:
    for text in ("a +", "(a", "a b", "a ** 2", "__import__('os')", "a; b"):
        with pytest.raises(ValueError):
            parse_arith(text)
    assert parse_arith(" a/ (b-2) ").evaluate({"a": 3, "b": 2}) is None
    assert parse_arith("a - -b").evaluate({"a": 3, "b": 2}) == 5.0


# ---------------------------------------------------------------------------------------------
# Formatting and reading


def test_format_instant() -> None:
    assert format_instant(0) == "1970-01-01T00:00:00Z"
    assert format_instant(250_000) == "1970-01-01T00:00:00.250Z"
    assert format_instant(250) == "1970-01-01T00:00:00.000250Z"
    assert format_instant(-1) == "1969-12-31T23:59:59.999999Z"
    for micros in (0, 250, -1, 1_709_287_200_123_456):
        assert parse_instant(format_instant(micros)) == micros


def test_several_files_and_crlf(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_bytes(b'{"ts": "2024-03-01T10:00:01Z"}\r\n{"ts": "2024-03-01T10:00:02Z"}\r\n')
    b.write_bytes(b'{"ts": "2024-03-01T10:00:03Z"}')
    assert [r["n"] for r in rows_of(view([agg("count", "n")]), [a, b])] == [3]  # type: ignore[arg-type]
    assert [r["n"] for r in rows_of(view([agg("count", "n")]), str(tmp_path / "*.jsonl"))] == [3]  # type: ignore[arg-type]


def test_custom_aggregation_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, [{"ts": T("10:00:01"), "x": 1}])
    v = view([agg("custom", "c", "x", combine_fn="pkg.mod:Fn")])
    with pytest.raises(NotImplementedError, match="custom"):
        expected_rows(v, path)


# ---------------------------------------------------------------------------------------------
# The comparator


def _compare_view() -> ViewSpec:
    return view(
        [
            agg("count", "n"),
            agg("sum", "s", "x"),
            agg("mean", "m", "x"),
            agg("count_distinct", "d", "u"),
            agg("hll_sketch", "h", "u"),
            agg("approx_quantiles", "q", "x", quantiles=[0.5]),
            agg("top_k", "top", "u", k=2),
            agg("first", "f", "x"),
        ],
        group=("g",),
        derived=(Derived("per_user", "n / d"),),
    )


def _compare_data(tmp_path: Path) -> tuple[ViewSpec, list[dict[str, Any]]]:
    # g=a: users u0 (x3), u1 (x2), u2 (x2), x = 0..6 at distinct times; g=b: one message.
    users = ["u0", "u0", "u0", "u1", "u1", "u2", "u2"]
    lines = [{"ts": T(f"10:00:{i:02d}"), "g": "a", "u": u, "x": i} for i, u in enumerate(users)]
    lines.append({"ts": T("10:00:30"), "g": "b", "u": "u9", "x": 1})
    v = _compare_view()
    return v, expected_rows(v, write(tmp_path, lines))


def _sketch(values: list[str], lg_k: int = 12) -> str:
    sketch = hll_sketch(lg_k, tgt_hll_type.HLL_8)
    for value in values:
        sketch.update(value)
    return base64.b64encode(sketch.serialize_compact()).decode()


def test_compare_accepts_the_oracle_itself_and_sketches(tmp_path: Path) -> None:
    v, expected = _compare_data(tmp_path)
    actual = public_rows(expected)
    a = next(r for r in actual if r["g"] == "a")
    assert (a["n"], a["s"], a["d"], a["top"], a["q"]) == (7, 21, 3, [["u0", 3], ["u1", 2]], [3.0])
    a["h"] = _sketch(["u0", "u1", "u2"])
    a["top"] = [["u0", 3], ["u2", 2]]  # u1 and u2 tie at 2
    a["q"] = [3.0000001]  # a float32 KLL value: still rank 4/7
    a["d"] = 5  # within max(3 * 1.04 / 64 * 3, 2) = 2 of 3
    a["per_user"] = 7 / 5  # derived from the run's own count_distinct
    b = next(r for r in actual if r["g"] == "b")
    b["h"] = _sketch(["u9"])
    assert_rows_match(list(reversed(actual)), expected, v)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("s", 21.0, r"s \(sum\).*expected an int"),
        ("n", 8, r"n \(count\).*differs by 1"),
        ("m", 3.0001, r"m \(mean\).*differs"),
        ("d", 6, r"d \(count_distinct\).*off by more than 2"),
        ("h", "not base64!", "cannot decode"),
        ("top", [["u0", 3], ["u1", 3]], "item 'u1': count 3, true count 2"),
        ("top", [["u0", 3]], "1 items, expected 2"),
        ("q", [6.0], r"quantile 0.5: 6.0 has rank"),
        ("f", 1, "f .first.*not among"),
        ("per_user", 1.0, "per_user .derived."),
    ],
)
def test_compare_reports_differences(tmp_path: Path, column: str, value: Any, message: str) -> None:
    v, expected = _compare_data(tmp_path)
    actual = public_rows(expected)
    for row in actual:
        row["h"] = _sketch(["u0", "u1", "u2"] if row["g"] == "a" else ["u9"])
    next(r for r in actual if r["g"] == "a")[column] = value
    with pytest.raises(AssertionError, match=message):
        assert_rows_match(actual, expected, v)


def test_compare_reports_missing_extra_and_duplicate_rows(tmp_path: Path) -> None:
    v, expected = _compare_data(tmp_path)
    actual = [r for r in public_rows(expected) if r["g"] != "b"]
    extra = dict(actual[0], g="c", window_start=T("10:05:00"))
    actual += [extra, dict(extra), dict(actual[0], pane_index=1, bogus=1)]
    with pytest.raises(AssertionError) as info:
        assert_rows_match(actual, expected, v)
    text = str(info.value)
    assert "1 missing, 1 extra, 2 duplicate, 1 differing rows" in text
    assert "'g': 'b'" in text
    assert "unexpected columns: ['bogus']" in text
    assert "pane_index: actual 1, expected 0" in text


def test_compare_window_bounds_are_matched_as_instants(tmp_path: Path) -> None:
    v, expected = _compare_data(tmp_path)
    actual = public_rows(expected)
    actual[0]["window_start"] = actual[0]["window_start"].replace("Z", ".000Z")
    with pytest.raises(AssertionError, match="0 missing, 0 extra") as info:
        assert_rows_match(actual, expected, v)
    assert "window_start: actual '2024-03-01T10:00:00.000Z'" in str(info.value)


# ---------------------------------------------------------------------------------------------
# The generator, and the oracle against a plain-Python count on generated data


def test_generator_is_deterministic_and_has_every_bad_kind(tmp_path: Path) -> None:
    a = generate(tmp_path / "a.jsonl", 3000, seed=3, bad_fraction=0.05)
    b = generate(tmp_path / "b.jsonl", 3000, seed=3, bad_fraction=0.05)
    c = generate(tmp_path / "c.jsonl", 3000, seed=4, bad_fraction=0.05)
    assert a.path.read_bytes() == b.path.read_bytes() != c.path.read_bytes()
    assert set(a.bad) == set(BAD_KINDS) and all(n > 0 for n in a.bad.values())
    assert sum(a.by_domain.values()) == 3000 and set(a.by_domain) == set(DOMAINS)
    lines = a.path.read_text().splitlines()
    assert len(lines) == 3000
    parsed = []
    for line in lines:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    objects = [m for m in parsed if isinstance(m, dict)]
    assert len(parsed) - len(objects) == a.bad["not_object"]
    assert len(lines) - len(parsed) == a.bad["not_json"]
    cdn = [m for m in objects if m.get("kind") == "cdn"]
    assert {"host", "path", "status", "country", "bytes", "latency_ms"} <= set().union(*cdn)
    ads = {m.get("event") for m in objects if m.get("kind") == "ads"}
    assert ads - {None} == {"impression", "click"}  # None: nulled or dropped
    assert any(isinstance(m.get(f), bool) for m in objects for f in NUMERIC_FIELDS["cdn"])
    numeric = {f for fields in NUMERIC_FIELDS.values() for f in fields}
    assert any(isinstance(m.get(f), str) for m in objects for f in numeric)
    assert any(m.get("bytes", 0) is None for m in objects)  # null values
    times = [m["timestamp_ms"] for m in objects if isinstance(m.get("timestamp_ms"), int)]
    assert any(x > y for x, y in itertools.pairwise(times))  # out of order
    assert set(a.iso_variants) == set(ISO_VARIANTS) and set(a.dotted) == set(DOTTED_VARIANTS)
    assert any(isinstance(m.get("edge.pop"), str) for m in objects)  # the literal key


def test_generated_event_times_are_one_instant_in_every_form(tmp_path: Path) -> None:
    """``ts`` and ``timestamp_ms`` of a good line are the same instant, whatever the form."""
    info = generate(tmp_path / "t.jsonl", 5000, seed=5, bad_fraction=0, iso_variant_fraction=0.5)
    parse = parser("ts", "iso8601")
    forms = set()
    for line in info.path.read_bytes().splitlines():
        m = orjson.loads(line)
        assert parse(m["ts"]) == m["timestamp_ms"] * 1000, m
        forms.add(len(m["ts"]))
    assert len(forms) > 5


def _python_counts(path: Path, size_ms: int) -> dict[tuple[int, str], tuple[int, int]]:
    """Count and byte sum per (10m window, host) for cdn messages, the plain way."""
    out: dict[tuple[int, str], tuple[int, int]] = {}
    for line in path.read_text().splitlines():
        try:
            m = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(m, dict) or m.get("kind") != "cdn":
            continue
        t = m.get("timestamp_ms")
        if not isinstance(t, int) or isinstance(t, bool):
            continue
        b = m.get("bytes")
        if b is not None and (isinstance(b, bool) or not isinstance(b, int | float)):
            continue
        host = m.get("host")
        key = (t - t % size_ms, host)
        n, s = out.get(key, (0, 0))
        out[key] = (n + 1, s + (b or 0))
    return out


def test_oracle_agrees_with_plain_python_on_generated_data(tmp_path: Path) -> None:
    info = generate(tmp_path / "g.jsonl", 6000, seed=11, bad_fraction=0.05, null_fraction=0.05)
    v = view(
        [agg("count", "n"), agg("sum", "b", "bytes")],
        group=("host",),
        window=fixed("10m"),
        event_time=EventTime("timestamp_ms", "epoch_ms"),
        filter=Predicate("kind", "eq", "cdn"),
    )
    oracle = Oracle(info.path)
    got = {
        (parse_instant(r["window_start"]) // 1000, r["host"]): (r["n"], r["b"] or 0)
        for r in public_rows(oracle.rows(v))
    }
    assert got == _python_counts(info.path, 600_000)
    # The ISO field gives the same instants as the epoch field.
    iso = view(list(v.aggregations), group=("host",), window=fixed("10m"), filter=v.filter)
    assert public_rows(oracle.rows(iso)) == public_rows(oracle.rows(v))


def test_generated_start_is_utc(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        generate(tmp_path / "x.jsonl", 10, seed=1, start=datetime(2024, 1, 1))  # noqa: DTZ001
    info = generate(tmp_path / "y.jsonl", 10, seed=1, start=datetime(2024, 1, 1, tzinfo=UTC))
    assert info.end == datetime(2024, 1, 1, 1, tzinfo=UTC)
