"""The benchmark's baselines compute the same views as liveagg, on a small input.

Not a timing test: it checks that plain Beam and DuckDB produce the same (key, window) rows
and the same request totals as liveagg, so that the benchmark compares equal work.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from benchmarks import generate
from benchmarks.run import check_rows
from benchmarks.systems import Context, beam_plain, duckdb_sql, liveagg_direct

EVENTS = 3_000


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Context:
    folder = tmp_path_factory.mktemp("bench")
    dataset = generate.write(folder / "events.jsonl", EVENTS)
    return Context(dataset, EVENTS, folder / "work")


def test_systems_agree_on_rows_and_totals(ctx: Context) -> None:
    results = [liveagg_direct.run(ctx), beam_plain.run(ctx), duckdb_sql.run(ctx)]
    check_rows(results)  # raises when rows per view differ
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
