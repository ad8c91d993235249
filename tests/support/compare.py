"""Match a run's rows against the oracle's, exactly where the result is exact.

Rows are matched by ``(view, window_start, window_end, grouping_set, granularity, grouping
values)``; window bounds are compared as instants for matching and as strings per column;
grouping values are equal when equal as JSON values (``1 == 1.0``, but ``1 != "1" != true``).
Each column is then checked by its aggregation:

* exact: ``count``, ``count_distinct_exact`` (ints), ``sum`` (int when the oracle's is an
  int, else a float), ``min``, ``max``, ``histogram``, ``collect_set``, the row's fixed
  columns; floats (``mean``, ``variance``, ``stddev``, float sums) within
  ``rel_tol``/``abs_tol``;
* ``count_distinct`` and ``hll_sketch`` (decoded with DataSketches): within
  ``max(3 * RSE * true, 2)``, ``RSE = 1.04 / sqrt(2**lg_k)`` for every HLL type (HLL_8's
  constant; slightly generous for HLL_4/HLL_6);
* ``approx_quantiles``: each value's normalized rank among the group's sorted values within
  ``max(0.02, 1.2 * KLL rank error(k))`` of the requested quantile (0.02 for k = 200), data
  values within a relative 1e-6 of it counting as equal (float32 sketches round their items);
* ``top_k``: while the group has at most ``0.75 * 2**lg_max_map_size`` distinct values (the
  frequent-items sketch's exact range; ``lg_max_map_size`` from params, by default
  ``max(10, bit_length(4k - 1))`` as the combiner documents: 768 values for k <= 256) the
  counts are exact and the items a valid top k (any item may fill a tie); beyond that the
  counts are non-increasing, each within the sketch's a-priori error of the truth
  (``3.5 / 2**lg_max_map_size * n``), and no value clearly heavier than the last one listed is
  missing;
* ``first``/``last``: any value tied at the edge event time;
* derived columns: recomputed from the run's own aggregated values when those passed, so an
  approximate input (``count_distinct``) does not fail an exact formula.

Only the final pane per key and window should be passed in (``pane_timing``/``pane_index``
are compared like any column; a bounded run has one ``ON_TIME`` pane each): a stream's rows go
through :func:`latest_panes`, and :func:`without_panes` where their timing depends on arrival.

Example:
    >>> assert_rows_match(read_rows(out / "cdn"), expected_rows(view, path), view)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import bisect
import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from datasketches import frequent_items_sketch, hll_sketch, kll_doubles_sketch

from liveagg.spec import Aggregation, ViewSpec

from .oracle import (
    COUNTS_PREFIX,
    HIDDEN_PREFIX,
    TIES_PREFIX,
    VALUES_PREFIX,
    Arith,
    params_of,
    parse_instant,
    resolve_derived,
    value_key,
)

HLL_RSE_CONSTANT = 1.04
#: Relative slack when ranking a reported quantile (float32 keeps 24 bits, ~6e-8).
FLOAT32_REL_SLACK = 1e-6

Key = tuple[Any, ...]


def _identity(value: Any) -> Any:
    """A hashable identity for a grouping or collected value: numbers by value, types apart."""
    if value is None:
        return None
    try:
        return value_key(value)
    except TypeError:
        return ("unhashable", repr(value))


def _instant(text: Any) -> Any:
    if text is None:  # rows of the global window carry no bounds
        return None
    try:
        return parse_instant(text)
    except (TypeError, ValueError):
        return ("unparseable", repr(text))


def row_key(row: Mapping[str, Any], view: ViewSpec) -> Key:
    """The identity of a row: view, window, grouping set, granularity, grouping values."""
    return (
        row.get("view"),
        _instant(row.get("window_start")),
        _instant(row.get("window_end")),
        row.get("grouping_set"),
        row.get("granularity"),
        tuple(_identity(row.get(c)) for c in view.grouping_cols),
    )


PANE_COLUMNS = ("pane_timing", "pane_index")


def latest_panes(rows: Sequence[Mapping[str, Any]], view: ViewSpec) -> list[dict[str, Any]]:
    """Per key and window the row with the highest ``pane_index``: the window's value so far
    (results accumulate, and a Kafka sink is at-least-once)."""
    latest: dict[Key, Mapping[str, Any]] = {}
    for row in rows:
        key = row_key(row, view)
        if key not in latest or row["pane_index"] >= latest[key]["pane_index"]:
            latest[key] = row
    return [dict(r) for r in latest.values()]


def without_panes(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows without ``pane_timing`` and ``pane_index``, which depend on when data arrived: a
    stream has early panes before the on-time one, and out-of-order data late panes after it."""
    return [{k: v for k, v in r.items() if k not in PANE_COLUMNS} for r in rows]


