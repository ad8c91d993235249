"""The fast path decodes a batch to exactly what the exact path does, message for message."""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveagg.engine.columns import _ISO_FORMS, Decoder, column_times, zulu_times
from liveagg.engine.lines import Lines
from liveagg.engine.partials import concat, concat_inputs, preaggregate_views
from liveagg.loader import parse_view
from liveagg.transforms.plan import ViewPlan
from liveagg.transforms.sources.files import LineBatch

VIEWS = [
    {
        "name": "by_org",
        "event_time": {"field": "ts"},
        "grouping_cols": ["org"],
        "window": {"size": "10m"},
        "filter": {"field": "kind", "op": "ne", "value": "noise"},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
            {"aggregation": "count_distinct", "col_name": "user", "aggregated_col_name": "users"},
            {"aggregation": "max", "col_name": "latency", "aggregated_col_name": "slowest"},
            {"aggregation": "first", "col_name": "user", "aggregated_col_name": "first_user"},
        ],
    },
    {
        "name": "cube",
        "event_time": {"field": "ms", "format": "epoch_ms"},
        "grouping_cols": ["org", "status"],
        "grouping_sets": [["org", "status"], ["org"], []],
        "window": {"size": ["1m", "1h"]},
        "aggregation_info": [
            {"aggregation": "mean", "col_name": "latency", "aggregated_col_name": "mean"},
            {"aggregation": "stddev", "col_name": "latency", "aggregated_col_name": "sd"},
            {
                "aggregation": "histogram",
                "col_name": "latency",
                "aggregated_col_name": "h",
                "params": {"bounds": [1, 10, 100]},
            },
            {
                "aggregation": "top_k",
                "col_name": "user",
                "aggregated_col_name": "top",
                "params": {"k": 3},
            },
            {"aggregation": "collect_set", "col_name": "kind", "aggregated_col_name": "kinds"},
        ],
    },
    {
        "name": "slide",
        "event_time": {"field": "ts"},
        "grouping_cols": ["user"],
        "window": {"type": "sliding", "size": "30m", "period": "10m"},
        "aggregation_info": [
            {
                "aggregation": "count_distinct_exact",
                "col_name": "org",
                "aggregated_col_name": "orgs",
            },
            # The quantiles take bytes as doubles; min, after them, must keep integers exact.
            {
                "aggregation": "approx_quantiles",
                "col_name": "bytes",
                "aggregated_col_name": "q",
                "params": {"quantiles": [0.5]},
            },
            {"aggregation": "min", "col_name": "bytes", "aggregated_col_name": "least"},
        ],
    },
    {
        # Dotted fields: a literal key wins where it is not null, else the path through
        # objects (fields.getter); the fast path reads the objects as structs.
        "name": "nested",
        "event_time": {"field": "meta.at", "format": "epoch_ms"},
        "grouping_cols": ["geo.country"],
        "window": {"size": "1h"},
        "filter": {"field": "geo.city.kind", "op": "ne", "value": "noise"},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {
                "aggregation": "count_distinct_exact",
                "col_name": "geo.city.name",
                "aggregated_col_name": "cities",
            },
            {"aggregation": "sum", "col_name": "meta.size", "aggregated_col_name": "size"},
        ],
    },
]


