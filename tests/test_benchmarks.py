"""The benchmark's baselines compute the same views as liveagg, on a small input.

Not a timing test: it checks that plain Beam and DuckDB produce the same (key, window) rows
and the same request totals as liveagg, that DuckDB's SQL for the rich and cube views gives
liveagg's exact values and sketches within their bounds of an exact oracle, so that the
benchmark compares equal work.
"""

from __future__ import annotations

import bisect
import math
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from benchmarks import compare, generate
from benchmarks.harness import VIEW_SETS, Result, measure
from benchmarks.run import check_rows, check_values, repeated, summary
from benchmarks.systems import Context, beam_plain, duckdb_sql, liveagg_direct
from benchmarks.systems._views import PlainView, plain_views

EVENTS = 3_000


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Context:
    folder = tmp_path_factory.mktemp("bench")
    dataset = generate.write(folder / "events.jsonl", EVENTS)
    return Context(dataset, EVENTS, folder / "work")


def test_systems_agree_on_rows_and_totals(ctx: Context) -> None:
    results = [liveagg_direct.run(ctx), beam_plain.run(ctx), duckdb_sql.run(ctx)]
    check_rows(results)  # raises when rows per view differ
    check_values(results, ctx.views)  # raises when counts, sums or means differ
    assert all(sum(r.rows.values()) > EVENTS / 2 for r in results)
    for view in ("org_traffic", "site_country", "user_activity"):
        totals = [
            _requests(str(ctx.work / "liveagg" / view / "*.jsonl")),
            _requests(str(ctx.work / "beam" / view / "part*")),
            _requests(str(ctx.work / "duckdb" / f"{view}.jsonl")),
        ]
        assert totals == [EVENTS] * 3, (view, totals)
    assert Path(ctx.dataset).read_bytes().count(b"\n") == EVENTS


def _requests(pattern: str) -> int:
    query = f"SELECT sum(requests)::BIGINT FROM read_json('{pattern}', format='newline_delimited')"
    return duckdb.connect().execute(query).fetchall()[0][0]


def test_skew_compares_exact_columns_and_balance() -> None:
    """benchmarks.skew fails on a differing count or key, not on a different HLL estimate."""
    from benchmarks.skew import Row, check_same

    row = {"requests": 3, "total_bytes": 10, "mean_latency_ms": 1.5, "unique_users": 3}
    one = {("w", "org-1"): row}
    check_same(one, {("w", "org-1"): {**row, "unique_users": 2}})
    with pytest.raises(SystemExit):
        check_same(one, {("w", "org-1"): {**row, "requests": 4}})
    with pytest.raises(SystemExit):
        check_same(one, {("w", "org-2"): row})
    assert Row("p", "t", [30, 10, 10, 10], 1.0, 1.0, 60).max_over_mean == 2.0


# --- the rich and cube view sets: DuckDB's SQL against liveagg and an exact oracle ---------


@pytest.fixture(scope="module")
def rich_cube(tmp_path_factory: pytest.TempPathFactory) -> tuple[Context, Result, Result]:
    """liveagg and the DuckDB baseline on the rich and cube views, in one run each."""
    folder = tmp_path_factory.mktemp("rich")
    views = folder / "views"
    views.mkdir()
    for name in ("rich", "cube"):
        for path in VIEW_SETS[name].glob("*.json"):
            shutil.copy(path, views / path.name)
    ctx = Context(generate.write(folder / "events.jsonl", EVENTS), EVENTS, folder / "work", views)
    return ctx, liveagg_direct.run(ctx), duckdb_sql.run(ctx)


def test_rich_and_cube_rows_and_exact_values_agree(
    rich_cube: tuple[Context, Result, Result],
) -> None:
    ctx, live, duck = rich_cube
    assert sorted(live.rows) == ["cdn_cube", "rich_org_country_day", "rich_site_hour"]
    check_rows([live, duck])
    check_values([live, duck], ctx.views)  # count, sum, min, max, exact distinct, histogram
    for view in plain_views(ctx.views):
        # Every event is in each grouping set at each granularity once.
        copies = len(view.grouping_sets or [()]) * len(view.windows)
        for output in (live.output, duck.output):
            rows = compare.keyed(Path(output), view)
            assert sum(r["requests"] for r in rows.values()) == EVENTS * copies