def _describe_key(row: Mapping[str, Any], view: ViewSpec) -> str:
    names = ["window_start", "window_end", "grouping_set", "granularity", *view.grouping_cols]
    return ", ".join(f"{n}={row.get(n)!r}" for n in names if n in row)


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith(HIDDEN_PREFIX)}


# ---------------------------------------------------------------------------------------------
# Per-column checks: each returns None when the value is acceptable, else why not.


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _close(a: Any, e: Any, rel_tol: float, abs_tol: float) -> str | None:
    if e is None or a is None:
        return None if a is None and e is None else "null mismatch"
    if not _is_number(a):
        return f"not a number ({type(a).__name__})"
    if isinstance(a, float) and not math.isfinite(a):
        return "not finite"
    if math.isclose(a, e, rel_tol=rel_tol, abs_tol=abs_tol):
        return None
    return f"differs by {a - e:.6g}"


def _exact_int(a: Any, e: Any) -> str | None:
    if e is None:
        return None if a is None else "expected null"
    if type(a) is not int:
        return f"expected an int, got {type(a).__name__}"
    return None if a == e else f"differs by {a - e}"


def _hll_bound(true: int, lg_k: int) -> float:
    return max(3 * HLL_RSE_CONSTANT / math.sqrt(2**lg_k) * true, 2)


def _check_distinct(a: Any, e: Any, lg_k: int) -> str | None:
    if type(a) is not int:
        return f"expected an int, got {type(a).__name__}"
    bound = _hll_bound(e, lg_k)
    return None if abs(a - e) <= bound else f"estimate {a} is off by more than {bound:.1f}"


def _check_hll_sketch(a: Any, e: Any, lg_k: int) -> str | None:
    if e is None or a is None:
        return None if a is None and e is None else "null mismatch"
    try:
        estimate = hll_sketch.deserialize(base64.b64decode(a, validate=True)).get_estimate()
    except (TypeError, ValueError, RuntimeError) as err:
        return f"cannot decode the sketch: {err}"
    bound = _hll_bound(e, lg_k)
    if abs(estimate - e) <= bound:
        return None
    return f"sketch estimate {estimate:.1f} is off by more than {bound:.1f}"


def quantile_rank_tolerance(k: int) -> float:
    """Allowed normalized-rank error for a KLL sketch with parameter ``k`` (0.02 at 200)."""
    return max(0.02, 1.2 * kll_doubles_sketch.get_normalized_rank_error(k, False))


def _check_quantiles(a: Any, e: Any, values: Sequence[float], p: Mapping[str, Any]) -> str | None:
    if e is None or a is None:
        return None if a is None and e is None else "null mismatch"
    quantiles = list(p["quantiles"])
    if not isinstance(a, list) or len(a) != len(quantiles):
        return f"expected a list of {len(quantiles)} numbers"
    tol = quantile_rank_tolerance(int(p["k"]))
    n = len(values)
    for q, x in zip(quantiles, a, strict=True):
        if not _is_number(x):
            return f"quantile {q}: {x!r} is not a number"
        # Values within float32 precision of x count as equal to it: a KLL floats sketch
        # returns its items rounded to float32, which must not move them past a neighbour.
        slack = abs(x) * FLOAT32_REL_SLACK
        lo = bisect.bisect_left(values, x - slack) / n
        hi = bisect.bisect_right(values, x + slack) / n
        error = max(lo - q, q - hi, 0.0)
        if error > tol:
            return f"quantile {q}: {x!r} has rank [{lo:.4f}, {hi:.4f}], error {error:.4f} > {tol}"
    return None