def clean_line(rng: random.Random, i: int) -> bytes:
    ms = 1_709_251_200_000 + rng.randrange(0, 3 * 3_600_000)
    hours, minutes, seconds = (ms // 3_600_000) % 24, (ms // 60_000) % 60, (ms // 1000) % 60
    ts = f"2024-03-01T{hours:02d}:{minutes:02d}:{seconds:02d}.{ms % 1000:03d}Z"
    msg = {
        "ts": ts,
        "ms": ms,
        "org": f"o{rng.randrange(5)}",
        "user": f"u{rng.randrange(40)}",
        "status": rng.choice([200, 404, 500]),
        "bytes": rng.randrange(0, 10_000),
        "latency": round(rng.uniform(0, 200), 2),
        "kind": rng.choice(["a", "b", "noise"]),
        "meta": {"at": ms, "size": rng.randrange(100), "other": [1, {"x": None}]},
    }
    shape = rng.random()
    if shape < 0.8:
        city = {"name": f"c{rng.randrange(9)}", "kind": rng.choice(["a", "noise"])}
        msg["geo"] = {"country": rng.choice(["DE", "FR", None]), "city": city, "zip": "x"}
    elif shape < 0.9:
        msg["geo"] = None
    return orjson.dumps(msg)


HOSTILE = [
    b"not json",
    b"null",
    b"[1, 2]",
    b"",
    b"   ",
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "bytes": "12"}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": 7, "bytes": 12}',
    b'{"ts": "2024-03-01 00:00:00", "org": "o1", "bytes": 1.5, "latency": 3}',
    b'{"ts": "yesterday", "org": "o1", "ms": "x"}',
    b'{"ts": 1709251200, "ms": 1709251200000.5, "org": null, "status": "200"}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": {"a": 1}, "user": [1]}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "org": "o2", "bytes": 1}',
    b'{"ts": "0001-01-01T00:00:00Z", "org": "o1", "ms": -62135596800000}',
    b'{"ts": "9999-12-31T23:59:59Z", "org": "o1", "ms": 253402300799999}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "bytes": 123456789012345678901234567890}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "bytes": 9007199254740993.0}',
    b'{"ts": "2024-03-01T00:00:00Z", "user": "u1", "bytes": -9007199254740993, "latency": 1.5}',
    b'{"ts": "2024-03-01T00:00:00+02:00", "org": true, "latency": -0.0, "kind": 1.0}',
    b'{"ts": "2024-02-30T00:00:00Z", "org": "o1"}',
    b'{"a": 1}{"b": 2}',
    b'\xff\xfe{"ts": 1}',
    b'{"ts": "2024-03-01T00:00:00.1234567Z", "org": "o\\"1"}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "bytes": 2}\r\n',
    b' \t{"ts": "2024-03-01T00:00:00Z", "org": "o1",\n "bytes": 3} ',
    b"\n",
    # Arrow's reader takes these (RapidJSON's NaN and Inf, unchecked UTF-8, any depth); the
    # exact path does not: they once crashed a batch or were aggregated.
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "latency": NaN}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "latency": -Infinity, "bytes": 1}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "unused": Inf}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "user": "NaN Infinity"}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o\xc3(", "bytes": 1}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "unused": "\xed\xa0\x80"}',
    b'{"ts": "2024-03-01T00:00:00Z", "o\xffrg": "o1"}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "\xc3\xa9t\xc3\xa9"}',
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "deep": ' + b"[" * 1024 + b"]" * 1024 + b"}",
    b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "deep": ' + b"[" * 1023 + b"]" * 1023 + b"}",
    # Dotted fields: objects that are not, literal keys beside paths, duplicates inside.
    b'{"ts": "2024-03-01T00:00:00Z", "meta": {"at": 1709251200000}, "geo": "DE"}',
    b'{"ts": "2024-03-01T00:00:00Z", "meta": {"at": 1709251200000}, "geo": [{"country": 1}]}',
    b'{"ts": "2024-03-01T00:00:00Z", "meta": {"at": 1709251200000}, "geo": {"country": 5}}',
    b'{"meta": {"at": 1709251200000}, "geo.country": "lit", "geo": {"country": "DE"}}',
    b'{"meta": {"at": 1709251200000}, "geo.country": null, "geo": {"country": "FR"}}',
    b'{"meta": {"at": 1709251200000}, "geo": {"country": "DE", "country": "FR"}}',
    b'{"meta": null, "geo": {"country": "DE", "city": {"name": "c1"}}}',
    b'{"meta": {"at": "soon"}, "geo": {"city": {"name": {"deep": 1}, "kind": 3}}}',
    b'{"meta.at": 1709251200000, "meta": {"at": 1}, "geo": {"city": {"name": "c2"}}}',
    b'{"meta": {"at": 1709251200000, "size": 2.5}, "geo": {"city": null}}',
    b'{"meta": {"at": 1709251200000, "size": "2"}, "geo": {"city": "c3"}}',
]