def _groups(events: list[dict[str, Any]], view: PlainView) -> dict[compare.Key, list[dict]]:
    """The oracle's grouping: each event into its window, granularity and grouping set."""
    groups: dict[compare.Key, list[dict]] = defaultdict(list)
    sets = view.grouping_sets if view.grouping_sets is not None else [view.group]
    for event in events:
        t = datetime.fromisoformat(event["ts"]).timestamp()
        for seconds, size in view.windows:
            start = datetime.fromtimestamp(t // seconds * seconds, UTC)
            for index, kept in enumerate(sets):
                key = (
                    start,
                    size if view.multi_granularity else None,
                    index if view.grouping_sets is not None else None,
                    *(event[g] if g in kept else None for g in view.group),
                )
                groups[key].append(event)
    return groups


def _top_k(values: list[Any], k: int) -> list[list[Any]]:
    counts: dict[Any, int] = defaultdict(int)
    for value in values:
        counts[value] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], isinstance(item[0], str), item[0]))
    return [[value, n] for value, n in ranked[:k]]


def _rank_miss(values: list[float], q: float, v: float) -> float:
    """How far rank ``q`` lies outside the ranks that ``v`` holds among ``values``."""
    xs = sorted(values)
    low, high = bisect.bisect_left(xs, v) / len(xs), bisect.bisect_right(xs, v) / len(xs)
    return max(low - q, q - high, 0.0)


#: Standard errors of the two HyperLogLogs: liveagg's DataSketches HLL at lg_k=12 (1.04 / 64),
#: DuckDB's with 64 registers (sqrt(pi / 2) / 8, ``HyperLogLogP<6>`` in its hyperloglog.hpp).
HLL_RSE = {"liveagg": 1.04 / 64, "duckdb": math.sqrt(math.pi / 2) / 8}


def test_rich_and_cube_sketches_within_bounds_of_exact(
    rich_cube: tuple[Context, Result, Result],
) -> None:
    """HyperLogLog, quantiles and top-k of both systems against exact values from the events."""
    ctx, live, duck = rich_cube
    events = [orjson.loads(line) for line in ctx.dataset.open("rb")]
    checked: dict[str, int] = defaultdict(int)
    for view in plain_views(ctx.views):
        groups = _groups(events, view)
        outputs = {
            "liveagg": compare.keyed(Path(live.output), view),
            "duckdb": compare.keyed(Path(duck.output), view),
        }
        for system, rows in outputs.items():
            assert rows.keys() == groups.keys(), (system, view.name)
        for key, members in groups.items():
            for agg in view.aggregations:
                values = [e[agg.column] for e in members if agg.column]
                got = {system: rows[key][agg.output] for system, rows in outputs.items()}
                check = _SKETCH_CHECKS.get(agg.kind)
                if check is not None:
                    check(agg.params, values, got)
                    checked[agg.kind] += 1
    assert checked["count_distinct"] > 10_000
    assert checked["approx_quantiles"] > 1_000
    assert checked["top_k"] > 1_000


def _check_hll(params: Any, values: list[Any], got: dict[str, Any]) -> None:
    exact = len(set(values))
    for system, estimate in got.items():
        assert abs(estimate - exact) <= max(1.0, 3 * HLL_RSE[system] * exact), (system, got, exact)


def _check_quantiles(params: Any, values: list[Any], got: dict[str, Any]) -> None:
    xs = sorted(float(v) for v in values)
    k = params.get("k", 200)
    assert len(xs) <= k  # so that KLL keeps every value and its quantiles are exact
    exact = [xs[max(math.ceil(q * len(xs)) - 1, 0)] for q in params["quantiles"]]
    assert got["liveagg"] == exact
    # DuckDB's T-Digest interpolates: its value must hold a rank within one value and 2%.
    for q, v in zip(params["quantiles"], got["duckdb"], strict=True):
        assert _rank_miss(xs, q, v) <= 1 / len(xs) + 0.02, (q, v, xs)


