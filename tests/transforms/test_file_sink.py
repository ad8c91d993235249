"""The file sinks on local folders: every format, bounded and unbounded, read back row by row.

Rows come from a real view aggregated by the bounded path and are collected through Beam's
own text sink, so the reference does not go through the code under test.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options, StandardOptions
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.transforms.window import TimestampedValue
from hypothesis import given
from hypothesis import strategies as st

from integration.services import S3Connection
from liveagg.loader import parse_view
from liveagg.pipelines.compile import build
from liveagg.spec import Sink, ViewSpec
from liveagg.transforms.sinks import Connections, build_sink, objectstores
from liveagg.transforms.sinks.files import (
    FORMATS,
    KEY,
    TIMESTAMP,
    Column,
    OutputFolder,
    WriteDeadLetters,
    WriteViewFiles,
    _Files,
    _WritePartFiles,
    encode_csv,
    encode_jsonl,
    encode_parquet,
    view_columns,
)
from liveagg.transforms.sinks.objectstores import beam_args
from liveagg.transforms.sources import CreateSource
from liveagg.transforms.streaming import StreamingAggregate

#: Two granularities and two grouping sets, a numeric grouping column, every output type
#: a built-in aggregation has, and a derived column.
VIEW = parse_view(
    {
        "name": "traffic",
        "event_time": {"field": "ts", "format": "epoch_s"},
        "grouping_cols": ["host", "status"],
        "grouping_sets": [["host", "status"], ["host"]],
        "window": {"size": ["1m", "1h"]},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "requests"},
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
            {"aggregation": "mean", "col_name": "ms", "aggregated_col_name": "ms_mean"},
            {"aggregation": "min", "col_name": "ms", "aggregated_col_name": "ms_min"},
            {"aggregation": "count_distinct", "col_name": "path", "aggregated_col_name": "paths"},
            {"aggregation": "hll_sketch", "col_name": "path", "aggregated_col_name": "paths_hll"},
            {
                "aggregation": "approx_quantiles",
                "col_name": "ms",
                "aggregated_col_name": "ms_q",
                "params": {"quantiles": [0.5, 0.9]},
            },
            {
                "aggregation": "histogram",
                "col_name": "ms",
                "aggregated_col_name": "ms_hist",
                "params": {"bounds": [10, 100]},
            },
            {"aggregation": "top_k", "col_name": "path", "aggregated_col_name": "top_paths"},
            {"aggregation": "collect_set", "col_name": "path", "aggregated_col_name": "path_set"},
            {"aggregation": "first", "col_name": "path", "aggregated_col_name": "first_path"},
        ],
        "derived": [{"name": "bytes_per_request", "expr": "bytes / requests"}],
    }
)

SESSIONS = parse_view(
    {
        "name": "visits",
        "event_time": {"field": "ts", "format": "epoch_s"},
        "grouping_cols": ["host"],
        "window": {"type": "session", "gap": "10m"},
        "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "hits"}],
    }
)


def messages(n: int = 60) -> list[str]:
    """Deterministic requests over three minutes; one has no ``ms`` (a null input)."""
    out = []
    for i in range(n):
        msg: dict[str, Any] = {
            "ts": 1_700_000_000 + i * 3,
            "host": "a.example" if i % 3 else "b.example",
            "status": 200 if i % 4 else 404,
            "bytes": 100 + i * 7,
            "path": f"/p/{i % 5}",
            "ms": (i * 37 % 250) / 2,
        }
        if i == 7:
            del msg["ms"]
        out.append(orjson.dumps(msg).decode())
    return out


def aggregate(view: ViewSpec, msgs: Sequence[str], tmp: Path) -> list[dict[str, Any]]:
    """The rows the bounded path produces, collected through Beam's ``WriteToText``."""
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        compiled = build(p, [view], {view.source: CreateSource(tuple(msgs))})
        _ = (
            compiled.views[view.name]
            | beam.Map(lambda r: orjson.dumps(r).decode())
            | beam.io.WriteToText(str(tmp / "reference"), file_name_suffix=".jsonl")
        )
    rows = []
    for part in sorted(tmp.glob("reference*.jsonl")):
        rows += [orjson.loads(line) for line in part.read_bytes().splitlines()]
    return rows


# --- reading files back ---------------------------------------------------------------------