def run(
    lines: list[bytes], fast: bool, views: list[dict[str, Any]] = VIEWS, held: bool = False
) -> tuple[dict[str, Any], list[Any]]:
    """What the views make of ``lines``, decoded in batches of 97 lines; ``held``: as a
    file's batches are, left in their buffer where each line is an object."""
    plans = [ViewPlan(parse_view(view)) for view in views]
    decoder = Decoder(plans)
    if not fast:
        decoder._fast_ok = False
    aggregators = [plan.compiled.aggregator() for plan in plans]
    parts: list[list[Any]] = [[] for _ in plans]
    dead: list[Any] = []
    for start in range(0, len(lines), 97):
        batch: Sequence[bytes] = lines[start : start + 97]
        if held:
            batch = LineBatch("f", 0, start, b"\n".join(batch), len(batch)).payloads()
            HELD.append(type(batch) is Lines)
        decoded = decoder.decode(batch)
        dead += [
            (view, reason, bytes(p) if isinstance(p, bytes) else p)
            for p, view, reason, _, _ in decoded.dead_letters
        ]
        for i, batch in enumerate(decoded.views):
            parts[i] += [aggregators[i].preaggregate(inputs) for inputs in batch.inputs]
    results: dict[str, Any] = {}
    for plan, aggregator, found in zip(plans, aggregators, parts, strict=True):
        if not found:
            results[plan.name] = []
            continue
        merged = aggregator.merge(concat(found, aggregator))
        outputs = aggregator.extract(merged)
        keys = [k.to_pylist() for k in merged.keys]
        rows = []
        for r in range(merged.rows):
            row = (
                int(merged.variant[r]),
                int(merged.start[r]),
                int(merged.end[r]),
                tuple(repr(k[r]) for k in keys),
                tuple(repr(rounded(o[r])) for o in outputs),
            )
            rows.append(row)
        results[plan.name] = sorted(rows)
    return results, sorted(dead, key=repr)


def rounded(value: Any) -> Any:
    """Floats to 12 significant digits: sums over partials cut at other places differ in the
    last bits, as they do between runs with other bundles."""
    if type(value) is float:
        return float(f"{value:.12g}")
    if isinstance(value, list):
        return [rounded(x) for x in value]
    return value


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 10**6), st.lists(st.sampled_from(HOSTILE), max_size=12))
def test_fast_path_equals_exact_path(seed: int, hostile: list[bytes]) -> None:
    rng = random.Random(seed)
    lines = [clean_line(rng, i) for i in range(600)]
    for line in hostile:
        lines.insert(rng.randrange(len(lines)), line)
    assert run(lines, fast=True) == run(lines, fast=False)


#: Whether each batch :func:`run` decoded held in its buffer was left there.
HELD: list[bool] = []


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 10**6), st.lists(st.sampled_from(HOSTILE), max_size=4))
def test_lines_left_in_their_buffer_decode_as_split_lines_do(
    seed: int, hostile: list[bytes]
) -> None:
    """A file's batch is decoded from its buffer when each of its lines is an object
    (:class:`~liveagg.engine.lines.Lines`): the same rows and dead letters, with the same
    payloads, as the exact path gives for the lines split."""
    rng = random.Random(seed)
    lines = [clean_line(rng, i) for i in range(400)]
    for line in hostile:
        if b"\n" not in line:  # a newline in a message would make it two lines
            lines.insert(rng.randrange(len(lines)), line)
    HELD.clear()
    assert run(lines, fast=True, held=True) == run(lines, fast=False)
    assert any(HELD)


def test_views_of_one_flush_share_joined_columns_and_aggregate_as_each_alone() -> None:
    """``preaggregate_views`` joins a column that several views read from the same batches
    once, and hashes it once; each view's partial is what it makes of its inputs alone.
    Two views here read ``user`` (shared) and ``org`` of the same messages, each in another
    role, with batches of equal sizes, so a column handed to the wrong view changes rows."""
    views = [
        {
            "name": "users_by_org",
            "event_time": {"field": "ts"},
            "grouping_cols": ["org"],
            "window": {"size": "10m"},
            "aggregation_info": [
                {
                    "aggregation": "count_distinct_exact",
                    "col_name": "user",
                    "aggregated_col_name": "users",
                },
                {
                    "aggregation": "top_k",
                    "col_name": "kind",
                    "aggregated_col_name": "kinds",
                    "params": {"k": 2},
                },
            ],
        },
        {
            "name": "users_by_kind",
            "event_time": {"field": "ts"},
            "grouping_cols": ["kind"],
            "window": {"size": "1h"},
            "aggregation_info": [
                {
                    "aggregation": "count_distinct",
                    "col_name": "user",
                    "aggregated_col_name": "users",
                },
                {
                    "aggregation": "count_distinct_exact",
                    "col_name": "org",
                    "aggregated_col_name": "orgs",
                },
            ],
        },
    ]
    rng = random.Random(11)
    lines = [clean_line(rng, i) for i in range(600)]
    plans = [ViewPlan(parse_view(view)) for view in views]
    decoder = Decoder(plans)
    parts: list[list[Any]] = [[], []]
    for start in range(0, len(lines), 100):
        decoded = decoder.decode(lines[start : start + 100])
        assert decoded.fast
        for i, batch in enumerate(decoded.views):
            parts[i] += batch.inputs
    aggregators = [plan.compiled.aggregator() for plan in plans]
    together = preaggregate_views(list(zip(aggregators, parts, strict=True)))
    alone = [
        aggregator.preaggregate(concat_inputs(own)[0])
        for aggregator, own in zip(aggregators, parts, strict=True)
    ]
    for a, b, aggregator in zip(together, alone, aggregators, strict=True):
        assert [o.tolist() if hasattr(o, "tolist") else o for o in aggregator.extract(a)] == [
            o.tolist() if hasattr(o, "tolist") else o for o in aggregator.extract(b)
        ]
        assert [k.to_pylist() for k in a.keys] == [k.to_pylist() for k in b.keys]
    joined: dict[tuple[int, ...], Any] = {}
    users = [concat_inputs(own, joined)[0].values[0][1] for own in parts]
    assert users[0] is users[1]  # joined once for both views


