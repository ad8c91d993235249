"""The same views in DuckDB SQL over the same file, with one thread.

``approx_count_distinct`` is DuckDB's HyperLogLog; windows are ``time_bucket`` buckets.
Rows are written as JSON Lines, as the others write theirs.

    python -m benchmarks.systems.duckdb_sql VIEWS_DIR EVENTS.jsonl OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

from benchmarks.harness import PYTHON, Result, measure
from benchmarks.systems import Context
from benchmarks.systems._views import PlainView, plain_views

_SQL = {
    "count": "count(*)",
    "sum": "sum({c})",
    "mean": "avg({c})",
    "count_distinct": "approx_count_distinct({c})",
}
COLUMNS = (
    "{ts: 'TIMESTAMPTZ', org: 'VARCHAR', site: 'VARCHAR', country: 'VARCHAR', user: 'VARCHAR',"
    " url: 'VARCHAR', status: 'BIGINT', bytes: 'BIGINT', latency_ms: 'DOUBLE'}"
)


def query(view: PlainView) -> str:
    """The SQL computing ``view`` over a table ``events``."""
    group = ", ".join(f'"{g}"' for g in view.group)
    aggs = ", ".join(
        _SQL[kind].format(c=f'"{column}"') + f' AS "{output}"'
        for kind, column, output in view.aggregations
    )
    bucket = f"time_bucket(INTERVAL {view.window_s} SECOND, ts, TIMESTAMPTZ '1970-01-01')"
    return (
        f"SELECT {bucket} AS window_start, {group}, {aggs} FROM events "
        f"GROUP BY window_start, {group}"
    )


def main(argv: list[str] | None = None) -> None:
    views_dir, dataset, out = (Path(a) for a in (argv or sys.argv[1:]))
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_json('{dataset}', format='newline_delimited',"
        f" columns={COLUMNS})"
    )
    # One scan feeds all views, as one Beam read does: materialize once, then aggregate.
    con.execute("CREATE TEMP TABLE scanned AS SELECT * FROM events")
    con.execute("CREATE OR REPLACE VIEW events AS SELECT * FROM scanned")
    for view in plain_views(views_dir):
        target = out / f"{view.name}.jsonl"
        con.execute(f"COPY ({query(view)}) TO '{target}' (FORMAT json)")


def run(ctx: Context) -> Result:
    out = ctx.scratch("duckdb")
    m = measure(
        [PYTHON, "-m", "benchmarks.systems.duckdb_sql", str(ctx.views), str(ctx.dataset), str(out)]
    )
    rows = {
        v.name: sum(1 for _ in (out / f"{v.name}.jsonl").open("rb")) for v in plain_views(ctx.views)
    }
    return Result("duckdb-1-thread", ctx.events, m.wall_s, m.cpu_s, m.peak_rss_mb, rows)


if __name__ == "__main__":
    main()