def read_rows(data: bytes, fmt: str, columns: Sequence[Column]) -> list[dict[str, Any]]:
    """Decode a written file into rows comparable with :func:`expected`."""
    if fmt == "jsonl":
        return [orjson.loads(line) for line in data.splitlines()]
    if fmt == "csv":
        reader = csv.reader(io.StringIO(data.decode()))
        header = next(reader)
        assert header == [c.name for c in columns]
        types = {c.name: c.type for c in columns}
        return [
            {name: _csv_cell(cell, types[name]) for name, cell in zip(header, line, strict=True)}
            for line in reader
        ]
    table = pq.read_table(pa.BufferReader(data))
    assert table.schema.names == [c.name for c in columns]
    json_columns = {c.name for c in columns if c.type == "json"}
    return [
        {k: orjson.loads(v) if k in json_columns and v is not None else v for k, v in r.items()}
        for r in table.to_pylist()
    ]


def _csv_cell(cell: str, column_type: str) -> Any:
    if cell == "":
        return None
    if column_type in (KEY, TIMESTAMP, "text"):
        return cell
    return orjson.loads(cell)


def expected(row: dict[str, Any], fmt: str, columns: Sequence[Column]) -> dict[str, Any]:
    """What reading ``row`` back from a file in ``fmt`` gives (see docs/sinks.md)."""
    if fmt == "jsonl":
        return row
    out = {}
    for column in columns:
        value = row.get(column.name)
        if value is not None and column.type == KEY and not isinstance(value, str):
            value = orjson.dumps(value).decode()  # grouping values are text in csv and parquet
        elif value is not None and fmt == "parquet" and column.type == TIMESTAMP:
            value = datetime.fromisoformat(value)
        elif value is not None and fmt == "parquet" and column.type == "double":
            value = float(value)
        out[column.name] = value
    return out


def _key(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, default=str, option=orjson.OPT_SORT_KEYS)


def assert_same_rows(
    got: list[dict[str, Any]], rows: list[dict[str, Any]], fmt: str, columns: Sequence[Column]
) -> None:
    want = [expected(r, fmt, columns) for r in rows]
    assert sorted(got, key=_key) == sorted(want, key=_key)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = aggregate(VIEW, messages(), tmp_path_factory.mktemp("reference"))
    assert len(out) > 10
    return out


def write(
    rows: list[dict[str, Any]],
    directory: Path | str,
    fmt: str,
    *,
    bounded: bool,
    view: ViewSpec = VIEW,
) -> None:
    sink = build_sink(Sink("file", {"path": str(directory), "format": fmt}), Connections())
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        sink.write(p | beam.Create(rows, reshuffle=False), view, bounded=bounded)


# --- bounded ---------------------------------------------------------------------------------


def test_columns_follow_the_row_order(rows: list[dict[str, Any]]) -> None:
    names = [c.name for c in view_columns(VIEW)]
    assert all(list(r) == names for r in rows)
    types = {c.name: c.type for c in view_columns(VIEW)}
    assert types["requests"] == "bigint"
    assert types["ms_q"] == "list<double>"
    assert types["ms_hist"] == "list<bigint>"
    assert types["paths_hll"] == "text"
    assert types["top_paths"] == "json"
    assert types["bytes_per_request"] == "double"


