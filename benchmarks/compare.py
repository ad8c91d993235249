"""Do two systems' rows agree? Exact aggregates must be equal, floats nearly; sketches are not
compared here (two sketches of the same data differ by design: the benchmark's test checks
each against exact values instead).

Rows are keyed by window start, granularity, grouping set and grouping columns, so that the
systems' column order, row order, file layout and timestamp spelling do not matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks.systems._views import PlainView

#: Aggregations whose value is the same in every correct system.
EXACT = frozenset({"count", "sum", "min", "max", "count_distinct_exact", "histogram"})
#: Aggregations computed in floating point, which the order of additions may change a little.
FLOAT = {"mean": 1e-9, "stddev": 1e-6, "variance": 1e-6}
Key = tuple[Any, ...]


def files(output: Path, view: str) -> list[Path]:
    """A view's row files under a system's output folder: ``VIEW/*`` (liveagg, Beam) or
    ``VIEW.jsonl`` (DuckDB); names starting with ``_`` or ``.`` are not data."""
    folder = output / view
    if folder.is_dir():
        return sorted(p for p in folder.iterdir() if not p.name.startswith(("_", ".")))
    return [output / f"{view}.jsonl"]


def rows(output: Path, view: str) -> Iterator[dict[str, Any]]:
    for path in files(output, view):
        with path.open("rb") as lines:
            for line in lines:
                if line.strip():
                    yield orjson.loads(line)


def keyed(output: Path, view: PlainView) -> dict[Key, dict[str, Any]]:
    """The view's rows by (window start, granularity, grouping set, grouping values). A
    streaming run writes a row per pane, each with the window's whole value: the latest
    (highest ``pane_index``) stands for its window."""
    out: dict[Key, dict[str, Any]] = {}
    for row in rows(output, view.name):
        start = row["window_start"]
        if start.endswith("+00"):  # DuckDB's TIMESTAMPTZ text
            start += ":00"
        key = (
            datetime.fromisoformat(start),
            row.get("granularity"),
            row.get("grouping_set"),
            *(row[g] for g in view.group),
        )
        other = out.get(key)
        if other is not None:
            if "pane_index" not in row or row["pane_index"] == other.get("pane_index"):
                raise ValueError(f"{view.name}: two rows for {key}")
            if row["pane_index"] < other["pane_index"]:
                continue
        out[key] = row
    return out


def _equal(kind: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if kind in FLOAT or (kind == "sum" and (type(a) is float or type(b) is float)):
        return math.isclose(a, b, rel_tol=FLOAT.get(kind, 1e-9), abs_tol=1e-9)
    return bool(a == b)


def differences(a: Path, b: Path, view: PlainView, limit: int = 5) -> list[str]:
    """How the rows of ``view`` under output folders ``a`` and ``b`` differ (at most
    ``limit`` of each sort); an empty list when they agree."""
    left, right = keyed(a, view), keyed(b, view)
    out = [f"{view.name}: only in {a}: {k}" for k in list(left.keys() - right.keys())[:limit]]
    out += [f"{view.name}: only in {b}: {k}" for k in list(right.keys() - left.keys())[:limit]]
    compared = [g for g in view.aggregations if g.kind in EXACT or g.kind in FLOAT]
    wrong = 0
    for key in left.keys() & right.keys():
        for agg in compared:
            x, y = left[key].get(agg.output), right[key].get(agg.output)
            if not _equal(agg.kind, x, y):
                wrong += 1
                if wrong <= limit:
                    out.append(f"{view.name} {key}: {agg.output} {x!r} != {y!r}")
    if wrong > limit:
        out.append(f"{view.name}: {wrong} differing values in all")
    return out
