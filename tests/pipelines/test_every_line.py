"""No input line fails a run, and every line is accounted for: a hypothesis property.

Each example is a file of hostile lines (random bytes, mutated generated messages, numbers at
and beyond the double range, integers beyond 64 bits, deep nesting, byte order marks, invalid
UTF-8, event times at and beyond the edges of years 1 and 9999, sums that overflow) mixed
with ordinary messages, read by three views (fixed, sliding, session windows) on the bounded
path and on the streaming path (the window operator, as ``--streaming`` runs it), on the
DirectRunner. For every example:

* neither run raises;
* each line's fate follows from an independent reading of it with Python's ``json``
  (blank, ``not_json``, ``not_an_object`` or a message), and each dead letter names its
  file and line;
* the counters reconcile (``RunReport.reconcile``), and say what the lines say;
* the bounded rows and dead letters equal the streaming ones (final panes);
* the rows of keys that only ordinary messages touch equal the DuckDB oracle's, run on
  those ordinary lines alone.

Deterministic: ``derandomize`` fixes the examples; a few fixed lines in every example make
sure each hostile case is met.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from liveagg.loader import parse_view
from liveagg.pipelines.compile import build
from liveagg.pipelines.run import RunReport, _counters, _report
from liveagg.transforms.sources import FileSource
from tests.support.cli import liveagg, rows_in
from tests.support.compare import assert_rows_match
from tests.support.datagen import generate
from tests.support.oracle import expected_rows

pytestmark = pytest.mark.e2e

VIEWS = [
    parse_view(v, origin=f"{v['name']}.json")
    for v in [
        {
            "name": "day",
            "event_time": {"field": "ts"},
            "grouping_cols": ["k"],
            "window": {"size": "1d"},
            "aggregation_info": [
                {"aggregation": "count", "aggregated_col_name": "n"},
                {"aggregation": "sum", "col_name": "x", "aggregated_col_name": "s"},
                {"aggregation": "mean", "col_name": "x", "aggregated_col_name": "m"},
                {
                    "aggregation": "stddev",
                    "col_name": "x",
                    "aggregated_col_name": "sd",
                    "params": {"ddof": 0},
                },
                {"aggregation": "count_distinct", "col_name": "y", "aggregated_col_name": "d"},
                {
                    "aggregation": "top_k",
                    "col_name": "y",
                    "aggregated_col_name": "t",
                    "params": {"k": 3},
                },
            ],
        },
        {
            "name": "slide",
            "event_time": {"field": "ts"},
            "grouping_cols": ["k"],
            "window": {"type": "sliding", "size": "2h", "period": "1h"},
            "filter": {"field": "kind", "op": "eq", "value": "a"},
            "aggregation_info": [
                {"aggregation": "count", "aggregated_col_name": "n"},
                {"aggregation": "sum", "col_name": "x", "aggregated_col_name": "s"},
                {
                    "aggregation": "top_k",
                    "col_name": "y",
                    "aggregated_col_name": "t",
                    "params": {"k": 3},
                },
            ],
        },
        {
            "name": "sess",
            "event_time": {"field": "ms", "format": "epoch_ms"},
            "grouping_cols": ["k"],
            "window": {"type": "session", "gap": "30m"},
            "aggregation_info": [
                {"aggregation": "count", "aggregated_col_name": "n"},
                {"aggregation": "mean", "col_name": "x", "aggregated_col_name": "m"},
                {"aggregation": "count_distinct", "col_name": "y", "aggregated_col_name": "d"},
            ],
        },
    ]
]
NAMES = [v.name for v in VIEWS]
BOM = b"\xef\xbb\xbf"
PLAIN_KEYS = ("a", "b", "c", "d", "e", "f")

# -- lines ------------------------------------------------------------------------------------

START_S = 1_709_251_200  # 2024-03-01T00:00:00Z
PLAIN_TS = st.builds(
    lambda minute, style: _iso(START_S + 60 * minute, style),
    st.integers(0, 6 * 60),
    st.sampled_from(["Z", "+02:00", ".250Z", "-05:30"]),
) | st.integers(START_S, START_S + 6 * 3600)
EDGE_TS = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T22:59:59Z",
        "0001-01-01T23:00:00Z",
        "9999-12-30T23:59:59.999999Z",
        "9999-12-31T00:00:00Z",
        "9999-12-31T22:59:59Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59-01:00",
        253402300799,
        253402300800,
        -62135596800,
        -62135596801,
        1.7e308,
        -1.7e308,
        10**30,
        "soon",
        "2024-03-01",
        True,
        None,
        [1],
    ]
)
PLAIN_MS = st.integers(START_S * 1000, (START_S + 6 * 3600) * 1000)
EDGE_MS = st.sampled_from(
    [253402300799999, 253402298999999, 253402299000000, -62135596800000, 1e300, "17", None]
)
PLAIN_X = st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False).map(
    lambda f: round(f, 3)
)
HUGE = [1.7e308, -1.7e308, 1e308, 1e154, -1e154, 2**64, 2**70, 10**308, -(10**308)]
EDGE_X = st.sampled_from([*HUGE, "12", True, [1], {"a": 1}, None])
PLAIN_Y = st.sampled_from(["p", "q", "r", 1, 2.5, True])
EDGE_Y = st.sampled_from([2**70, 2**70 + 1, 18446744073709551615, [1], None, ""])
EXOTIC_KEYS = st.sampled_from([1, 1.0, True, None, 2**70, 2**70 + 1, [1], {"a": 1}, "huge"])


def _iso(seconds: int, style: str) -> str:
    utc = datetime.fromtimestamp(seconds, UTC)
    if style in ("Z", ".250Z"):
        return utc.strftime("%Y-%m-%dT%H:%M:%S") + style
    offset = timedelta(hours=2) if style == "+02:00" else -timedelta(hours=5, minutes=30)
    return (utc + offset).strftime("%Y-%m-%dT%H:%M:%S") + style


def _dumps(msg: Any) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def _message(plain: bool) -> st.SearchStrategy[bytes]:
    """An ordinary message (a key, both event times, maybe values), or one whose fields may
    each be hostile, mostly under keys of its own so that ordinary keys stay comparable."""
    if plain:
        required = {
            "k": st.sampled_from(PLAIN_KEYS),
            "ts": PLAIN_TS,
            "ms": PLAIN_MS,
        }
        optional = {"x": PLAIN_X, "y": PLAIN_Y, "kind": st.sampled_from(["a", "a", "b"])}
        return st.fixed_dictionaries(required, optional=optional).map(_dumps)
    fields = {
        "k": st.one_of(EXOTIC_KEYS, EXOTIC_KEYS, EXOTIC_KEYS, st.sampled_from(PLAIN_KEYS)),
        "ts": PLAIN_TS | EDGE_TS,
        "ms": PLAIN_MS | EDGE_MS,
        "x": PLAIN_X | EDGE_X,
        "y": PLAIN_Y | EDGE_Y,
        "kind": st.sampled_from(["a", "b"]),
    }
    return st.fixed_dictionaries({}, optional=fields).map(_dumps)


def _mutate(line: bytes, how: int, at: int, byte: int) -> bytes:
    at %= len(line) + 1
    if how == 0:
        return line[:at]
    if how == 1:
        return line[:at] + bytes([byte]) + line[at:]
    if how == 2:
        return line[:at] + bytes([byte]) + line[at + 1 :]
    return line


def _deep(depth: int, inner: bytes, whole: bool) -> bytes:
    nested = b"[" * depth + inner + b"]" * depth
    if whole:
        return nested
    return b'{"k":"deep","ts":"2024-03-01T00:00:00Z","ms":1709251200000,"x":' + nested + b"}"


def _no_newline(line: bytes) -> bytes:
    return line.replace(b"\n", b" ").replace(b"\r", b" ")


GENERATED: list[bytes] = []
GENERATED_LINES = 300


def _generated(i: int) -> bytes:
    """Line ``i`` of the project's data generator, bad lines included (made at first use)."""
    if not GENERATED:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "generated.jsonl"
            generate(path, GENERATED_LINES, seed=11, keys=20, bad_fraction=0.2)
            GENERATED.extend(path.read_bytes().splitlines())
    return GENERATED[i]