@pytest.mark.parametrize("fmt", FORMATS)
def test_bounded_writes_one_file_per_window(
    fmt: str, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    write(rows, tmp_path, fmt, bounded=True)
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_file[f"{_compact(row['window_start'])}_{_compact(row['window_end'])}.{fmt}"].append(row)
    assert f"20231114T221300Z_20231114T221400Z.{fmt}" in by_file  # a 1m window
    assert f"20231114T220000Z_20231114T230000Z.{fmt}" in by_file  # the 1h window
    folder = tmp_path / "traffic"
    assert {p.name for p in folder.iterdir()} == set(by_file)
    columns = view_columns(VIEW)
    for name, want in by_file.items():
        assert_same_rows(read_rows((folder / name).read_bytes(), fmt, columns), want, fmt, columns)


def _compact(rfc: str) -> str:
    return rfc.replace("-", "").replace(":", "")


def test_bounded_rerun_replaces_files(rows: list[dict[str, Any]], tmp_path: Path) -> None:
    write(rows, tmp_path, "jsonl", bounded=True)
    first = {p.name: p.read_bytes() for p in (tmp_path / "traffic").iterdir()}
    write(rows[:3], tmp_path, "jsonl", bounded=True)
    second = {p.name: p.read_bytes() for p in (tmp_path / "traffic").iterdir()}
    assert set(second) == set(first)
    assert not any(name.endswith(".inprogress") for name in second)
    rewritten = [name for name in second if second[name] != first[name]]
    assert rewritten and all(len(second[n].splitlines()) <= 3 for n in rewritten)


def test_bounded_files_are_deterministic(rows: list[dict[str, Any]], tmp_path: Path) -> None:
    write(rows, tmp_path / "a", "jsonl", bounded=True)
    write(list(reversed(rows)), tmp_path / "b", "jsonl", bounded=True)
    for path in (tmp_path / "a" / "traffic").iterdir():
        assert path.read_bytes() == (tmp_path / "b" / "traffic" / path.name).read_bytes()


def test_sessions_get_one_file_per_utc_day(tmp_path: Path) -> None:
    msgs = [orjson.dumps({"ts": t, "host": "h"}).decode() for t in (86_400 - 60, 86_400 + 60)]
    session_rows = aggregate(SESSIONS, msgs, tmp_path / "ref")
    write(session_rows, tmp_path, "csv", bounded=True, view=SESSIONS)
    assert [p.name for p in (tmp_path / "visits").iterdir()] == ["sessions_19700101.csv"]


def _csv_row(**values: Any) -> dict[str, Any]:
    """One row of VIEW for the CSV tests: ``values`` over nulls and a window."""
    row = dict.fromkeys(c.name for c in view_columns(VIEW))
    row.update(
        view="traffic",
        window_start="2024-01-01T00:00:00Z",
        window_end="2024-01-01T00:01:00Z",
        grouping_set=0,
        pane_timing="ON_TIME",
        pane_index=0,
    )
    return row | values


def test_csv_cells(tmp_path: Path) -> None:
    row = _csv_row(
        host='a,"b"',
        status=200,
        requests=3,
        ms_q=[1.5, 2.0],
        top_paths=[["/x", 2]],
        first_path="/x",
    )
    write([row], tmp_path, "csv", bounded=True)
    (path,) = (tmp_path / "traffic").iterdir()
    header, line = list(csv.reader(io.StringIO(path.read_text())))
    cells = dict(zip(header, line, strict=True))
    assert cells["host"] == 'a,"b"'
    assert cells["status"] == "200"
    assert cells["ms_q"] == "[1.5,2.0]"
    assert cells["top_paths"] == '[["/x",2]]'
    assert cells["first_path"] == '"/x"'  # json columns hold JSON text, strings included
    assert cells["ms_mean"] == ""  # null
    assert cells["granularity"] == ""


def test_csv_quotes_a_bare_carriage_return(tmp_path: Path) -> None:
    """A CR in a value is quoted like a LF (RFC 4180), so that readers keep the record whole."""
    write(
        [_csv_row(host="a\rb", status=200), _csv_row(host="c", status=200)],
        tmp_path,
        "csv",
        bounded=True,
    )
    (path,) = (tmp_path / "traffic").iterdir()
    data = path.read_bytes()
    assert b',"a\rb",' in data
    records = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert [dict(zip(records[0], r, strict=True))["host"] for r in records[1:]] == ["a\rb", "c"]
    read = duckdb.sql(f"SELECT host FROM read_csv('{path}', header = true, all_varchar = true)")
    assert sorted(h for (h,) in read.fetchall()) == ["a\rb", "c"]


#: Text with every character that CSV quoting is about.
CSV_TEXT = st.text(st.sampled_from('ab ,"\r\n\té'), max_size=6)


@given(st.lists(st.tuples(CSV_TEXT, CSV_TEXT), max_size=4))
def test_csv_reads_back_and_only_cr_changes_the_bytes(values: list[tuple[str, str]]) -> None:
    """Every value reads back as written; without a CR the bytes are csv.writer's with
    ``lineterminator="\\n"``, as before CRs were quoted."""
    columns = [Column("a", "text"), Column("b", "text")]
    data = encode_csv([{"a": a, "b": b} for a, b in values], columns)
    records = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert records == [["a", "b"], *map(list, values)]
    if not any("\r" in v for pair in values for v in pair):
        plain = io.StringIO()
        csv.writer(plain, lineterminator="\n").writerows([("a", "b"), *values])
        assert data == plain.getvalue().encode()


def test_parquet_schema(rows: list[dict[str, Any]]) -> None:
    schema = pq.read_table(pa.BufferReader(encode_parquet(rows, view_columns(VIEW)))).schema
    assert schema.field("window_start").type == pa.timestamp("us", tz="UTC")
    assert schema.field("host").type == pa.string()
    assert schema.field("status").type == pa.string()  # numbers as their JSON text
    assert schema.field("grouping_set").type == pa.int64()
    assert schema.field("granularity").type == pa.string()
    assert schema.field("requests").type == pa.int64()
    assert schema.field("bytes").type == pa.float64()
    assert schema.field("ms_q").type == pa.list_(pa.float64())
    assert schema.field("ms_hist").type == pa.list_(pa.int64())
    assert schema.field("top_paths").type == pa.string()
    assert schema.field("pane_index").type == pa.int64()


def test_parquet_types_without_a_builtin() -> None:
    columns = [Column("flag", "boolean"), Column("tags", "list<text>"), Column("j", "json")]
    data = encode_parquet(
        [{"flag": True, "tags": ["x", "y"], "j": {"a": 1}}, {"flag": None, "tags": None, "j": "2"}],
        columns,
    )
    table = pq.read_table(pa.BufferReader(data))
    assert table.schema.field("tags").type == pa.list_(pa.string())
    assert table.to_pylist() == [
        {"flag": True, "tags": ["x", "y"], "j": '{"a":1}'},
        {"flag": None, "tags": None, "j": '"2"'},
    ]


def test_jsonl_writes_integers_beyond_64_bits() -> None:
    assert (
        encode_jsonl([{"v": 2**70, "s": "é"}]) == b'{"v":1180591620717411303424,"s":"\xc3\xa9"}\n'
    )


def test_dead_letters(tmp_path: Path) -> None:
    letters = [
        {
            "view": "traffic",
            "reason": "not_numeric",
            "detail": "x",
            "payload": "{}",
            "source": None,
        },
        {"view": None, "reason": "not_json", "detail": "y", "payload": "{", "source": None},
    ]
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        _ = p | beam.Create(letters) | WriteDeadLetters(str(tmp_path))
    folder = tmp_path / "_dead_letter"
    assert sorted(p.name for p in folder.iterdir()) == ["input.jsonl", "traffic.jsonl"]
    assert read_rows((folder / "input.jsonl").read_bytes(), "jsonl", ()) == [letters[1]]


# --- the output folder of a run ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sibling"), [("out[1]", "out1"), ("out*x", "outAx"), ("out?x", "outAx")]
)
def test_an_output_folder_named_with_glob_characters(
    name: str, sibling: str, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The run touches its own folder's files, never another folder's that its name matches
    as a glob pattern."""
    root, other = tmp_path / name, tmp_path / sibling
    for folder in (root, other):
        (folder / "traffic").mkdir(parents=True)
        (folder / "traffic" / "old.jsonl").write_bytes(b"{}\n")
        (folder / "_SUCCESS").write_bytes(b"")

    def untouched() -> bool:
        files = {p.relative_to(other).as_posix() for p in other.rglob("*")}
        return files == {"_SUCCESS", "traffic", "traffic/old.jsonl"}

    output = OutputFolder(str(root), {"traffic"})
    output.prepare(replace=True)
    assert list(root.iterdir()) == [root / "traffic"]  # no _SUCCESS, no write check left
    assert list((root / "traffic").iterdir()) == []
    assert untouched()
    write(rows, root, "jsonl", bounded=True)
    first = {p.name: p.read_bytes() for p in (root / "traffic").iterdir()}
    write(rows[:3], root, "jsonl", bounded=True)  # replaces the files of its windows
    second = {p.name: p.read_bytes() for p in (root / "traffic").iterdir()}
    assert set(second) == set(first)
    rewritten = [name for name in second if second[name] != first[name]]
    assert rewritten and all(len(second[n].splitlines()) <= 3 for n in rewritten)
    output.finish()
    assert (root / "_SUCCESS").read_bytes() == b""
    assert untouched()


# --- unbounded -------------------------------------------------------------------------------

PART = re.compile(r"^(?P<stem>\d{8}T\d{6}Z_\d{8}T\d{6}Z)-(?P<bundle>[0-9a-f]{32})\.(?P<ext>\w+)$")


def test_part_files_are_never_rewritten(tmp_path: Path) -> None:
    """Two bundles with rows of the same window write two files, each with its own rows."""
    columns = view_columns(VIEW)
    fn = _WritePartFiles(_Files(str(tmp_path), "parquet", columns, None))
    fn.setup()
    row = {c.name: None for c in columns} | {
        "view": "traffic",
        "window_start": "2024-01-01T00:00:00Z",
        "window_end": "2024-01-01T00:01:00Z",
        "host": "a",
        "pane_timing": "EARLY",
        "pane_index": 0,
    }
    written = []
    for pane in range(2):
        fn.start_bundle()
        fn.process((("traffic", "20240101T000000Z_20240101T000100Z"), row | {"pane_index": pane}))
        written += [wv.value for wv in fn.finish_bundle()]
    assert len(set(written)) == 2
    for pane, path in enumerate(written):
        assert PART.match(Path(path).name)["stem"] == "20240101T000000Z_20240101T000100Z"
        assert [
            r["pane_index"] for r in read_rows(Path(path).read_bytes(), "parquet", columns)
        ] == [pane]


STREAM_VIEW = parse_view(
    {
        "name": "clicks",
        "event_time": {"field": "t", "format": "epoch_s"},
        "grouping_cols": ["k"],
        "window": {"size": "1m"},
        "allowed_lateness": "2m",
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "collect_set", "col_name": "k", "aggregated_col_name": "ks"},
        ],
    }
)


def _msg(k: str, t: float) -> TimestampedValue:
    return TimestampedValue(orjson.dumps({"k": k, "t": t}).decode(), t)


def _rfc(value: str | datetime) -> str:
    return value if isinstance(value, str) else value.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_panes_land_in_their_own_files(fmt: str, tmp_path: Path) -> None:
    stream = (
        BeamTestStream()
        .advance_watermark_to(0)
        .add_elements([_msg("a", 5), _msg("a", 10), _msg("b", 70)])
        .advance_watermark_to(61)  # [0, 60) on time: a=2
        .add_elements([_msg("a", 30)])  # late: a=3
        .advance_watermark_to(10_000)  # [60, 120) on time: b=1
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        rows = (p | stream | StreamingAggregate([STREAM_VIEW], clock=lambda: 0.0))["views"]
        _ = rows["clicks"] | WriteViewFiles(
            str(tmp_path),
            "clicks",
            session=False,
            format=fmt,
            columns=view_columns(STREAM_VIEW),
            bounded=False,
        )
        _ = p | "NoDeadLetters" >> beam.Create([]) | WriteDeadLetters(str(tmp_path), bounded=False)
    files = sorted((tmp_path / "clicks").iterdir())
    parts = [PART.match(f.name) for f in files]
    assert all(parts) and {m["ext"] for m in parts} == {fmt}
    columns = view_columns(STREAM_VIEW)
    panes = {
        (r["k"], _rfc(r["window_start"]), r["pane_timing"], r["pane_index"], r["n"]): m["stem"]
        for f, m in zip(files, parts, strict=True)
        for r in read_rows(f.read_bytes(), fmt, columns)
    }
    assert panes == {
        ("a", "1970-01-01T00:00:00Z", "ON_TIME", 0, 2): "19700101T000000Z_19700101T000100Z",
        ("a", "1970-01-01T00:00:00Z", "LATE", 1, 3): "19700101T000000Z_19700101T000100Z",
        ("b", "1970-01-01T00:01:00Z", "ON_TIME", 0, 1): "19700101T000100Z_19700101T000200Z",
    }
    # Each firing wrote its own file: the window [0, 60) has two, nothing was overwritten.
    assert sum(m["stem"] == "19700101T000000Z_19700101T000100Z" for m in parts) == 2
    assert not (tmp_path / "_dead_letter").exists()


# --- errors ---------------------------------------------------------------------------------


def test_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown file format 'avro'; known: jsonl, csv, parquet"):
        build_sink(Sink("file", {"path": "out", "format": "avro"}), Connections())


@pytest.mark.parametrize(
    ("kind", "path", "message"),
    [
        ("s3", "gs://bucket/x", r"sink 's3': path 'gs://bucket/x' must start with s3://"),
        ("gcs", "bucket/x", r"sink 'gcs': path 'bucket/x' must start with gs://"),
        ("file", "", r"sink 'file' needs a path"),
    ],
)
def test_path_errors(kind: str, path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_sink(Sink(kind, {"path": path}), Connections())


def test_csv_needs_columns() -> None:
    with pytest.raises(ValueError, match=r"format 'csv' needs the view's columns"):
        WriteViewFiles("out", "traffic", session=False, format="csv")


def test_parquet_rejects_an_unknown_output_type() -> None:
    with pytest.raises(ValueError, match=r"column 'c' has output type 'uuid'.*known: bigint"):
        WriteViewFiles("out", "v", session=False, format="parquet", columns=[Column("c", "uuid")])


def test_parquet_names_a_value_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match=r"column 'n' is declared bigint but holds a value"):
        encode_parquet([{"n": "many"}], [Column("n", "bigint")])


# --- object-store configuration -------------------------------------------------------------


def test_beam_args_place_s3_for_a_run_that_uses_it_and_never_carry_credentials() -> None:
    connections = Connections(
        s3_endpoint="http://127.0.0.1:9",
        s3_access_key_id="AKIDEXAMPLE",
        s3_secret_access_key="wJalrXUtnFEMI-example-secret",
        s3_region="eu-west-1",
    )
    assert beam_args(connections, ["/data/in.jsonl", "/tmp/out", "gs://b/x"]) == []
    args = beam_args(connections, ["/data/in.jsonl", "s3://bucket/out"])
    assert args == ["--s3_endpoint_url=http://127.0.0.1:9", "--s3_region_name=eu-west-1"]
    options = PipelineOptions(args).view_as(S3Options)
    assert options.s3_endpoint_url == "http://127.0.0.1:9"
    assert options.s3_access_key_id is None and options.s3_secret_access_key is None
    # The sinks get the credentials from their own connections, revealed only there.
    assert "wJalrXUtnFEMI-example-secret" not in repr(connections)
    fs = objectstores.filesystem("s3://bucket/x", connections)
    assert fs._options.view_as(S3Options).s3_secret_access_key == "wJalrXUtnFEMI-example-secret"


def test_sink_filesystem_keeps_the_runs_other_s3_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--s3_disable_ssl`` has no Connections field; the run's flag still reaches the sink."""
    run_options = PipelineOptions(["--s3_disable_ssl", "--s3_region_name=eu-west-1"])
    monkeypatch.setattr(FileSystems, "_pipeline_options", run_options)
    fs = objectstores.filesystem(
        "s3://bucket/x", Connections(s3_endpoint="http://127.0.0.1:9", s3_region="us-east-1")
    )
    options = fs._options.view_as(S3Options)
    assert options.s3_disable_ssl is True
    assert options.s3_region_name == "us-east-1"  # the connection setting wins
    assert options.s3_endpoint_url == "http://127.0.0.1:9"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "sibling"), [("out*x", "outAx"), ("out[1]", "out1"), ("out?x", "outAx")]
)
def test_an_s3_output_folder_named_with_glob_characters(
    s3: S3Connection, name: str, sibling: str, rows: list[dict[str, Any]]
) -> None:
    """On S3 too a run lists and removes only objects under its own prefix, taken literally."""
    boto3 = pytest.importorskip("boto3")
    client = boto3.client("s3", **s3.boto3_kwargs())
    bucket = f"liveagg-files-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    previous = ["_SUCCESS", "traffic/old.jsonl", "traffic/old.parquet", "traffic/notes.txt"]
    for prefix in (name, sibling):
        for key in previous:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=b"{}\n")

    def keys(prefix: str) -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return sorted(o["Key"][len(prefix) :] for o in listed)

    connections = Connections(
        s3_endpoint=s3.endpoint_url,
        s3_access_key_id=s3.access_key_id,
        s3_secret_access_key=s3.secret_access_key,
        s3_region=s3.region,
    )
    root = f"s3://{bucket}/{name}"
    output = OutputFolder(root, {"traffic"}, connections=connections)
    output.prepare(replace=True)
    assert keys(f"{name}/") == ["traffic/notes.txt"]
    assert keys(f"{sibling}/") == sorted(previous)
    sink = build_sink(Sink("s3", {"path": root}), connections)
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        sink.write(p | beam.Create(rows, reshuffle=False), VIEW, bounded=True)
    output.finish()
    written = keys(f"{name}/")
    assert written[0] == "_SUCCESS" and len(written) > 3
    assert keys(f"{sibling}/") == sorted(previous)