@pytest.mark.parametrize("line", HOSTILE)
def test_each_hostile_line_alone_in_a_clean_batch(line: bytes) -> None:
    rng = random.Random(5)
    lines = [clean_line(rng, i) for i in range(300)]
    lines.insert(150, line)
    assert run(lines, fast=True) == run(lines, fast=False)


def test_clean_batches_take_the_fast_path() -> None:
    rng = random.Random(1)
    lines = [clean_line(rng, i) for i in range(500)]
    decoder = Decoder([ViewPlan(parse_view(view)) for view in VIEWS])
    fast = [decoder.decode(lines[i : i + 100]).fast for i in range(0, 500, 100)]
    assert all(fast)
    one_bad = [
        *lines[:50],
        b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "bytes": "x"}',
        *lines[50:],
    ]
    assert decoder.decode(one_bad).fast  # a value of another type: that row alone goes exact


def test_messages_in_json_whitespace_take_the_fast_path() -> None:
    """A Kafka producer's trailing newline or CRLF is no part of the message: such a batch
    is read by the fast path, to the same result as the exact one."""
    rng = random.Random(2)
    lines = [clean_line(rng, i) + rng.choice([b"\n", b"\r\n", b" ", b""]) for i in range(300)]
    decoder = Decoder([ViewPlan(parse_view(view)) for view in VIEWS])
    decoded = decoder.decode(lines[:100])
    decoded = decoder.decode(lines[100:])
    assert decoded.fast and decoded.exact_lines == 0
    assert run(lines, fast=True) == run(lines, fast=False)


def test_a_numeric_field_no_message_has_gives_nulls_and_accumulators_level_2_reads() -> None:
    """A batch where a summed field is always an int and a variance's field always missing:
    the fast path takes the missing column (Arrow's null type), and every accumulator's
    float parts stay floats, as level 2's checked decoding requires."""
    view = {
        "name": "sparse",
        "event_time": {"field": "ts"},
        "grouping_cols": ["org"],
        "window": {"size": "1m"},
        "aggregation_info": [
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
            {"aggregation": "mean", "col_name": "bytes", "aggregated_col_name": "mean"},
            {"aggregation": "variance", "col_name": "absent", "aggregated_col_name": "var"},
        ],
    }
    plan = ViewPlan(parse_view(view))
    lines = [
        orjson.dumps({"ts": 1709251200 + i, "org": f"o{i % 3}", "bytes": i}) for i in range(300)
    ]
    decoded = Decoder([plan]).decode(lines)
    assert decoded.fast
    aggregator = plan.compiled.aggregator()
    [inputs] = decoded.views[0].inputs
    # One batch's partial as level 1 sends it when a flush holds one batch: not merged again.
    partial = aggregator.preaggregate(inputs)
    assert aggregator.extract(partial)[2] == [None] * partial.rows == [None] * 15
    for acc in aggregator.accumulators(partial):
        plan.combine.decode_checked(plan.combine.encode(acc))  # raises on an int float part


@pytest.mark.parametrize("value", [True, "x"], ids=["boolean", "string"])
def test_a_numeric_field_of_another_type_in_every_message_of_a_batch(value: Any) -> None:
    """Every message of the batch that has ``bytes`` (summed) has a boolean or a string there:
    those go to the exact path and become dead letters, and the fast path takes the others
    with no value of the column (an empty boolean or string column, which numpy cannot take
    without a copy)."""
    lines = [
        orjson.dumps(
            {
                "ts": 1709251200 + i,
                "org": f"o{i % 3}",
                "user": "u",
                **({"bytes": value} if i % 2 else {}),
            }
        )
        for i in range(50)
    ]
    fast, exact = run(lines, fast=True), run(lines, fast=False)
    assert fast == exact
    assert sum(1 for _, reason, _ in fast[1] if reason == "not_numeric") == 25