LINE = st.one_of(
    _message(plain=True),
    _message(plain=True),
    _message(plain=True),
    _message(plain=True),
    _message(plain=False),
    _message(plain=False),
    st.binary(max_size=40).map(_no_newline),
    st.builds(
        _mutate,
        st.integers(0, GENERATED_LINES - 1).map(_generated),
        st.integers(0, 3),
        st.integers(0, 10_000),
        st.integers(0, 255),
    ).map(_no_newline),
    st.builds(
        _deep,
        st.sampled_from([20, 254, 255, 1000, 1023, 1024]),
        st.sampled_from([b"1", b"18446744073709551616", b""]),
        st.booleans(),
    ),
    _message(plain=True).map(lambda line: BOM + line),
    _message(plain=True).map(lambda line: line.replace(b'"', b'"\xff', 1)),
    st.sampled_from([b"", b"  ", b"\t", b"null", b"[]", b"1", b'"s"', b"true", b"1e400"]),
)

#: In every example, so that each reported case is met whatever hypothesis draws.
FIXED = [
    b'{"k":"huge","ts":"2024-03-01T00:00:00Z","ms":1709251200000,"x":1.7e308,"kind":"a"}',
    b'{"k":"huge","ts":"2024-03-01T00:30:00Z","ms":1709251300000,"x":1.7e308,"kind":"a"}',
    b'{"k":"edge","ts":"9999-12-31T23:59:59Z","ms":253402300799999,"x":1}',
    b'{"k":"edge","ts":"0001-01-01T00:00:00+01:00","ms":-62135596800000,"x":1}',
    b'{"k":"edge","ts":"0001-01-01T00:00:00Z","ms":-62135596800000,"x":1,"kind":"a"}',
    b'{"k":"edge","ts":253402300799,"ms":253402300799999,"x":1}',
    b'{"k":"big","ts":"2024-03-01T00:00:00Z","ms":1709251200000,"x":123456789012345678901234567890}',
    b'{"k":"big","ts":"2024-03-01T00:00:01Z","ms":1709251200001,"x":-9223372036854775809,"y":2}',
    b"\xff\xfe",
    b"null",
    b'{"a":1e400}',
    b"[" * 1025 + b"]" * 1025,
    BOM + b'{"k":"a"}',
    b"",
]