def _check_top_k(params: Any, values: list[Any], got: dict[str, Any]) -> None:
    assert len(set(values)) <= 768  # the frequent-items map holds them all: exact counts
    exact = _top_k(values, params["k"])
    assert got == {"liveagg": exact, "duckdb": exact}


_SKETCH_CHECKS: dict[str, Callable[[Any, list[Any], dict[str, Any]], None]] = {
    "count_distinct": _check_hll,
    "approx_quantiles": _check_quantiles,
    "top_k": _check_top_k,
}


def test_check_values_names_differing_rows(tmp_path: Path) -> None:
    """A wrong exact value or a missing row fails the run; a different sketch does not."""
    view = next(v for v in plain_views(VIEW_SETS["rich"]) if v.name == "rich_site_hour")
    row = {
        "window_start": "2024-03-01T00:00:00Z",
        "site": "site-1",
        "requests": 3,
        "unique_users": 3,
        "exact_users": 3,
        "latency_stddev": 1.0,
        "bytes_histogram": [1, 2, 0, 0, 0, 0],
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "rich_site_hour.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    cases = {
        "same": ({**row, "window_start": "2024-03-01 00:00:00+00", "unique_users": 2}, []),
        "count": ({**row, "requests": 4}, ["requests 3 != 4"]),
        "histogram": ({**row, "bytes_histogram": [2, 1, 0, 0, 0, 0]}, ["bytes_histogram"]),
        "float": ({**row, "latency_stddev": 1.001}, ["latency_stddev 1.0 != 1.001"]),
        "key": ({**row, "site": "site-2"}, ["only in", "only in"]),
    }
    for name, (other, expected) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "rich_site_hour.jsonl").write_bytes(orjson.dumps(other) + b"\n")
        problems = compare.differences(tmp_path / "a", folder, view)
        assert len(problems) == len(expected), (name, problems)
        for problem, needle in zip(problems, expected, strict=True):
            assert needle in problem, (name, problem)


def test_repeated_input_keeps_pairs_and_multiplies_events(tmp_path: Path) -> None:
    source = generate.write(tmp_path / "events.jsonl", 50)
    lines = source.read_bytes().splitlines(keepends=True)
    assert repeated(source, 3).read_bytes() == b"".join(line * 3 for line in lines)


def test_summary_ratios_and_targets() -> None:
    def result(system: str, cpu_s: float) -> Result:
        return Result(system, 1_000_000, cpu_s, cpu_s, 100.0)

    runs = [result("liveagg-direct", 10.0), result("duckdb-1-thread", 4.0)]
    runs.append(result("liveagg-baseline", 30.0))
    s = summary("rich", runs)
    assert s["liveagg_over_duckdb_cpu"] == 2.5
    assert s["baseline_over_duckdb_cpu"] == 7.5
    assert s["baseline_over_liveagg_cpu"] == 3.0
    assert s["ratio_target_met"] is False  # rich: at most 2x DuckDB's CPU
    assert s["rate_target_met"] is False  # 100,000 events/CPU-s < 200,000
    assert summary("cube", runs)["ratio_target_met"] is True  # cube: at most 2.5x


def test_measure_reports_the_commands_peak_memory_not_the_harness() -> None:
    """A child's ``ru_maxrss`` starts from the high-water mark of the process it replaced;
    ``measure`` starts the command from a bare launcher, so a large harness does not show."""
    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))  # touch every page
    grow = "b = bytearray(100 * 2**20)\nb[::4096] = b'\\x01' * len(range(0, len(b), 4096))"
    m = measure([sys.executable, "-c", grow])
    assert 100 <= m.peak_rss_mb < 200, m
    assert len(ballast) == 400 * 2**20


def test_running_counters_and_fixed_windows_count_the_same(tmp_path: Path) -> None:
    from benchmarks import counters

    dataset = generate.write(tmp_path / "events.jsonl", EVENTS)
    running, fixed = counters.counters(dataset, EVENTS, 1, tmp_path / "work")  # totals agree
    assert sum(n for n, _ in counters.totals(Path(running.output) / "running_counters").values())
    assert running.rows["running_counters"] < fixed.rows["fixed_counters"]  # a row per post
    assert running.extra["milestones"] > 0


