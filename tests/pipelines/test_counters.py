"""Running counters end to end: global and cumulative windows and milestones of a bounded run,
every row and every milestone checked against the DuckDB oracle."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path

import orjson
import pytest

from liveagg.loader import load_views
from liveagg.spec import ViewSpec
from tests.support.cli import liveagg, rows_in
from tests.support.compare import assert_milestones_match, assert_rows_match
from tests.support.datagen import generate
from tests.support.oracle import expected_milestones, expected_rows, parse_instant

pytestmark = pytest.mark.e2e

EPOCH_MS = {"field": "timestamp_ms", "format": "epoch_ms"}
ENGAGEMENT = {"field": "kind", "op": "eq", "value": "engagement"}

VIEWS = [
    {
        # Running totals per post and event type and per event type, milestones on both.
        "name": "post_totals",
        "event_time": EPOCH_MS,
        "grouping_cols": ["post_id", "event_type"],
        "grouping_sets": [["post_id", "event_type"], ["event_type"]],
        "window": {"type": "global"},
        "emit": {"early": "10s", "eager": {"column": "events", "below": 10}},
        "state_ttl": "30d",
        "filter": ENGAGEMENT,
        "milestones": [
            {"column": "events", "at": [5, 20, 100, 1000, 5000]},
            {"column": "dwell", "at": [100000, 1000000.0]},
            {"column": "longest", "at": [-1000, 0, 50000]},  # any numbers, ascending
        ],
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "events"},
            {"aggregation": "sum", "col_name": "dwell_ms", "aggregated_col_name": "dwell"},
            {"aggregation": "max", "col_name": "dwell_ms", "aggregated_col_name": "longest"},
            {
                "aggregation": "count_distinct_exact",
                "col_name": "user_id",
                "aggregated_col_name": "users",
            },
        ],
        "derived": [{"name": "dwell_per_event", "expr": "dwell / events"}],
    },
    {
        # One grand total for all time: no grouping columns, no bounds.
        "name": "grand_total",
        "event_time": {"field": "ts"},
        "grouping_cols": [],
        "window": {"type": "global"},
        "emit": {"early": "1m"},
        "state_ttl": "1d",
        "milestones": [{"column": "messages", "at": [1000, 20000, 10**9]}],
        "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "messages"}],
    },
    {
        # Prefixes of 6-hour and daily periods, hour by hour, with grouping sets and derived
        # columns; milestones shared by a period's windows.
        "name": "cumulative_hosts",
        "event_time": {"field": "ts", "format": "iso8601"},
        "grouping_cols": ["host", "cache"],
        "grouping_sets": [["host", "cache"], ["host"], []],
        "window": {"type": "cumulative", "size": ["6h", "1d"], "step": "1h"},
        "filter": {"field": "kind", "op": "eq", "value": "cdn"},
        "milestones": [{"column": "requests", "at": [10, 100, 1000]}],
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "requests"},
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
            {"aggregation": "mean", "col_name": "latency_ms", "aggregated_col_name": "latency"},
            {"aggregation": "first", "col_name": "path", "aggregated_col_name": "first_path"},
        ],
        "derived": [{"name": "bytes_per_request", "expr": "bytes / requests"}],
    },
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("counters")
    events = folder / "events.jsonl"
    # Two days and a half: cumulative periods of both sizes begin and end inside the data.
    generate(events, 24_000, seed=11, keys=150, span_s=60 * 3600)
    views = folder / "views.json"
    views.write_text(json.dumps({"views": VIEWS}))
    out = folder / "out"
    summary = liveagg("run", "--views", str(views), "--input", str(events), "--output", str(out))
    return {"events": events, "out": out, "summary": summary.stdout, "views": load_views(views)}


def _view(run: dict, name: str) -> ViewSpec:
    return next(v for v in run["views"] if v.name == name)


@pytest.mark.parametrize("name", [v["name"] for v in VIEWS])
def test_rows_equal_the_oracle(run: dict, name: str) -> None:
    view = _view(run, name)
    expected = expected_rows(view, run["events"])
    assert expected
    assert_rows_match(rows_in(run["out"] / name), expected, view)


@pytest.mark.parametrize("name", [v["name"] for v in VIEWS])
def test_milestones_are_exactly_those_the_final_values_reach(run: dict, name: str) -> None:
    view = _view(run, name)
    expected = expected_milestones(view, expected_rows(view, run["events"]))
    path = run["out"] / "_milestones" / f"{name}.jsonl"
    actual = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    # The data reaches several thresholds of every view (not the grand total's 10**9).
    assert len(expected) >= (2 if name == "grand_total" else 20)
    assert_milestones_match(actual, expected)
    assert f"  {len(actual)} milestones -> {path}\n" in run["summary"]


def test_global_rows_have_no_window_and_one_file(run: dict) -> None:
    folder = run["out"] / "post_totals"
    rows = rows_in(folder)
    # Spread over 16 files by key: a key's row is in the file its key's CRC-32 says.
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"global-{i:02d}.jsonl" for i in range(16)]
    for path in folder.iterdir():
        for line in path.read_bytes().splitlines():
            row = orjson.loads(line)
            key = orjson.dumps([row["post_id"], row["event_type"], row["grouping_set"]])
            assert path.name == f"global-{zlib.crc32(key) % 16:02d}.jsonl"
    assert all("window_start" not in r and "window_end" not in r for r in rows)
    assert {(r["pane_timing"], r["pane_index"]) for r in rows} == {("ON_TIME", 0)}
    keys = Counter((r["grouping_set"], r["post_id"], r["event_type"]) for r in rows)
    assert max(keys.values()) == 1  # one row per key for all time
    [total] = rows_in(run["out"] / "grand_total")
    assert set(total) == {"view", "messages", "pane_timing", "pane_index"}


def test_cumulative_windows_are_prefixes_of_their_period(run: dict) -> None:
    rows = rows_in(run["out"] / "cumulative_hosts")
    hour = 3_600_000_000
    by_period: dict[tuple, list[dict]] = {}
    for row in rows:
        start, end = parse_instant(row["window_start"]), parse_instant(row["window_end"])
        size = {"6h": 6 * hour, "1d": 24 * hour}[row["granularity"]]
        assert start % size == 0 and (end - start) % hour == 0 and 0 < end - start <= size
        key = (row["granularity"], row["grouping_set"], row["host"], row["cache"], start)
        by_period.setdefault(key, []).append(row)
    # Each later prefix holds at least what an earlier one does.
    for windows in by_period.values():
        counts = [r["requests"] for r in sorted(windows, key=lambda r: r["window_end"])]
        assert counts == sorted(counts)
    assert {row["granularity"] for row in rows} == {"6h", "1d"}


def test_a_periods_milestone_comes_from_its_first_window_that_reaches_it(run: dict) -> None:
    path = run["out"] / "_milestones" / "cumulative_hosts.jsonl"
    events = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    rows = rows_in(run["out"] / "cumulative_hosts")
    hour = 3_600_000_000
    earlier = 0
    for event in events:
        start, end = parse_instant(event["window_start"]), parse_instant(event["window_end"])
        assert end - start == {"6h": 6 * hour, "1d": 24 * hour}[event["granularity"]]
        final = next(
            r
            for r in rows
            if (r["window_start"], r["window_end"], r["granularity"], r["grouping_set"])
            == (
                event["window_start"],
                event["window_end"],
                event["granularity"],
                event["grouping_set"],
            )
            and (r["host"], r["cache"]) == (event["host"], event["cache"])
        )
        assert event["threshold"] <= event["value"] <= final["requests"]
        earlier += event["value"] < final["requests"]
    assert earlier > 0  # some fire before the period's last window: not from final values


def test_a_run_replaces_the_milestones_folder(run: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = out / "_milestones" / "stale.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n")
    views = tmp_path / "one.json"
    views.write_text(json.dumps(VIEWS[1]))
    liveagg("run", "--views", str(views), "--input", str(run["events"]), "--output", str(out))
    assert not stale.exists()  # a bounded run owns the folders it writes
    written = (out / "_milestones" / "grand_total.jsonl").read_bytes()
    assert written == (run["out"] / "_milestones" / "grand_total.jsonl").read_bytes()
    assert (out / "_SUCCESS").exists()


def test_milestones_need_a_destination(run: dict, tmp_path: Path) -> None:
    views = tmp_path / "one.json"
    views.write_text(json.dumps(VIEWS[1] | {"sinks": [{"type": "kafka", "topic": "t"}]}))
    result = liveagg("run", "--views", str(views), "--input", str(run["events"]), ok=False)
    assert result.returncode == 2
    assert (
        "no output for the milestones of view grand_total: give --output DIR or "
        "--milestone-topic TOPIC" in result.stderr
    )


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ([], "no view declares milestones"),
        (["--intermediate-topic", "partials"], "level 1 fires no milestones; give it to "),
    ],
    ids=["no milestones", "level 1"],
)
def test_a_milestone_topic_that_would_get_nothing_is_refused(
    run: dict, tmp_path: Path, extra: list[str], why: str
) -> None:
    """As an unknown option is: never a run that silently ignores what it was given."""
    views = tmp_path / "one.json"
    plain = {k: x for k, x in VIEWS[1].items() if k != "milestones"}
    views.write_text(json.dumps(plain if not extra else VIEWS[1]))
    args = ["--input", str(run["events"]), "--output", str(tmp_path / "out")]
    args += ["--milestone-topic", "events", "--kafka-bootstrap", "127.0.0.1:1", *extra]
    result = liveagg("run", "--views", str(views), *args, ok=False)
    assert result.returncode == 2
    assert f"liveagg run: error: --milestone-topic events: {why}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bounded_run_counts_over_all_input_whatever_the_state_ttl(tmp_path: Path) -> None:
    """docs/semantics.md, "State TTL": a bounded run's watermark reaches the end only after
    all input, so a key quiet for longer than ``state_ttl`` keeps its total, and ``emit.eager``
    adds no pane: one ON_TIME row per key, milestones from its total over all the input."""
    views = tmp_path / "ttl.json"
    views.write_text(
        json.dumps(
            VIEWS[1]
            | {
                "grouping_cols": ["k"],
                "state_ttl": "1h",
                "emit": {"early": "1m", "eager": {"column": "messages", "below": 10}},
                "milestones": [{"column": "messages", "at": [2, 3]}],
            }
        )
    )
    events = tmp_path / "events.jsonl"
    days = ["2024-03-01T00:00:00Z", "2024-03-02T00:00:00Z", "2024-03-09T12:00:00Z"]
    events.write_text("".join(f'{{"k": "a", "ts": "{day}"}}\n' for day in days))
    out = tmp_path / "out"
    liveagg("run", "--views", str(views), "--input", str(events), "--output", str(out))
    assert rows_in(out / "grand_total") == [
        {"view": "grand_total", "k": "a", "messages": 3, "pane_timing": "ON_TIME", "pane_index": 0}
    ]
    fired = rows_in(out / "_milestones")
    assert [(e["k"], e["threshold"], e["value"]) for e in fired] == [("a", 2, 3), ("a", 3, 3)]