# -- what the lines say, read independently -----------------------------------------------------


def _depth(value: Any) -> int:
    """Levels of nesting: 0 for a scalar, 1 for ``[]``, 2 for ``[[]]``."""
    depth, level = 0, [value]
    while True:
        containers = [item for item in level if isinstance(item, list | dict)]
        if not containers:
            return depth
        depth += 1
        level = [
            child
            for item in containers
            for child in (item.values() if isinstance(item, dict) else item)
        ]


def _numbers(value: Any) -> list[int | float]:
    out, todo = [], [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            out.append(item)
    return out


def _strings(value: Any) -> list[str]:
    out, todo = [], [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.values())
            out.extend(item)
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, str):
            out.append(item)
    return out


def _refuse(constant: str) -> None:
    raise ValueError(constant)


def read(line: bytes) -> tuple[str, Any]:
    """``(fate, value)`` of a line by RFC 8259 as Python's ``json`` reads it, with the
    limits liveagg documents: UTF-8, 1024 levels, numbers within the double range."""
    if not line.strip(b" \t\r\n"):
        return "blank", None
    try:
        text = line.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return "not_json", None
    numbers = _numbers(value)
    if any(isinstance(n, float) and not math.isfinite(n) for n in numbers):
        return "not_json", None
    try:
        [float(n) for n in numbers if isinstance(n, int)]
    except OverflowError:
        return "not_json", None
    if _depth(value) > 1024 or any(re.search("[\ud800-\udfff]", s) for s in _strings(value)):
        return "not_json", None
    return ("message", value) if isinstance(value, dict) else ("not_an_object", None)


_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")


def _plain_time(text: str) -> bool:
    """A well-formed ISO 8601 time of this century (the edges belong to other tests)."""
    try:
        return bool(_ISO.fullmatch(text)) and 2000 <= datetime.fromisoformat(text).year <= 2100
    except ValueError:  # 2024-02-30
        return False


def ordinary(line: bytes, value: Any) -> bool:
    """A message inside what the oracle covers: plain numbers and well-formed times."""
    if line.startswith(BOM) or _depth(value) > 5:
        return False
    if any(abs(n) > 1e15 for n in _numbers(value)):
        return False
    ts, ms = value.get("ts"), value.get("ms")
    if isinstance(ts, str) and not _plain_time(ts):
        return False
    if type(ts) in (int, float) and not 1e9 <= ts <= 4e9:
        return False
    return not (type(ms) in (int, float) and not 1e12 <= ms <= 4e12)


# -- runs -------------------------------------------------------------------------------------

#: Rows and dead letters collected by the pipelines; module-level so that the pickled DoFns
#: reach it (the DirectRunner runs them in this process).
SEEN: dict[str, list[dict[str, Any]]] = {}


def _collect_row(row: dict[str, Any]) -> None:
    SEEN.setdefault(row["view"], []).append(row)


def _collect_dead_letter(letter: dict[str, Any]) -> None:
    SEEN.setdefault("_dead", []).append(letter)