def test_churn_keys_are_each_active_once(tmp_path: Path) -> None:
    from benchmarks import counters

    path = counters.write_churn(tmp_path / "churn.jsonl", 3_000, keys=1_000)
    posts = [orjson.loads(line)["post"] for line in path.read_bytes().splitlines()]
    assert len(posts) == 3_000 and len(set(posts)) == 1_000
    assert posts == sorted(posts)  # each post's likes come together, then never again
    [result] = [
        r for r in counters.churn(path, 3_000, tmp_path / "work") if r.extra["state_ttl"] == "1h"
    ]
    assert result.rows == {"ttl_1h": 1_000}


@pytest.mark.parametrize("name", ["ttl_1h", "ttl_never"])
def test_streaming_churn_evicts_keys_only_with_a_ttl(tmp_path: Path, name: str) -> None:
    """The streaming operator's churn rows measure eviction, not something else: with
    ``state_ttl`` 1h, the keys whose last like is an hour behind the watermark have left
    state, each with a last row holding its whole total; without, every key stays. DuckDB
    reads the totals and last likes from the same file."""
    from benchmarks import counters, streaming_churn
    from liveagg.loader import parse_view

    path = counters.write_churn(tmp_path / "churn.jsonl", 30_000, keys=3_000)
    view = parse_view(counters.CHURN_VIEW | {"name": name, "state_ttl": counters.CHURN_TTLS[name]})
    with path.open("rb") as lines:
        report = streaming_churn.drive(view, lines, bundle=500, sample_every=5, keep_rows=True)
    assert report.events == 30_000
    watermark = report.samples[-1].watermark_us // 1000
    ttl_ms = view.state_ttl.micros // 1000
    totals = {
        post: (likes, weight, last)
        for post, likes, weight, last in duckdb.sql(
            f"SELECT post, count(*), sum(weight), max(ts) FROM read_json_auto('{path}') "
            "GROUP BY post"
        ).fetchall()
    }
    gone = {post for post, (_, _, last) in totals.items() if last + ttl_ms <= watermark}
    summary = report.summary()
    assert summary["live_keys_end"] == len(totals) - len(gone)
    if name == "ttl_never":
        assert not gone and summary["live_keys_end"] == 3_000
        return
    assert len(gone) > 2_900  # all but the last hour's posts
    assert summary["live_keys_peak"] < 300  # a bundle's posts and an hour's, not all 3,000
    for post in gone:  # its row at eviction holds all its likes
        row = report.last_rows[(name, None, post)]
        assert (row["likes"], row["weight"]) == totals[post][:2], (post, row)


def test_streaming_drive_of_the_basic_views_ends_with_every_window_closed(ctx: Context) -> None:
    """The streaming drive (``benchmarks/streaming_churn.py``) of the three basic views, with
    messages as the Kafka read hands them on and every window closed at the end: no key is
    left in state, and the latest row of each (key, window) holds DuckDB's count of its
    messages. Windows close in the same watermark advance, so a timer that a firing sets
    again must not be dropped by one listed before it."""
    from benchmarks import streaming_churn
    from liveagg.loader import load_views
    from liveagg.transforms.eventtime import rfc3339

    views = load_views(VIEW_SETS["basic"])
    with Path(ctx.dataset).open("rb") as lines:
        report = streaming_churn.drive_views(
            views, lines, bundle=250, kafka=True, close=True, keep_rows=True
        )
    assert report.events == EVENTS and report.summary()["live_keys_end"] == 0
    assert set(report.stages_cpu_s) == {"route", "wire", "operator", "timers"}
    got = {
        (view, start, *key): row["requests"]
        for (view, start, *key), row in report.last_rows.items()
    }
    expected = {}
    for view in views:
        size = view.window.sizes[0].micros // 1_000_000
        cols = ", ".join(f'"{c}"' for c in view.grouping_cols)
        query = (
            f"SELECT epoch_us(time_bucket(to_seconds({size}), ts::TIMESTAMP))::BIGINT, {cols}, "
            f"count(*) FROM read_json_auto('{ctx.dataset}') GROUP BY ALL"
        )
        for start, *key, count in duckdb.sql(query).fetchall():
            expected[(view.name, rfc3339(start), *key)] = count
    assert got == expected