def top_k_lg_map_size(params: Mapping[str, Any]) -> int:
    """log2 of the frequent-items map: the param, else the combiner's documented default."""
    if params.get("lg_max_map_size") is not None:
        return int(params["lg_max_map_size"])
    return max(10, (4 * int(params["k"]) - 1).bit_length())


def _check_top_k(
    a: Any, e: Any, counts: Sequence[Sequence[Any]], p: Mapping[str, Any]
) -> str | None:
    if e is None or a is None:
        return None if a is None and e is None else "null mismatch"
    if not isinstance(a, list) or not all(isinstance(x, list | tuple) and len(x) == 2 for x in a):
        return "expected a list of [value, count] pairs"
    truth = {_identity(v): c for v, c in counts}
    k = int(p["k"])
    if len(a) != min(k, len(truth)):
        return f"{len(a)} items, expected {min(k, len(truth))}"
    ids = [_identity(v) for v, _ in a]
    if len(set(ids)) != len(ids):
        return "an item is listed twice"
    reported = [c for _, c in a]
    if any(x < y for x, y in itertools.pairwise(reported)):
        return "counts are not in non-increasing order"
    lg_map = top_k_lg_map_size(p)
    if len(truth) <= 3 * 2**lg_map // 4:
        for (v, c), i in zip(a, ids, strict=True):
            if truth.get(i) != c:
                return f"item {v!r}: count {c}, true count {truth.get(i, 0)}"
        if reported != [c for _, c in e]:
            return f"counts {reported} are not the top counts {[c for _, c in e]}"
        return None
    n = sum(truth.values())
    err = frequent_items_sketch.get_apriori_error(lg_map, n)
    for (v, c), i in zip(a, ids, strict=True):
        if abs(c - truth.get(i, 0)) > err:
            return f"item {v!r}: count {c}, true count {truth.get(i, 0)} (allowed error {err:.0f})"
    floor = reported[-1] + 2 * err
    listed = set(ids)
    missing = [v for v, c in counts if c > floor and _identity(v) not in listed]
    if missing:
        return f"heavy items missing: {missing[:5]!r}"
    return None


def _check_in(a: Any, ties: Sequence[Any], e: Any) -> str | None:
    if e is None:
        return None if a is None else "expected null"
    allowed = {_identity(v) for v in ties}
    return None if _identity(a) in allowed else f"not among the values at the edge time {ties!r}"


def _check_collect_set(a: Any, e: Any) -> str | None:
    if e is None or a is None:
        return None if a is None and e is None else "null mismatch"
    if not isinstance(a, list):
        return "expected a list"
    if [_identity(v) for v in a] != [_identity(v) for v in e]:
        return "different values or order"
    return None


def _check_aggregation(
    agg: Aggregation, a: Any, exp: Mapping[str, Any], rel_tol: float, abs_tol: float
) -> str | None:
    out, p, e = agg.output, params_of(agg), exp[agg.output]
    kind = agg.kind
    if kind in ("count", "count_distinct_exact"):
        return _exact_int(a, e)
    if kind == "sum" and type(e) is int:
        return _exact_int(a, e)
    if kind in ("sum", "mean", "variance", "stddev", "min", "max"):
        return _close(a, e, rel_tol, abs_tol)
    if kind == "count_distinct":
        return _check_distinct(a, e, int(p["lg_k"]))
    if kind == "hll_sketch":
        return _check_hll_sketch(a, e, int(p["lg_k"]))
    if kind == "approx_quantiles":
        return _check_quantiles(a, e, exp[VALUES_PREFIX + out], p)
    if kind == "top_k":
        return _check_top_k(a, e, exp[COUNTS_PREFIX + out], p)
    if kind in ("first", "last"):
        return _check_in(a, exp[TIES_PREFIX + out], e)
    if kind == "histogram":
        ok = isinstance(a, list) and all(type(x) is int for x in a) and a == e
        return None if ok else "different bucket counts"
    if kind == "collect_set":
        return _check_collect_set(a, e)
    return None if a == e else "differs"


