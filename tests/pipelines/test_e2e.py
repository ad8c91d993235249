"""``liveagg run`` end to end on generated data, every row checked against the DuckDB oracle."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from liveagg.loader import load_views, parse_view
from tests.support.cli import liveagg, rows_in
from tests.support.compare import assert_rows_match
from tests.support.custom import Complete
from tests.support.datagen import generate
from tests.support.oracle import expected_rows

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "view_schemas" / "examples"

#: Views beyond the examples, so that every aggregation and window type meets the oracle.
EXTRA_VIEWS = [
    {
        "name": "every_aggregation",
        "event_time": {"field": "timestamp_ms", "format": "epoch_ms"},
        "grouping_cols": ["country"],
        "window": {"size": "15m"},
        "filter": {"field": "kind", "op": "eq", "value": "cdn"},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "requests"},
            {"aggregation": "count", "col_name": "bytes", "aggregated_col_name": "with_bytes"},
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
            {"aggregation": "min", "col_name": "latency_ms", "aggregated_col_name": "lat_min"},
            {"aggregation": "max", "col_name": "latency_ms", "aggregated_col_name": "lat_max"},
            {"aggregation": "mean", "col_name": "latency_ms", "aggregated_col_name": "lat_mean"},
            {"aggregation": "variance", "col_name": "bytes", "aggregated_col_name": "bytes_var"},
            {
                "aggregation": "stddev",
                "col_name": "latency_ms",
                "aggregated_col_name": "lat_sd",
                "params": {"ddof": 0},
            },
            {"aggregation": "count_distinct", "col_name": "path", "aggregated_col_name": "paths"},
            {
                "aggregation": "count_distinct_exact",
                "col_name": "path",
                "aggregated_col_name": "paths_exact",
            },
            {"aggregation": "hll_sketch", "col_name": "path", "aggregated_col_name": "paths_hll"},
            {
                "aggregation": "approx_quantiles",
                "col_name": "latency_ms",
                "aggregated_col_name": "lat_q",
                "params": {"quantiles": [0.5, 0.9, 0.99]},
            },
            {"aggregation": "top_k", "col_name": "cache", "aggregated_col_name": "caches"},
            {"aggregation": "first", "col_name": "path", "aggregated_col_name": "first_path"},
            {"aggregation": "last", "col_name": "path", "aggregated_col_name": "last_path"},
            {
                "aggregation": "histogram",
                "col_name": "latency_ms",
                "aggregated_col_name": "lat_hist",
                "params": {"bounds": [10, 50, 100, 500]},
            },
            {"aggregation": "collect_set", "col_name": "method", "aggregated_col_name": "methods"},
        ],
        "derived": [{"name": "bytes_per_request", "expr": "bytes / requests"}],
    },
    {
        "name": "sliding_orgs",
        "event_time": {"field": "ts"},
        "grouping_cols": ["org"],
        "window": {"type": "sliding", "size": "10m", "period": "5m"},
        "filter": {"all": [{"field": "kind", "op": "eq", "value": "network"}]},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "flows"},
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
        ],
    },
    {
        "name": "user_sessions",
        "event_time": {"field": "ts", "format": "iso8601"},
        "grouping_cols": ["user_id"],
        "window": {"type": "session", "gap": "2m"},
        "filter": {"field": "event_type", "op": "in", "value": ["like", "view", "share"]},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "events"},
            {
                "aggregation": "count_distinct_exact",
                "col_name": "post_id",
                "aggregated_col_name": "posts",
            },
        ],
    },
]

#: A dotted field name, read nested, as a literal dotted key, or neither (the generator writes
#: every case). Run on its own: a dotted name keeps a whole run off the engine's fast path.
DOTTED_VIEW = {
    "name": "edge_pops",
    "event_time": {"field": "ts"},
    "grouping_cols": ["edge.pop"],
    "window": {"size": "30m"},
    "filter": {"field": "kind", "op": "eq", "value": "cdn"},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "requests"},
        {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
    ],
}


def _write_views(folder: Path) -> list[Path]:
    paths = []
    for view in EXTRA_VIEWS:
        path = folder / f"{view['name']}.json"
        path.write_text(json.dumps(view, indent=2))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("e2e")
    events = folder / "events.jsonl"
    generated = generate(events, 30_000, seed=7, keys=400, span_s=4 * 3600)
    views_dir = folder / "views"
    views_dir.mkdir()
    extra = _write_views(views_dir)
    view_paths = [*sorted(EXAMPLES.glob("*.json")), *extra]
    return {"events": events, "generated": generated, "views": view_paths, "folder": folder}


@pytest.fixture(scope="module")
def bounded_run(data: dict) -> Path:
    out = data["folder"] / "out"
    liveagg(
        "run",
        "--views",
        *map(str, data["views"]),
        "--input",
        str(data["events"]),
        "--output",
        str(out),
    )
    return out


def _all_views(data: dict) -> list:
    return load_views(data["views"])


@pytest.mark.parametrize(
    "name",
    [v.name for v in load_views([EXAMPLES])] + [v["name"] for v in EXTRA_VIEWS],
)
def test_rows_equal_the_oracle(data: dict, bounded_run: Path, name: str) -> None:
    view = next(v for v in _all_views(data) if v.name == name)
    actual = rows_in(bounded_run / name)
    expected = expected_rows(view, data["events"])
    assert expected, "the generated data must produce rows for every view"
    assert_rows_match(actual, expected, view)


def test_dotted_field_names_equal_the_oracle(data: dict) -> None:
    path = data["folder"] / "views_dotted" / "edge_pops.json"
    path.parent.mkdir()
    path.write_text(json.dumps(DOTTED_VIEW))
    out = data["folder"] / "out_dotted"
    liveagg("run", "--views", str(path), "--input", str(data["events"]), "--output", str(out))
    view = parse_view(DOTTED_VIEW)
    expected = expected_rows(view, data["events"])
    assert {r["edge.pop"] for r in expected} >= {None, "fra1"}  # nested, literal, null
    assert_rows_match(rows_in(out / view.name), expected, view)


def test_every_bad_line_is_a_dead_letter(data: dict, bounded_run: Path) -> None:
    lines = data["events"].read_bytes().splitlines()
    unusable = 0
    for line in lines:
        try:
            if not isinstance(orjson.loads(line), dict):
                unusable += 1
        except orjson.JSONDecodeError:
            unusable += line.strip() != b""
    letters = rows_in(bounded_run / "_dead_letter")
    input_letters = [d for d in letters if d["view"] is None]
    assert len(input_letters) == unusable > 0
    assert {d["reason"] for d in input_letters} == {"not_json", "not_an_object"}
    reasons = {d["reason"] for d in letters if d["view"] is not None}
    assert {"missing_event_time", "invalid_event_time", "not_numeric"} <= reasons
    for letter in letters:
        assert letter["detail"] and letter["payload"] is not None


def test_streaming_operator_gives_the_same_rows(data: dict, bounded_run: Path) -> None:
    """The streaming window operator on bounded input: one ON_TIME pane per window, same rows."""
    out = data["folder"] / "out_streaming"
    small = [p for p in data["views"] if p.stem in ("network_telemetry", "user_sessions")]
    assert len(small) == 2
    liveagg(
        "run",
        "--streaming",
        "--views",
        *map(str, small),
        "--input",
        str(data["events"]),
        "--output",
        str(out),
    )
    for path in small:
        streamed = sorted(rows_in(out / path.stem), key=orjson.dumps)
        bounded = sorted(rows_in(bounded_run / path.stem), key=orjson.dumps)
        assert streamed == bounded


def test_invalid_view_fails_with_file_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**EXTRA_VIEWS[1], "window": {"size": "10 minutes"}}))
    result = liveagg("run", "--views", str(bad), "--input", str(bad), ok=False)
    assert result.returncode == 1
    assert f"{bad}: $.window" in result.stderr


def test_parse_view_round_trip() -> None:
    view = parse_view(EXTRA_VIEWS[0], origin="mem")
    assert view.name == "every_aggregation"
    assert len(view.aggregations) == len(EXTRA_VIEWS[0]["aggregation_info"])


class RowCount(Complete):
    """A custom count of messages: ``counts_rows``, so it needs no ``col_name``; it adds the
    1 it is fed per message."""

    counts_rows = True

    def output_type(self) -> str:
        return "bigint"


def test_a_custom_aggregation_that_counts_rows_counts_as_count_does(tmp_path: Path) -> None:
    """It failed the run (``'NoneType' object is not iterable``): nothing fed it the 1 per
    message that ``counts_rows`` promises."""
    view = {
        "name": "counted",
        "event_time": {"field": "ts"},
        "grouping_cols": ["k"],
        "window": {"size": "1m"},
        "aggregation_info": [
            {
                "aggregation": "custom",
                "aggregated_col_name": "custom_n",
                "params": {"combine_fn": "tests.pipelines.test_e2e:RowCount"},
            },
            {"aggregation": "count", "aggregated_col_name": "n"},
        ],
    }
    (tmp_path / "v.json").write_text(json.dumps(view))
    lines = [json.dumps({"ts": 1_700_000_000 + 7 * i, "k": f"k{i % 3}"}) for i in range(100)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    liveagg(
        "run",
        "--views",
        str(tmp_path / "v.json"),
        "--input",
        str(tmp_path / "in.jsonl"),
        "--output",
        str(out),
    )
    rows = rows_in(out / "counted")
    assert rows and all(r["custom_n"] == r["n"] for r in rows)
    assert sum(r["n"] for r in rows) == 100