def run(path: Path, streaming: bool) -> tuple[dict[str, list[dict]], list[dict], RunReport]:
    SEEN.clear()
    p = beam.Pipeline()
    compiled = build(p, VIEWS, {"events": FileSource(str(path))}, streaming=streaming)
    for name, rows in compiled.views.items():
        rows | f"Collect/{name}" >> beam.Map(_collect_row)
    compiled.dead_letters | "Collect/dead" >> beam.Map(_collect_dead_letter)
    result = p.run()
    result.wait_until_finish()
    report = _report(_counters(result), None, NAMES)
    report.view_sources = {v.name: v.source for v in VIEWS}
    rows = {name: list(SEEN.get(name, [])) for name in NAMES}
    return rows, list(SEEN.get("_dead", [])), report


def _sorted(items: list[dict]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items)


def _close(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-9 relative (the two paths merge in different orders)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_same_rows(bounded: list[dict], streamed: list[dict], view: str) -> None:
    def by_key(rows: list[dict]) -> dict[str, dict]:
        keyed = {_key([r["window_start"], r["window_end"], r["k"]]): r for r in rows}
        assert len(keyed) == len(rows), f"{view}: two rows for one key and window"
        return keyed

    left, right = by_key(bounded), by_key(streamed)
    assert left.keys() == right.keys(), view
    for key, row in left.items():
        other = right[key]
        assert row.keys() == other.keys()
        assert all(_close(row[c], other[c]) for c in row), (view, row, other)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for the examples' files; Python's json reads 1024 levels of nesting meanwhile
    (the pipeline too, so both paths see the same messages)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    yield tmp_path_factory.mktemp("every_line")
    sys.setrecursionlimit(limit)


@settings(
    max_examples=6,
    derandomize=True,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking re-runs pipelines for many minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    lines=st.lists(LINE, min_size=40, max_size=120),
    places=st.lists(st.integers(0, 10_000), min_size=len(FIXED), max_size=len(FIXED)),
    bom_first=st.booleans(),
)
def test_every_line_is_accounted_for(
    folder: Path, lines: list[bytes], places: list[int], bom_first: bool
) -> None:
    for line, place in zip(FIXED, places, strict=True):
        lines.insert(place % (len(lines) + 1), line)
    if bom_first:
        lines[0] = BOM + lines[0]
    path = folder / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    file = str(path)

    bounded_rows, bounded_dead, bounded = run(path, streaming=False)
    streamed_rows, streamed_dead, streamed = run(path, streaming=True)

    # Each line's fate, read independently; the first line's byte order mark is dropped.
    fates = [
        read(line[3:] if i == 0 and line.startswith(BOM) else line) for i, line in enumerate(lines)
    ]
    count = {fate: sum(1 for f, _ in fates if f == fate) for fate in ("blank", "message")}
    for report in (bounded, streamed):
        assert report.reconcile() == []
        assert (report.lines_read, report.blank_lines, report.messages) == (
            len(lines),
            count["blank"],
            count["message"],
        )
        kind_a = sum(1 for f, v in fates if f == "message" and v.get("kind") == "a")
        assert report.filtered.get("slide", 0) == count["message"] - kind_a
        assert report.late_windows == {}
    input_letters = sorted(
        (d["source"]["line"], d["reason"]) for d in bounded_dead if d["view"] is None
    )
    assert input_letters == [
        (i + 1, fate) for i, (fate, _) in enumerate(fates) if fate in ("not_json", "not_an_object")
    ]
    for letter in bounded_dead:
        if letter["reason"] == "overflow":
            assert letter["source"] is None
            continue
        number = letter["source"]["line"]
        assert letter["source"]["file"] == file
        raw = lines[number - 1]
        raw = raw[3:] if number == 1 and raw.startswith(BOM) else raw
        assert letter["payload"] == raw.decode("utf-8", "replace")
        assert letter["detail"]
    assert any(d["reason"] == "overflow" for d in bounded_dead)
    assert any(d["reason"] == "event_time_out_of_range" for d in bounded_dead)

    # The two paths agree: rows, dead letters, counters.
    assert bounded.accounting() == streamed.accounting()
    assert _sorted(bounded_dead) == _sorted(streamed_dead)
    for name in NAMES:
        assert_same_rows(bounded_rows[name], streamed_rows[name], name)

    # Keys touched by ordinary messages only meet the oracle, run on those messages alone.
    plain = [
        line
        for line, (fate, value) in zip(lines, fates, strict=True)
        if fate == "message" and ordinary(line, value)
    ]
    tainted = {
        _key(value.get("k"))
        for line, (fate, value) in zip(lines, fates, strict=True)
        if fate == "message" and not ordinary(line, value)
    }
    compared = {_key(k) for k in PLAIN_KEYS} - tainted
    oracle_input = folder / "ordinary.jsonl"
    oracle_input.write_bytes(b"".join(line + b"\n" for line in plain))
    for view in VIEWS:
        actual = [r for r in bounded_rows[view.name] if _key(r["k"]) in compared]
        expected = [r for r in expected_rows(view, oracle_input) if _key(r["k"]) in compared]
        assert_rows_match(actual, expected, view)


REPORTED = [
    BOM + b'{"k":"a","ts":"2020-01-01T00:00:00Z","x":1}',
    b'{"k":"a","ts":"9999-12-31T23:59:59Z","x":1}',
    b'{"k":"a","ts":"0001-01-01T00:00:00+01:00","x":1}',
    b'{"k":"a","ts":"0001-01-01T00:00:00Z","x":2}',
    b'{"k":"b","ts":"2020-01-01T00:00:00Z","x":1.7e308}',
    b'{"k":"b","ts":"2020-01-01T00:00:00Z","x":1.7e308}',
    b'{"k":"c","ts":"2020-01-01T00:00:00Z","x":123456789012345678901234567890}',
    b'{"k":"c","ts":"2020-01-01T00:00:00Z","ms":253402300799999}',
    b"\xff\xfe",
    b"null",
    b'{"k":1e400}',
    b"[" * 1025 + b"]" * 1025,
    BOM + b'{"k":"a"}',
    b"  ",
]


@pytest.mark.parametrize("streaming", [False, True])
def test_the_reported_lines_on_the_command_line(tmp_path: Path, streaming: bool) -> None:
    """The lines of the report, through ``liveagg run`` (with ``--streaming`` too): the run
    succeeds, and each line is a row's input or a dead letter that names its file and line."""
    views = tmp_path / "views.json"
    views.write_text(
        json.dumps(
            {
                "views": [
                    {
                        "name": "v",
                        "event_time": {"field": "ts"},
                        "grouping_cols": ["k"],
                        "window": {"size": "1d"},
                        "aggregation_info": [
                            {"aggregation": "sum", "col_name": "x", "aggregated_col_name": "s"},
                            {"aggregation": "mean", "col_name": "x", "aggregated_col_name": "m"},
                            {"aggregation": "max", "col_name": "x", "aggregated_col_name": "mx"},
                        ],
                    },
                    {
                        "name": "by_ms",
                        "event_time": {"field": "ms", "format": "epoch_ms"},
                        "grouping_cols": [],
                        "window": {"size": "1d"},
                        "filter": {"field": "ms", "op": "exists"},
                        "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "n"}],
                    },
                ]
            }
        )
    )
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\n".join(REPORTED) + b"\n")
    out = tmp_path / "out"
    flags = ["--streaming"] if streaming else []
    liveagg("run", *flags, "--views", str(views), "--input", str(data), "--output", str(out))
    written = [  # read with the standard library: orjson would make floats of long integers
        json.loads(line)
        for path in sorted((out / "v").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    rows = sorted(((r["k"], r["window_start"], r["s"], r["m"], r["mx"]) for r in written), key=repr)
    big = 123456789012345678901234567890
    assert rows == [
        ("a", "0001-01-01T00:00:00Z", 2, 2.0, 2),
        ("a", "2020-01-01T00:00:00Z", 1, 1.0, 1),
        ("b", "2020-01-01T00:00:00Z", None, 1.7e308, 1.7e308),
        ("c", "2020-01-01T00:00:00Z", big, float(big), big),
    ]
    assert rows_in(out / "by_ms") == []
    letters = rows_in(out / "_dead_letter")
    assert {d["source"]["file"] for d in letters if d["source"]} == {str(data)}
    found = sorted(
        ((d["source"]["line"] if d["source"] else None, d["view"], d["reason"]) for d in letters),
        key=repr,
    )
    assert found == sorted(
        [
            (2, "v", "event_time_out_of_range"),
            (3, "v", "event_time_out_of_range"),
            (8, "by_ms", "event_time_out_of_range"),
            (9, None, "not_json"),
            (10, None, "not_an_object"),
            (11, None, "not_json"),
            (12, None, "not_json"),
            (13, None, "not_json"),
            (None, "v", "overflow"),
        ],
        key=repr,
    )