def _row_differences(
    act: Mapping[str, Any],
    exp: Mapping[str, Any],
    view: ViewSpec,
    derived: Mapping[str, Arith],
    rel_tol: float,
    abs_tol: float,
) -> list[str]:
    public = _public(exp)
    problems: list[str] = []
    missing_cols = [c for c in public if c not in act]
    extra_cols = [c for c in act if c not in public]
    if missing_cols:
        problems.append(f"columns missing: {missing_cols}")
    if extra_cols:
        problems.append(f"unexpected columns: {extra_cols}")
    fixed = ["view", "window_start", "window_end", "pane_timing", "pane_index"]
    for col in [*fixed, "grouping_set", "granularity"]:
        if col in act and col in public and act[col] != public[col]:
            problems.append(f"{col}: actual {act[col]!r}, expected {public[col]!r}")
    passed: set[str] = set()
    for agg in view.aggregations:
        if agg.output not in act:
            continue
        why = _check_aggregation(agg, act[agg.output], exp, rel_tol, abs_tol)
        if why is None:
            passed.add(agg.output)
        else:
            problems.append(
                f"{agg.output} ({agg.kind}): actual {act[agg.output]!r}, "
                f"expected {public[agg.output]!r}: {why}"
            )
    for name, node in derived.items():
        if name not in act:
            continue
        # Recompute from the run's own inputs when they passed: exact formula, approximate input.
        target = node.evaluate(act) if node.names() <= passed else public[name]
        why = _close(act[name], target, rel_tol, abs_tol)
        if why is not None:
            problems.append(f"{name} (derived): actual {act[name]!r}, expected {target!r}: {why}")
    return problems


def assert_rows_match(
    actual: Sequence[Mapping[str, Any]],
    expected: Sequence[Mapping[str, Any]],
    view: ViewSpec,
    *,
    rel_tol: float = 1e-9,
    abs_tol: float = 1e-9,
    max_report: int = 20,
) -> None:
    """Raise ``AssertionError`` listing missing, extra, duplicate and differing rows.

    Args:
        actual: The run's rows for ``view`` (final panes only).
        expected: :func:`tests.support.oracle.expected_rows` for the same input.
        view: The view both were computed for.
        rel_tol: Relative tolerance for floats.
        abs_tol: Absolute tolerance for floats (values near zero).
        max_report: At most this many entries per section of the message.
    """
    derived = resolve_derived(view)
    exp_by_key: dict[Key, Mapping[str, Any]] = {}
    for row in expected:
        exp_by_key[row_key(row, view)] = row
    act_by_key: dict[Key, Mapping[str, Any]] = {}
    duplicates: list[Mapping[str, Any]] = []
    for row in actual:
        key = row_key(row, view)
        if key in act_by_key:
            duplicates.append(row)
        act_by_key[key] = row

    missing = [exp_by_key[k] for k in exp_by_key if k not in act_by_key]
    extra = [act_by_key[k] for k in act_by_key if k not in exp_by_key]
    differing: list[tuple[Mapping[str, Any], list[str]]] = []
    for key, exp in exp_by_key.items():
        if key in act_by_key:
            problems = _row_differences(act_by_key[key], exp, view, derived, rel_tol, abs_tol)
            if problems:
                differing.append((exp, problems))
    if not (missing or extra or duplicates or differing):
        return

    lines = [
        f"view {view.name!r}: {len(missing)} missing, {len(extra)} extra, "
        f"{len(duplicates)} duplicate, {len(differing)} differing rows "
        f"({len(expected)} expected, {len(actual)} actual)"
    ]

    def section(title: str, rows: Sequence[Any], render: Any) -> None:
        if rows:
            lines.append(f"{title} ({len(rows)}, first {min(len(rows), max_report)}):")
            lines.extend(render(r) for r in rows[:max_report])

    section("missing (expected, not produced)", missing, lambda r: f"  {_public(r)}")
    section("extra (produced, not expected)", extra, lambda r: f"  {dict(r)}")
    section("duplicate keys (more than one row)", duplicates, lambda r: f"  {dict(r)}")
    section(
        "differing",
        differing,
        lambda d: f"  [{_describe_key(d[0], view)}]\n" + "\n".join(f"    {p}" for p in d[1]),
    )
    raise AssertionError("\n".join(lines))


