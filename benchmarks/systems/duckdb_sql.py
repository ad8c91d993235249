"""The same views in DuckDB SQL over the same file, with one thread.

Windows are ``time_bucket`` buckets; each aggregation is the SQL a DuckDB user would write:

* ``count_distinct`` (HyperLogLog) is ``approx_count_distinct``, DuckDB's HyperLogLog;
  ``count_distinct_exact`` is ``count(DISTINCT ...)``;
* ``approx_quantiles`` (KLL) is ``approx_quantile`` (DuckDB's T-Digest), a sketch as KLL
  is: bounded memory per group, no sort of the group's values. ``quantile_disc`` would give
  KLL's definition exactly (the smallest value with at least a fraction ``q`` of the values
  at or below it) but keeps every value of a group, which is not the work liveagg does;
* ``top_k`` counts (window, key, value), ranks the values of each (window, key) with
  ``row_number()`` (count descending, then value, liveagg's tie order) and keeps ``k`` as
  ``[value, count]`` pairs, joined to the other aggregates;
* ``stddev``/``variance`` are ``stddev_samp``/``var_samp`` (``ddof`` 1) or the ``_pop``
  forms (``ddof`` 0); ``histogram`` is one ``count_if`` per bucket in a list;
* grouping sets are ``GROUP BY window_start, GROUPING SETS (...)``, with ``grouping_set``
  the set's index read from ``GROUPING(...)``; a view with several granularities is one
  such query per granularity, joined with ``UNION ALL`` into one result.

Rows are written as JSON Lines, as the others write theirs, one file per view.

The measured process imports only ``duckdb``: the harness builds the SQL (which needs
liveagg's view loader, and with it Beam, about 2 CPU-s of imports) and hands it over in a
JSON file, so that DuckDB's figure is DuckDB's work.

    python -m benchmarks.systems.duckdb_sql VIEWS_DIR_OR_QUERIES.json EVENTS.jsonl OUT_DIR
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from benchmarks.harness import Result
    from benchmarks.systems import Context
    from benchmarks.systems._views import PlainAggregation, PlainView

_SQL = {
    "sum": "sum({c})",
    "min": "min({c})",
    "max": "max({c})",
    "mean": "avg({c})",
    "count_distinct": "approx_count_distinct({c})",
    "count_distinct_exact": "count(DISTINCT {c})",
}
COLUMNS = (
    "{ts: 'TIMESTAMPTZ', org: 'VARCHAR', site: 'VARCHAR', country: 'VARCHAR', user: 'VARCHAR',"
    " url: 'VARCHAR', status: 'BIGINT', bytes: 'BIGINT', latency_ms: 'DOUBLE'}"
)


def _quote(name: str) -> str:
    return f'"{name}"'


def aggregate(agg: PlainAggregation) -> str:
    """The SQL expression of one aggregation (``top_k`` is a join, see ``query``)."""
    c = _quote(agg.column) if agg.column else ""
    kind, params = agg.kind, agg.params
    if kind == "count":
        return f"count({c or '*'})"
    if kind in _SQL:
        return _SQL[kind].format(c=c)
    if kind in ("stddev", "variance"):
        ddof = params.get("ddof", 1)
        if ddof not in (0, 1):
            raise ValueError(f"{agg.output}: no DuckDB form for ddof={ddof}")
        name = "stddev" if kind == "stddev" else "var"
        return f"{name}_{'samp' if ddof else 'pop'}({c})"
    if kind == "approx_quantiles":
        ranks = ", ".join(repr(float(q)) for q in params.get("quantiles", [0.5, 0.9, 0.99]))
        return f"approx_quantile({c}::DOUBLE, [{ranks}])"
    if kind == "histogram":
        bounds = params["bounds"]
        buckets = [f"{c} < {bounds[0]}"]
        buckets += [f"{c} >= {lo} AND {c} < {hi}" for lo, hi in itertools.pairwise(bounds)]
        buckets.append(f"{c} >= {bounds[-1]}")
        return "[" + ", ".join(f"count_if({b})" for b in buckets) + "]"
    raise ValueError(f"{agg.output}: no DuckDB SQL for {kind!r}")


def _bucket(seconds: int) -> str:
    return f"time_bucket(INTERVAL {seconds} SECOND, ts, TIMESTAMPTZ '1970-01-01')"


def _top_k(view: PlainView, agg: PlainAggregation, seconds: int, name: str) -> str:
    """A CTE: per (window, key), the ``k`` most frequent values of ``agg.column``."""
    keys = ", ".join(["window_start", *map(_quote, view.group)])
    c = _quote(agg.column or "")
    k = int(agg.params.get("k", 10))
    counted = (
        f"SELECT {_bucket(seconds)} AS window_start, "
        + "".join(f"{_quote(g)}, " for g in view.group)
        + f"{c} AS v, count(*) AS n FROM events WHERE {c} IS NOT NULL GROUP BY ALL"
    )
    ranked = (
        f"SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY n DESC, v) AS r "
        f"FROM ({counted})"
    )
    return (
        f"{name} AS (SELECT {keys}, list(json_array(v, n) ORDER BY r) AS {_quote(agg.output)} "
        f"FROM ({ranked}) WHERE r <= {k} GROUP BY ALL)"
    )


def _granularity(view: PlainView, seconds: int, size: str) -> str:
    """One granularity of ``view``: a GROUP BY (with grouping sets, if any)."""
    columns = [_quote(g) for g in view.group]
    plain = [a for a in view.aggregations if a.kind != "top_k"]
    ranked = [a for a in view.aggregations if a.kind == "top_k"]
    select = [f"{_bucket(seconds)} AS window_start", *columns]
    if view.multi_granularity:
        select.append(f"'{size}' AS granularity")
    if view.grouping_sets is None:
        group_by = "GROUP BY ALL"
    else:
        if ranked:
            raise ValueError(f"{view.name}: top_k with grouping sets has no DuckDB form here")
        # GROUPING(...) sets bit (n - 1 - i) for each column i that a set leaves out.
        n = len(view.group)
        cases = " ".join(
            f"WHEN {sum(1 << (n - 1 - i) for i, g in enumerate(view.group) if g not in s)} "
            f"THEN {index}"
            for index, s in enumerate(view.grouping_sets)
        )
        select.append(f"CASE GROUPING({', '.join(columns)}) {cases} END AS grouping_set")
        sets = ", ".join("(" + ", ".join(map(_quote, s)) + ")" for s in view.grouping_sets)
        group_by = f"GROUP BY window_start, GROUPING SETS ({sets})"
    select += [f"{aggregate(a)} AS {_quote(a.output)}" for a in plain]
    main = f"SELECT {', '.join(select)} FROM events {group_by}"
    if not ranked:
        return main
    names = [f"top_{i}" for i in range(len(ranked))]
    ctes = ", ".join(
        [f"main AS ({main})"]
        + [_top_k(view, a, seconds, name) for a, name in zip(ranked, names, strict=True)]
    )
    keys = ", ".join(["window_start", *columns])
    joins = " ".join(f"LEFT JOIN {name} USING ({keys})" for name in names)
    return f"WITH {ctes} SELECT * FROM main {joins}"


def query(view: PlainView) -> str:
    """The SQL computing ``view`` over a table ``events``."""
    parts = [_granularity(view, seconds, size) for seconds, size in view.windows]
    if len(parts) == 1:
        return parts[0]
    return " UNION ALL ".join(f"({part})" for part in parts)


def queries(views: Path) -> dict[str, str]:
    """Each view's name and SQL."""
    from benchmarks.systems._views import plain_views

    return {view.name: query(view) for view in plain_views(views)}