def test_dotted_fields_read_the_literal_key_first_on_the_fast_path() -> None:
    """Where messages spell a dotted field both ways, the fast path reads the literal key
    where it is not null and the path through objects elsewhere, as the exact path does,
    without leaving the fast path."""
    rng = random.Random(4)
    lines = []
    for i in range(400):
        msg = orjson.loads(clean_line(rng, i))
        msg["geo"] = {
            "country": rng.choice(["DE", "FR"]),
            "city": {"name": f"c{i % 7}", "kind": "a"},
        }
        spelling = rng.random()
        if spelling < 0.4:
            msg["geo.country"] = rng.choice(["lit-a", "lit-b"])
        elif spelling < 0.6:
            msg["geo.country"] = None
        lines.append(orjson.dumps(msg))
    decoder = Decoder([ViewPlan(parse_view(view)) for view in VIEWS])
    decoded = [decoder.decode(lines[i : i + 100]) for i in range(0, 400, 100)]
    assert all(d.fast and d.exact_lines == 0 for d in decoded)
    fast, _ = run(lines, fast=True)
    assert fast == run(lines, fast=False)[0]
    keys = {row[3] for row in fast["nested"]}
    assert {("'lit-a'",), ("'DE'",)} <= keys


@st.composite
def iso_times(draw: st.DrawFn) -> str:
    """Event-time strings of the grammar's variants, some out of range or malformed."""
    # Recent years half the time (nanoseconds reach 1677 to 2262 only); fields one past
    # their range now and then.
    year = draw(st.integers(1900, 2100) | st.integers(1, 9999))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute, second = (
        draw(st.integers(0, 24)),
        draw(st.integers(0, 60)),
        draw(st.integers(0, 60)),
    )
    text = f"{year:04d}-{month:02d}-{day:02d}{draw(st.sampled_from('T t'))}{hour:02d}:{minute:02d}"
    if draw(st.booleans()):
        text += f":{second:02d}"
        if draw(st.booleans()):
            text += draw(st.sampled_from(".,")) + draw(st.text("0123456789", max_size=10))
    sign = draw(st.sampled_from("+-"))
    oh, om = draw(st.integers(0, 25)), draw(st.integers(0, 61))
    zone = draw(
        st.sampled_from(["", "Z", "z", f"{sign}{oh:02d}:{om:02d}", f"{sign}{oh:02d}{om:02d}"])
        | st.just(f"{sign}{oh:02d}")
    )
    return text + zone


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(iso_times(), min_size=1, max_size=30))
def test_event_times_arrow_reads_are_the_views_parsers(values: list[str]) -> None:
    """Every event time the fast path reads with Arrow's cast (RFC 3339, and a log's space
    separator, ``+hhmm`` or ``+hh`` offsets, no zone at all) is what the view's own parser
    reads; the rest it leaves to that parser."""
    from liveagg.transforms import eventtime

    ts, ok = column_times("iso8601", pa.array(values, pa.string()))
    parse = eventtime.parser("ts", "iso8601")
    for value, micros, read in zip(values, ts.tolist(), ok.tolist(), strict=True):
        if read:
            assert parse(value) == micros, value


@st.composite
def near_zulu(draw: st.DrawFn) -> str | None:
    """Strings of about the length and alphabet of ``2024-03-01T00:00:00.000Z``: the form,
    with fields out of range and bytes changed."""
    if draw(st.integers(0, 19)) == 0:
        return None
    if draw(st.booleans()):
        return draw(st.text(alphabet="0123456789-:TZ .+z\u00e9", max_size=28))
    fraction = draw(st.text(alphabet="0123456789", max_size=8))
    text = list(
        f"{draw(st.integers(0, 9999)):04d}-{draw(st.integers(0, 19)):02d}-"
        f"{draw(st.integers(0, 39)):02d}{draw(st.sampled_from('T tx'))}"
        f"{draw(st.integers(0, 29)):02d}:{draw(st.integers(0, 69)):02d}:"
        f"{draw(st.integers(0, 69)):02d}"
        + (f".{fraction}" if draw(st.booleans()) else "")
        + draw(st.sampled_from(["Z", "Z", "z", "+01:00", ""]))
    )
    for _ in range(draw(st.integers(0, 1))):
        text[draw(st.integers(0, len(text) - 1))] = draw(st.sampled_from("0:-.TZ5"))
    return "".join(text)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(near_zulu(), min_size=1, max_size=40), st.integers(0, 3))