def _same(a: Any, b: Any, rel_tol: float) -> bool:
    """Equal JSON values, floats to ``rel_tol`` (and ints beside floats by value)."""
    if type(a) is float or type(b) is float:
        return _is_number(a) and _is_number(b) and math.isclose(a, b, rel_tol=rel_tol)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, rel_tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k], rel_tol) for k in a)
    return type(a) is type(b) and a == b


def assert_same_rows(
    actual: Sequence[Mapping[str, Any]],
    expected: Sequence[Mapping[str, Any]],
    view: ViewSpec,
    rel_tol: float = 1e-12,
) -> None:
    """Two runs' rows are the same rows, column for column, pane columns included; floats
    to ``rel_tol``: a variance merged from single messages (Chan's formula) and one computed
    from the whole batch at once differ in the last bits."""
    a = {row_key(row, view): row for row in actual}
    e = {row_key(row, view): row for row in expected}
    assert len(a) == len(actual) and len(e) == len(expected), "duplicate rows"
    assert a.keys() == e.keys(), (sorted(a.keys() - e.keys()), sorted(e.keys() - a.keys()))
    differ = [(a[k], e[k]) for k in a if not _same(a[k], e[k], rel_tol)]
    assert not differ, differ[:3]


def assert_milestones_match(
    actual: Sequence[Mapping[str, Any]],
    expected: Sequence[Mapping[str, Any]],
    *,
    rel_tol: float = 1e-9,
    values: bool = True,
) -> None:
    """Raise ``AssertionError`` unless ``actual`` holds exactly the ``expected`` milestone
    events, each once: matched by ``milestone_id``, every field equal (a float ``value``
    within ``rel_tol``). Without ``values`` the ``value`` is not compared: a stream's event
    carries the value of the pane that fired it, not the final value the oracle knows."""
    counts = Counter(e["milestone_id"] for e in actual)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    by_id = {e["milestone_id"]: e for e in actual}
    want = {e["milestone_id"]: e for e in expected}
    problems = [f"fired more than once: {by_id[i]}" for i in repeated]
    problems += [f"missing: {want[i]}" for i in want.keys() - by_id.keys()]
    problems += [f"unexpected: {by_id[i]}" for i in by_id.keys() - want.keys()]
    for i in want.keys() & by_id.keys():
        a, e = by_id[i], want[i]
        same = a.keys() == e.keys() and all(
            a[k] == e[k]
            or (k == "value" and not values)
            or (k == "value" and _is_number(a[k]) and _close(a[k], e[k], rel_tol, 0) is None)
            for k in e
        )
        if not same:
            problems.append(f"differs: actual {dict(a)}, expected {dict(e)}")
    if problems:
        head = f"{len(actual)} milestones fired, {len(expected)} expected:"
        raise AssertionError("\n".join([head, *problems[:20]]))


def assert_fired_at_first_pane(
    rows: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    grouping_cols: Sequence[str],
) -> None:
    """Raise ``AssertionError`` unless every milestone event of a stream carries the value of
    the first pane (by ``pane_index``) of its key and window that reached its threshold: it
    fired there, not at a later pane. For windows that do not merge (a session event carries
    its session as it was when it fired)."""

    def where(record: Mapping[str, Any]) -> tuple:
        key = tuple(orjson.dumps(record.get(c)) for c in grouping_cols)
        extras = (record.get("grouping_set"), record.get("granularity"))
        return (*key, *extras, record.get("window_start"), record.get("window_end"))

    panes: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        panes.setdefault(where(row), []).append(row)
    for event in events:
        ordered = sorted(panes.get(where(event), []), key=lambda r: r["pane_index"])
        column, threshold = event["column"], event["threshold"]
        first = next((r for r in ordered if _reaches(r[column], threshold)), None)
        if first is None or first[column] != event["value"]:
            raise AssertionError(f"{dict(event)} did not fire at its first pane: {ordered}")


def _reaches(value: Any, threshold: float) -> bool:
    return _is_number(value) and value >= threshold