def main(argv: list[str] | None = None) -> None:
    source, dataset, out = (Path(a) for a in (argv or sys.argv[1:]))
    sql = json.loads(source.read_text()) if source.is_file() else queries(source)
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
    for name, text in sql.items():
        con.execute(f"COPY ({text}) TO '{out / name}.jsonl' (FORMAT json)")


def supports(views: Path) -> str | None:
    """Why ``views`` have no SQL here (``None`` when all have)."""
    try:
        queries(views)
    except ValueError as error:
        return str(error)
    return None


def run(ctx: Context) -> Result:
    from benchmarks.harness import PYTHON, Result, measure

    out = ctx.scratch("duckdb")
    sql = queries(ctx.views)
    script = ctx.scratch("duckdb-sql") / "queries.json"
    script.write_text(json.dumps(sql, indent=1))
    m = measure(
        [PYTHON, "-m", "benchmarks.systems.duckdb_sql", str(script), str(ctx.dataset), str(out)]
    )
    rows = {name: sum(1 for _ in (out / f"{name}.jsonl").open("rb")) for name in sql}
    return Result(
        "duckdb-1-thread", ctx.events, m.wall_s, m.cpu_s, m.peak_rss_mb, rows, output=str(out)
    )


if __name__ == "__main__":
    main()