def test_zulu_times_are_the_first_iso_form_ending_in_z(values: list[str | None], cut: int) -> None:
    """:func:`zulu_times` checks bytes by position for what the first of ``_ISO_FORMS``, a
    regex, accepts of strings ending in ``Z``: the same rows, on a column sliced or not."""
    column = pa.array(values, pa.string()).slice(min(cut, len(values) - 1))
    among = np.ones(len(column), dtype=bool)
    regex = pc.match_substring_regex(column, _ISO_FORMS[0][0]).fill_null(False)
    zulu = pc.ends_with(column, "Z").fill_null(False)
    expected = pc.and_(regex, zulu).to_numpy(zero_copy_only=False)
    assert zulu_times(column, among).tolist() == expected.tolist()


def test_log_java_and_go_times_take_the_fast_path() -> None:
    """A space separator, no zone, ``+hhmm`` and ``+hh`` offsets, nanosecond fractions."""
    from liveagg.transforms import eventtime

    plan = ViewPlan(parse_view(VIEWS[0]))
    values = ["2024-03-01 00:00:00", "2024-03-01T10:00:00.5", "2024-03-01 12:30:00+0200"]
    values += ["2024-03-01 23:59:59.123456-05", "2024-03-01T00:00:00Z"]
    values += ["2024-03-01T00:00:00.123456789Z", "1969-12-31 23:59:59.9999999", None]
    values += ["2024-02-30T00:00:00Z"]  # refused by Arrow's cast: its neighbours are not
    ts, ok = column_times(plan.spec.event_time.format, pa.array(values, pa.string()))
    assert ok.tolist() == [True] * 7 + [False, False]
    parse = eventtime.parser("ts", "iso8601")
    assert ts.tolist()[:7] == [parse(v) for v in values[:7]]


def test_a_view_with_a_custom_aggregation_keeps_the_others_on_the_fast_path() -> None:
    """A custom CombineFn runs row by row: its view reads every message exactly, while the
    built-in views of the same run still read the batch as columns, to the same rows."""
    custom = {
        "name": "spread",
        "event_time": {"field": "ts"},
        "grouping_cols": ["org"],
        "window": {"size": "10m"},
        "aggregation_info": [
            {
                "aggregation": "custom",
                "col_name": "latency",
                "aggregated_col_name": "range",
                "params": {"combine_fn": "examples.custom_combiners:RangeFn"},
            },
            {"aggregation": "count", "aggregated_col_name": "n"},
        ],
    }
    rng = random.Random(6)
    lines = [clean_line(rng, i) for i in range(300)]
    lines.insert(100, b'{"ts": "2024-03-01T00:00:00Z", "org": "o1", "latency": "slow"}')
    views = [*VIEWS, custom]
    decoder = Decoder([ViewPlan(parse_view(view)) for view in views])
    assert decoder.decode(lines[:100]).fast
    fast = run(lines, fast=True, views=views)
    assert fast == run(lines, fast=False, views=views)
    assert fast[0]["spread"]


def test_types_widen_to_what_the_exact_path_met() -> None:
    """A sparse field absent from the sample (learnt as null) and a rare double in a column
    of ints make the reader fail only in the first batch that holds them: the types widen to
    what the exact path decoded there, and later batches stay on the fast path."""
    rng = random.Random(7)
    lines = []
    for i in range(30_000):
        msg = orjson.loads(clean_line(rng, i))
        if i % 500 != 499:
            del msg["status"]  # sparse: never in the sample
        if i % 2000 == 1999:
            msg["bytes"] = 1.5  # a double among ints
        lines.append(orjson.dumps(msg))
    decoder = Decoder([ViewPlan(parse_view(view)) for view in VIEWS])
    exact = [decoder.decode(lines[i : i + 10_000]).exact_lines for i in range(0, 30_000, 10_000)]
    assert 0 < exact[0] < 5_000 and exact[1:] == [0, 0], exact
    some = lines[:2_000]
    assert run(some, fast=True) == run(some, fast=False)


def test_a_field_mixing_numbers_and_strings_stays_on_the_fast_path() -> None:
    """Numbers with an occasional "N/A" (or true) in the sample: the field is read from the
    decoded messages as a column of its numbers, and only the rows holding another type go
    to the exact path (they are dead letters there), to the same rows and dead letters."""
    rng = random.Random(8)
    lines = []
    for i in range(3000):
        msg = orjson.loads(clean_line(rng, i))
        if i % 50 == 7:
            msg["bytes"] = rng.choice(["N/A", "", True, 12.5])
        if i % 70 == 3:
            msg["org"] = rng.choice([7, None, "o9"])  # a grouping column, numbers among strings
        lines.append(orjson.dumps(msg))
    decoder = Decoder([ViewPlan(parse_view(view)) for view in VIEWS])
    decoded = [decoder.decode(lines[i : i + 1000]) for i in range(0, 3000, 1000)]
    assert all(d.fast and d.exact_lines == 0 for d in decoded)
    assert {"bytes", "org"} <= decoder._loose
    assert any(d.dead_letters for d in decoded)
    assert run(lines, fast=True) == run(lines, fast=False)


def test_a_loose_numeric_field_with_integers_no_double_holds() -> None:
    """Doubles, a string now and then and 64-bit integers beyond 2**53 in one field (ids, say):
    those integers leave the column of doubles for the exact path, as a string does; building
    the column from them failed the whole run (Arrow refuses an int it cannot hold exactly)."""
    rng = random.Random(11)
    big = [2**53 + 1, 4404395573647542517, -(2**62) - 3, 2**63 - 1]
    lines = []
    for i in range(2000):
        msg = orjson.loads(clean_line(rng, i))
        if i % 40 == 5:
            msg["bytes"] = rng.choice(["N/A", *big])
        if i % 45 == 9:
            msg["org"] = rng.choice(["o9", 2.5, *big])  # a grouping column
        if i % 3 == 0:
            msg["bytes"] = msg.get("bytes", 0) + 0.5 if type(msg.get("bytes")) is int else 0.25
        lines.append(orjson.dumps(msg))
    decoder = Decoder([ViewPlan(parse_view(view)) for view in VIEWS])
    decoded = [decoder.decode(lines[i : i + 500]) for i in range(0, 2000, 500)]
    assert all(d.fast for d in decoded)
    assert run(lines, fast=True) == run(lines, fast=False)


HISTOGRAM_VALUES = {
    "ints": [10**17, 10**17 + 1, 10**17 + 2, -(2**63), 2**63 - 1, 2**53, 2**53 + 1, 0, 3],
    # The fast path reads no integral double from 2**53 up (such a batch is read exactly).
    "doubles": [9007199254740991.0, 4503599627370495.5, 2.5, -0.0, -1e15],
}


@pytest.mark.parametrize("column", sorted(HISTOGRAM_VALUES))
@pytest.mark.parametrize(
    "bounds",
    [[10**17 + 1], [2**53 + 1, 10**17], [2.5, 2**53 + 1, 1e17, 2**63 - 1], [-(2**64), 2**64]],
)
def test_histogram_buckets_large_numbers_as_the_exact_path_does(
    column: str, bounds: list[Any]
) -> None:
    """Bounds and values compare as Python compares them: the fast path's int64 column holds
    integers beyond 2**53, which doubles merge (10**17 and 10**17 + 1 fell in one bucket), and
    a bound beyond 2**53 may lie between two doubles."""
    view = {
        "name": "h",
        "event_time": {"field": "ts"},
        "grouping_cols": [],
        "window": {"size": "1h"},
        "aggregation_info": [
            {
                "aggregation": "histogram",
                "col_name": "x",
                "aggregated_col_name": "h",
                "params": {"bounds": bounds},
            }
        ],
    }
    values = HISTOGRAM_VALUES[column]
    lines = [orjson.dumps({"ts": 1709251200 + i, "x": x}) for i, x in enumerate(values)]
    assert Decoder([ViewPlan(parse_view(view))]).decode(lines).fast
    expected = [0] * (len(bounds) + 1)
    for x in values:  # the rule of HistogramFn.add_input
        expected[bisect.bisect_right(bounds, x)] += 1
    for fast in (True, False):
        ((*_, (got,)),) = run(lines, fast=fast, views=[view])[0]["h"]
        assert got == repr(expected)
    fn = ViewPlan(parse_view(view)).compiled.fns[0]
    many = values * 10  # HistogramFn.add_inputs takes numpy from 64 values
    assert fn.add_inputs(fn.create_accumulator(), many) == [10 * n for n in expected]
    mixed = [*many, 0.5]  # ints and doubles: numpy would make them all doubles
    assert fn.add_inputs(fn.create_accumulator(), mixed) == [
        sum(bisect.bisect_right(bounds, x) == i for x in mixed) for i in range(len(bounds) + 1)
    ]


def test_a_custom_aggregation_naming_a_built_in_class_aggregates_as_the_built_in() -> None:
    """``"custom"`` with ``combine_fn`` naming ``liveagg.combiners.basic:SumFn`` is a sum: its
    kernel takes numbers, whatever name the view gave the aggregation (it was given the
    scalars of a ``custom`` one, and the batch failed)."""

    def view(custom: bool) -> dict[str, Any]:
        def agg(kind: str, cls: str, name: str) -> dict[str, Any]:
            if not custom:
                return {"aggregation": kind, "col_name": "bytes", "aggregated_col_name": name}
            return {
                "aggregation": "custom",
                "col_name": "bytes",
                "aggregated_col_name": name,
                "params": {"combine_fn": f"liveagg.combiners.{cls}"},
            }

        return {
            "name": "custom" if custom else "builtin",
            "event_time": {"field": "ts"},
            "grouping_cols": ["org"],
            "window": {"size": "1m"},
            "aggregation_info": [
                agg("sum", "basic:SumFn", "total"),
                agg("max", "basic:MaxFn", "most"),
                agg("variance", "moments:VarianceFn", "var"),
            ],
        }

    lines = [
        orjson.dumps({"ts": 1709251200 + i, "org": f"o{i % 3}", "bytes": i * 7}) for i in range(200)
    ]
    lines.insert(100, b'{"ts": 1709251300, "org": "o1", "bytes": "12"}')
    results = {}
    for custom in (False, True):
        for fast in (True, False):
            plan = ViewPlan(parse_view(view(custom)))
            decoder = Decoder([plan])
            decoder._fast_ok = fast
            decoded = decoder.decode(lines)
            aggregator = plan.compiled.aggregator()
            parts = [aggregator.preaggregate(inputs) for inputs in decoded.views[0].inputs]
            merged = aggregator.merge(concat(parts, aggregator))
            keys = merged.keys[0].to_pylist()
            outputs = aggregator.extract(merged)
            reasons = [reason for _, _, reason, _, _ in decoded.dead_letters]
            results[custom, fast] = (
                sorted(zip(keys, *[[rounded(x) for x in o] for o in outputs], strict=True)),
                reasons,
            )
    assert results[True, True] == results[True, False] == results[False, True]
    assert results[False, True][1] == ["not_numeric"]
    totals: dict[tuple[str, int], int] = {}
    for i in range(200):
        key = (f"o{i % 3}", i // 60)
        totals[key] = totals.get(key, 0) + i * 7
    assert sorted(row[1] for row in results[True, True][0]) == sorted(totals.values())


#: Values of ``x`` in a batch the fast path reads: an int64 column up to its limits, a double
#: column of values below 2**53 (the fast path reads no larger integral double).
FILTERED = {
    "ints": [0, 1, 2, 200, 2**53, 2**53 + 1, 2**62, -(2**63), 2**63 - 1],
    "doubles": [0.0, -0.0, -0.5, 1.5, 200.0, 2.0**52 + 0.5, 9007199254740991.0, -1e15],
}
FILTER_VALUES = [
    *[
        (op, value)
        for op in ("eq", "ne", "gt", "ge", "lt", "le")
        for value in (1.5, -0.0, 200.0, 2.0**53, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 1e19)
    ],
    ("in", [1.5, 2]),
    ("in", [0]),
    ("in", [-0.0, 7]),
    ("not_in", [0]),
    ("in", [200.0, None, {"a": 1}]),  # null, an object: they match nothing
    ("not_in", [1.5, None]),  # SQL's x NOT IN (1.5, NULL) is never true
    ("in", [2**64, 2**53 + 1, 9007199254740991]),
    ("not_in", [200.0, -(2**64)]),
]


@pytest.mark.parametrize("column", sorted(FILTERED))
@pytest.mark.parametrize(("op", "value"), FILTER_VALUES)
def test_a_numeric_filter_selects_what_the_exact_path_does(
    column: str, op: str, value: Any
) -> None:
    """A filter number compares with a column's numbers exactly, as Python compares them:
    Arrow, asked to, converted an int64 column to doubles (failing the batch on 2**53 + 1),
    a float to the column's ints (1.5 ``in`` it matched 1) or an int beyond 64 bits to
    nothing at all (failing the batch)."""
    view = {
        "name": "f",
        "event_time": {"field": "ts"},
        "grouping_cols": [],
        "window": {"size": "1h"},
        "filter": {"field": "x", "op": op, "value": value},
        "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "n"}],
    }
    lines = [
        orjson.dumps({"ts": 1709251200 + i, "x": x}) for i, x in enumerate(FILTERED[column] * 20)
    ]
    counts = {}
    for fast in (True, False):
        decoder = Decoder([ViewPlan(parse_view(view))])
        decoder._fast_ok = fast
        decoded = decoder.decode(lines)
        assert decoded.fast == fast
        counts[fast] = (decoded.views[0].used, decoded.views[0].filtered)
    assert counts[True] == counts[False]
