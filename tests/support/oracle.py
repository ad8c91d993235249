"""An independent oracle: the rows a bounded run of a view must produce, computed in DuckDB SQL.

The oracle shares no code with the pipeline (not the loader, not the expression parser, not the
combiners): it reads the JSON Lines file as raw text and does everything -- JSON parsing,
event-time parsing, filters, value checks, windows, grouping sets and aggregations -- in SQL
built from the :class:`~liveagg.spec.ViewSpec`. A bounded file behaves like a stream whose
watermark reaches the end after all input, so every (key, window) gets exactly one ``ON_TIME``
pane with ``pane_index`` 0 and nothing is late.

Semantics, including the choices made where SPEC is silent (the pipeline must match them):

Lines
    Each line is one message. A line that is not valid JSON, or valid JSON that is not an object,
    is a dead letter for every view. Blank lines are ignored. Lines valid only for a lenient
    parser (``NaN``, ``Infinity``, trailing commas) are outside the contract: DuckDB accepts
    them, strict parsers do not, and the data generator never writes them. A JSON ``null``
    and a missing key are the same: null. A field name is a top-level key; a dotted name
    (``a.b``) is the literal key ``"a.b"`` while that is present and not null, else the path
    ``a`` -> ``b`` through objects only (an array on the way is not indexed).

Event time
    Read from ``event_time.field``. ``epoch_s``/``epoch_ms``/``epoch_us`` accept JSON numbers
    only (a numeric string such as ``"1709251200000"`` is invalid); fractional values are
    rounded to the nearest microsecond, ties to even (Python's ``round``). ``iso8601`` accepts
    strings only, of the form ``YYYY-MM-DD[T|t| ]hh:mm[:ss[(.|,)fraction]][Z|z|(+|-)hh[[:]mm]]``
    with ASCII digits: a date that exists (not year 0000), hours 00-23, minutes and seconds
    00-59 (no leap second), offsets up to 23:59, the fraction truncated to microseconds; no
    seconds means ``:00``, no offset means UTC (docs/semantics.md, "Event time").
    Without ``format``, strings are ``iso8601`` and numbers ``epoch_s``. Booleans, objects,
    arrays, null and a missing field are invalid, and so is an instant outside
    ``0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z``. A message whose event time is
    invalid is a dead letter for that view (views may read different fields).

Filters
    Applied before value checks: a message the filter rejects is not a dead letter. Values are
    compared with their JSON type: numbers with numbers (``200 == 200.0``), strings with strings
    (code-point order for ``gt``..``le``), booleans with booleans (``eq``/``ne``/``in``/``not_in``
    only); a value of another type never matches ``eq``/``in``/``gt``/``ge``/``lt``/``le``. A
    null or missing field matches nothing except ``exists`` with ``value`` false; in particular
    ``ne`` and ``not_in`` do *not* match a missing field (SQL's NULL semantics): ``ne`` means
    "present, not null and not equal". ``exists`` means present and not null (``value`` absent
    or true), or null/missing (``value`` false). A filter value of null, an object or an array
    matches nothing. ``all: []`` matches everything, ``any: []`` nothing.

Values a view cannot use (the message is a dead letter for that whole view only)
    * under ``sum``, ``min``, ``max``, ``mean``, ``variance``, ``stddev``, ``approx_quantiles``,
      ``histogram``: anything but a finite JSON number -- strings (even ``"123"``), booleans,
      objects, arrays;
    * under ``count_distinct``, ``count_distinct_exact``, ``hll_sketch``, ``top_k``,
      ``collect_set``, ``first``, ``last`` and in a grouping column: objects and arrays;
    * ``count`` with ``col_name`` accepts any non-null value.
    Nulls and missing values are skipped per aggregation.

Grouping and distinct values
    Numbers are equal by value: an integral float in ``[-2**63, 2**64)`` is the integer (``1.0``
    is written and counted as ``1``), other floats stay floats. Values of different JSON types
    are never equal: the string ``"1"``, the number ``1`` and ``true`` are three values. A null
    or missing grouping value forms its own group with null in that column, as SQL's
    ``GROUP BY`` does. Sorted output (``collect_set``, ties in ``top_k``) puts numbers first by
    value, then strings by code point, then ``false``, ``true``.

Windows
    Fixed windows are aligned to the Unix epoch; sliding windows ``[s, s + size)`` have ``s`` a
    multiple of ``period`` with ``s <= t < s + size``; sessions are per key and grouping set:
    sorted by event time, a new session starts when the gap to the previous message is
    ``>= gap``, and the window is ``[first_t, last_t + gap)``. Window bounds are RFC 3339 UTC
    with a fraction only when needed, in groups of three digits (``.250``, ``.000250``), as
    Java's ``Instant.toString``. With ``size`` a list each size is a granularity (``granularity``
    is the size as written); with ``grouping_sets`` each set is aggregated on its own and its
    rows carry its index in ``grouping_set``.

Aggregations
    ``count`` without ``col_name`` counts messages, with it non-null values. Numbers are taken
    in canonical form (an integral number in ``[-2**63, 2**64)`` is an integer, however it is
    written). ``sum`` stays an int when every value is an integer, else a float.
    ``min``/``max`` keep the winning value's type.
    ``mean`` is a float. ``variance``/``stddev``: ``sum((x - mean)**2) / (n - ddof)``
    (``ddof`` 1 by default), null when ``n <= ddof``. ``count_distinct`` and ``hll_sketch``
    are given as the exact distinct count (the comparator applies the sketch's error bound;
    it decodes ``hll_sketch``). ``approx_quantiles`` gives the exact quantile
    ``sorted[max(ceil(q * n) - 1, 0)]`` and keeps the sorted values under
    ``__values__<column>``. ``top_k`` lists ``[value, count]`` by count descending, ties in
    value order, and keeps every count under ``__counts__<column>``. ``first``/``last`` take
    the non-null value with the smallest/largest event time; Beam does not order ties, so every
    value tied at that time is kept under ``__ties__<column>`` (the row itself shows the earliest
    line's for ``first``, the latest line's for ``last``; the comparator accepts any tied
    value). ``first``/``last`` numbers are normalized as above. ``histogram`` counts buckets
    ``(-inf, b0), [b0, b1), ..., [bn, +inf)``. ``collect_set`` is the sorted distinct values,
    the first ``max_size`` kept. A group with no non-null input yields null, except ``count``,
    ``count_distinct``, ``count_distinct_exact`` (0) and ``histogram`` (zeros). Custom
    aggregations are not computed (:class:`NotImplementedError`).

Derived columns
    Parsed here into SQL (numbers, names, ``+ - * /``, unary minus, parentheses); names are
    aggregated columns or earlier derived ones. Computed in double precision; any null or
    non-numeric operand, division by zero and a non-finite result give null.

Example:
    >>> rows = expected_rows(view, "input.jsonl")  # doctest: +SKIP
    >>> public_rows(rows)[0]["window_start"]  # doctest: +SKIP
    '2024-03-01T00:00:00Z'
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb

from liveagg.spec import Aggregation, AllOf, AnyOf, Filter, Predicate, ViewSpec

HIDDEN_PREFIX = "__"
VALUES_PREFIX = "__values__"
COUNTS_PREFIX = "__counts__"
TIES_PREFIX = "__ties__"

#: Aggregations whose input must be a finite number.
NUMERIC_INPUT = frozenset(
    {"sum", "min", "max", "mean", "variance", "stddev", "approx_quantiles", "histogram"}
)
#: Aggregations whose input must be a scalar (string, number, boolean).
SCALAR_INPUT = frozenset(
    {
        "count_distinct",
        "count_distinct_exact",
        "hll_sketch",
        "top_k",
        "collect_set",
        "first",
        "last",
    }
)
BUILTIN = NUMERIC_INPUT | SCALAR_INPUT | {"count"}

PARAM_DEFAULTS: dict[str, dict[str, Any]] = {
    "variance": {"ddof": 1},
    "stddev": {"ddof": 1},
    "count_distinct": {"lg_k": 12, "hll_type": "HLL_8"},
    "hll_sketch": {"lg_k": 12, "hll_type": "HLL_8"},
    "approx_quantiles": {"quantiles": [0.5, 0.9, 0.99], "k": 200},
    "top_k": {"k": 10},
    "collect_set": {"max_size": 1000},
}

MIN_MICROS = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
MAX_MICROS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_MICROS = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}

_NUMBER_TYPES = "('BIGINT', 'UBIGINT', 'DOUBLE')"
_INT_TYPES = "('BIGINT', 'UBIGINT')"
# The event-time grammar (docs/semantics.md), in DuckDB's regular expressions (RE2), where
# ``$`` does not match before a final newline (a case of tests/support/eventtime_cases.py).
_ISO_PATTERN = (
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([01][0-9]|2[0-3]):([0-5][0-9])"
    r"(?::([0-5][0-9])(?:[.,]([0-9]+))?)?"
    r"([Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?$"
)
_ISO_PARTS = "['y', 'mo', 'd', 'h', 'mi', 's', 'f', 'o']"

# Macros keep the per-view SQL short. ``v`` is a field's JSON value and ``t`` its
# ``json_type``, computed once per field; SQL NULL stands for both JSON null and missing.
_MACROS = f"""
CREATE OR REPLACE TEMP MACRO is_number(v, t) AS
    CASE WHEN t IN {_NUMBER_TYPES} THEN isfinite(TRY_CAST(v AS DOUBLE)) ELSE false END;
CREATE OR REPLACE TEMP MACRO is_scalar(v, t) AS
    CASE WHEN t IN ('VARCHAR', 'BOOLEAN') THEN true ELSE is_number(v, t) END;
CREATE OR REPLACE TEMP MACRO num_value(v, t) AS
    CASE WHEN is_number(v, t) THEN TRY_CAST(v AS DOUBLE) END;
CREATE OR REPLACE TEMP MACRO int_value(v, t) AS
    CASE WHEN t IN {_INT_TYPES} THEN TRY_CAST(v AS HUGEINT) END;
CREATE OR REPLACE TEMP MACRO float_value(v, t) AS
    CASE WHEN t = 'DOUBLE' AND is_number(v, t) THEN TRY_CAST(v AS DOUBLE) END;
-- A number in its canonical form (docs/aggregations.md): an integral number in
-- [-2**63, 2**64) is an integer however it is written, any other number a float.
CREATE OR REPLACE TEMP MACRO is_integral(v, t) AS
    t IN {_INT_TYPES} OR coalesce(num_value(v, t) = floor(num_value(v, t))
        AND num_value(v, t) >= -9223372036854775808.0
        AND num_value(v, t) < 18446744073709551616.0, false);
CREATE OR REPLACE TEMP MACRO canon_int(v, t) AS
    CASE WHEN t IN {_INT_TYPES} THEN int_value(v, t)
         WHEN is_integral(v, t) THEN CAST(num_value(v, t) AS HUGEINT) END;
CREATE OR REPLACE TEMP MACRO canon_float(v, t) AS
    CASE WHEN is_number(v, t) AND NOT is_integral(v, t) THEN num_value(v, t) END;
CREATE OR REPLACE TEMP MACRO str_value(v, t) AS
    CASE WHEN t = 'VARCHAR' THEN json_extract_string(v, '$') END;
CREATE OR REPLACE TEMP MACRO bool_value(v, t) AS
    CASE WHEN t = 'BOOLEAN' THEN TRY_CAST(v AS BOOLEAN) END;
-- A scalar's canonical text: s<string>, b<true|false>, i<integer>, f<float>. An integral
-- float in [-2**63, 2**64) is the integer: 1.0 and 1 are one value.
CREATE OR REPLACE TEMP MACRO value_key(v, t) AS
    CASE WHEN t = 'VARCHAR' THEN 's' || json_extract_string(v, '$')
         WHEN t = 'BOOLEAN' THEN 'b' || CAST(v AS VARCHAR)
         WHEN t IN {_INT_TYPES} THEN 'i' || CAST(int_value(v, t) AS VARCHAR)
         WHEN NOT is_number(v, t) THEN NULL
         WHEN num_value(v, t) = floor(num_value(v, t))
              AND num_value(v, t) >= -9223372036854775808.0
              AND num_value(v, t) < 18446744073709551616.0
         THEN 'i' || CAST(CAST(num_value(v, t) AS HUGEINT) AS VARCHAR)
         ELSE 'f' || CAST(num_value(v, t) AS VARCHAR) END;
CREATE OR REPLACE TEMP MACRO epoch_micros(v, t, unit) AS
    CASE WHEN t IN {_INT_TYPES} THEN int_value(v, t) * unit
         WHEN coalesce(abs(float_value(v, t)) * unit < 1e19, false)
         THEN CAST(round_even(float_value(v, t) * unit, 0) AS HUGEINT) END;
-- The parts of the ISO pattern: no seconds are :00, the fraction is truncated to the
-- microsecond, an offset is +hh, +hhmm or +hh:mm. DuckDB reads year 0000 as 1 BC: not a date.
CREATE OR REPLACE TEMP MACRO iso_micros(p) AS
    CASE WHEN p.y NOT IN ('', '0000') THEN
        epoch_us(try_cast(p.y || '-' || p.mo || '-' || p.d || ' ' || p.h || ':' || p.mi || ':'
                          || CASE WHEN p.s = '' THEN '00' ELSE p.s END AS TIMESTAMP))
        + CAST(rpad(left(p.f, 6), 6, '0') AS BIGINT)
        - CASE WHEN p.o IN ('', 'Z', 'z') THEN 0
               ELSE (CASE WHEN p.o[1] = '-' THEN -1 ELSE 1 END)
                    * (CAST(p.o[2:3] AS BIGINT) * 60
                       + CASE WHEN length(p.o) = 3 THEN 0 ELSE CAST(right(p.o, 2) AS BIGINT) END)
                    * 60000000 END
    END;
"""


# ---------------------------------------------------------------------------------------------
# Small helpers shared with the comparator


def format_instant(micros: int) -> str:
    """RFC 3339 UTC; a fraction of 3 or 6 digits only when the instant has one."""
    dt = _EPOCH + timedelta(microseconds=micros)
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt:%H:%M:%S}"
    if dt.microsecond == 0:
        return text + "Z"
    if dt.microsecond % 1000 == 0:
        return f"{text}.{dt.microsecond // 1000:03d}Z"
    return f"{text}.{dt.microsecond:06d}Z"


def parse_instant(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 string (the inverse of ``format_instant``)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1)


def value_key(value: Any) -> tuple[int, Any]:
    """Sort and identity key of a scalar: numbers by value (``1 == 1.0``), then strings by
    code point, then ``false``, ``true``; values of different JSON types never tie."""
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    raise TypeError(f"not a scalar JSON value: {value!r}")


def group_sort_key(value: Any) -> tuple[int, Any]:
    """``value_key`` with null first, for sorting rows by grouping columns."""
    return (-1, 0) if value is None else value_key(value)


def _decode_key(key: str) -> Any:
    """Invert the SQL macro ``value_key``."""
    tag, text = key[0], key[1:]
    if tag == "s":
        return text
    if tag == "b":
        return text == "true"
    if tag == "i":
        return int(text)
    return float(text)


def params_of(agg: Aggregation) -> dict[str, Any]:
    """The aggregation's params with the documented defaults filled in."""
    return {**PARAM_DEFAULTS.get(agg.kind, {}), **dict(agg.params)}


def public_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows without the oracle's hidden ``__...`` keys."""
    return [{k: v for k, v in r.items() if not k.startswith(HIDDEN_PREFIX)} for r in rows]


def row_sort_key(row: Mapping[str, Any], view: ViewSpec) -> tuple[Any, ...]:
    """A stable order: window, granularity, grouping set, then grouping values (null first)."""
    grans = [d.text for d in view.window.sizes]
    gran = row.get("granularity")
    return (
        parse_instant(row["window_start"]),
        parse_instant(row["window_end"]),
        grans.index(gran) if gran in grans else -1,
        row.get("grouping_set", -1),
        tuple(group_sort_key(row.get(c)) for c in view.grouping_cols),
    )


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_pointer(*keys: str) -> str:
    """The JSON pointer of nested object keys (RFC 6901: ``~`` and ``/`` escaped)."""
    return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys)


def _field_sql(name: str, slot: Callable[[str], str]) -> str:
    """A field's JSON value, SQL NULL for JSON null and missing; ``slot(pointer)`` is the SQL of
    the value at a JSON pointer.

    A dotted name is the literal key while that is present and not null, else the path
    through nested objects. A pointer alone would also index arrays (``/a/0``): every step
    of the path must be an object.
    """
    literal = slot(_json_pointer(name))
    cases = [f"WHEN json_type({literal}) <> 'NULL' THEN {literal}"]
    if "." in name:
        parts = name.split(".")
        nested = slot(_json_pointer(*parts))
        steps = [
            f"json_type({slot(_json_pointer(*parts[:i]))}) = 'OBJECT'" for i in range(1, len(parts))
        ]
        cases.append(f"WHEN {' AND '.join(steps)} AND json_type({nested}) <> 'NULL' THEN {nested}")
    return f"CASE {' '.join(cases)} END"


# ---------------------------------------------------------------------------------------------
# Derived expressions: a tiny parser into an AST that renders as SQL or evaluates in Python

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[-+*/()]))"
)


@dataclass(frozen=True)
class Arith:
    """A node: ``op`` is ``num``, ``name``, ``neg`` or one of ``+ - * /``."""

    op: str
    args: tuple[Any, ...]

    def names(self) -> set[str]:
        if self.op == "name":
            return {self.args[0]}
        if self.op == "num":
            return set()
        return set().union(*(a.names() for a in self.args))

    def to_sql(self, ref: Callable[[str], str]) -> str:
        """SQL in double precision; ``CASE`` turns division by zero into NULL."""
        if self.op == "num":
            return f"CAST({self.args[0]} AS DOUBLE)"
        if self.op == "name":
            return f"CAST(({ref(self.args[0])}) AS DOUBLE)"
        if self.op == "neg":
            return f"(-{self.args[0].to_sql(ref)})"
        left, right = (a.to_sql(ref) for a in self.args)
        if self.op == "/":
            return f"(CASE WHEN {right} = 0 THEN NULL ELSE {left} / {right} END)"
        return f"({left} {self.op} {right})"

    def evaluate(self, values: Mapping[str, Any]) -> float | None:
        """Python evaluation with the same null rules as :meth:`to_sql`."""
        if self.op == "num":
            return float(self.args[0])
        if self.op == "name":
            v = values.get(self.args[0])
            if not isinstance(v, int | float) or isinstance(v, bool):
                return None
            try:
                v = float(v)
            except OverflowError:  # an int beyond a double's range is not a double: null
                return None
            return v if math.isfinite(v) else None
        parts = [a.evaluate(values) for a in self.args]
        if any(p is None for p in parts):
            return None
        if self.op == "neg":
            result = -parts[0]
        elif self.op == "+":
            result = parts[0] + parts[1]
        elif self.op == "-":
            result = parts[0] - parts[1]
        elif self.op == "*":
            result = parts[0] * parts[1]
        elif parts[1] == 0:
            return None
        else:
            result = parts[0] / parts[1]
        return result if math.isfinite(result) else None


def parse_arith(text: str) -> Arith:
    """Parse a derived expression; raise ``ValueError`` on anything else."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot parse derived expression {text!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup
        if kind is None:
            break
        tokens.append((kind, m.group(kind)))
    tokens.append(("end", ""))
    i = 0

    def peek() -> tuple[str, str]:
        return tokens[i]

    def take() -> tuple[str, str]:
        nonlocal i
        i += 1
        return tokens[i - 1]

    def expr() -> Arith:
        node = term()
        while peek() in (("op", "+"), ("op", "-")):
            node = Arith(take()[1], (node, term()))
        return node

    def term() -> Arith:
        node = unary()
        while peek() in (("op", "*"), ("op", "/")):
            node = Arith(take()[1], (node, unary()))
        return node

    def unary() -> Arith:
        if peek() == ("op", "-"):
            take()
            return Arith("neg", (unary(),))
        if peek() == ("op", "+"):
            take()
            return unary()
        kind, tok = take()
        if kind == "num":
            return Arith("num", (tok,))
        if kind == "name":
            return Arith("name", (tok,))
        if (kind, tok) == ("op", "("):
            node = expr()
            if take() != ("op", ")"):
                raise ValueError(f"missing ')' in derived expression {text!r}")
            return node
        raise ValueError(f"unexpected {tok or 'end'!r} in derived expression {text!r}")

    node = expr()
    if peek()[0] != "end":
        raise ValueError(f"unexpected {peek()[1]!r} in derived expression {text!r}")
    return node


def resolve_derived(view: ViewSpec) -> dict[str, Arith]:
    """Each derived column as an AST over aggregated columns only (earlier derived inlined)."""
    outputs = {a.output for a in view.aggregations}
    resolved: dict[str, Arith] = {}

    def inline(node: Arith) -> Arith:
        if node.op == "name":
            name = node.args[0]
            if name in resolved:
                return resolved[name]
            if name not in outputs:
                raise ValueError(f"derived expression refers to unknown column {name!r}")
            return node
        if node.op == "num":
            return node
        return Arith(node.op, tuple(inline(a) for a in node.args))

    for d in view.derived:
        resolved[d.name] = inline(parse_arith(d.expr))
    return resolved


# ---------------------------------------------------------------------------------------------
# SQL building blocks


class _Fields:
    """Every message field a view reads, with a short SQL alias (``f0``, ``f1``, ...)."""

    def __init__(self) -> None:
        self.alias: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self.alias:
            self.alias[name] = f"f{len(self.alias)}"
        return self.alias[name]


def _event_time_sql(v: str, fmt: str | None) -> str:
    """Microseconds since the epoch (HUGEINT), or NULL when the event time is not valid.

    Reads ``__iso``, the ISO 8601 parts of ``v`` when it is a string (see ``_build_usable``).
    """
    if fmt in _UNIT_MICROS:
        return f"epoch_micros({v}, {v}_t, {_UNIT_MICROS[fmt]})"
    if fmt == "iso8601":
        return "iso_micros(__iso)"
    if fmt is None:
        return f"coalesce(iso_micros(__iso), epoch_micros({v}, {v}_t, 1000000))"
    raise ValueError(f"unknown event_time format {fmt!r}")


def _literal_compare(v: str, op: str, value: Any) -> str:
    """``v <op> value`` for a scalar filter value; a value of another type gives false."""
    sql_op = {"eq": "=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
    if isinstance(value, bool):
        if op != "eq":
            return "false"
        return f"coalesce(bool_value({v}, {v}_t) = {str(value).lower()}, false)"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "false"
        literal = str(value) if isinstance(value, int) else repr(value)
        typed = f"CASE WHEN {v}_t IN {_INT_TYPES} THEN int_value({v}, {v}_t) {sql_op} {literal}"
        return f"coalesce({typed} ELSE num_value({v}, {v}_t) {sql_op} {literal} END, false)"
    if isinstance(value, str):
        return f"coalesce(str_value({v}, {v}_t) {sql_op} {_sql_str(value)}, false)"
    return "false"  # null, object or array


def _filter_sql(f: Filter | None, fields: _Fields) -> str:
    """A strictly boolean SQL condition (never NULL)."""
    if f is None:
        return "true"
    if isinstance(f, AllOf | AnyOf):
        joiner, empty = (" AND ", "true") if isinstance(f, AllOf) else (" OR ", "false")
        items = [_filter_sql(x, fields) for x in f.items]
        return "(" + joiner.join(items) + ")" if items else empty
    if not isinstance(f, Predicate):
        raise TypeError(f"not a filter: {f!r}")
    v = fields[f.field]
    if f.op == "exists":
        return f"({v} IS NULL)" if f.value is False else f"({v} IS NOT NULL)"
    if f.op in ("in", "not_in"):
        items = f.value if isinstance(f.value, list | tuple) else [f.value]
        any_eq = " OR ".join(_literal_compare(v, "eq", x) for x in items) or "false"
        if f.op == "in":
            return f"({any_eq})"
        return f"({v} IS NOT NULL AND NOT ({any_eq}))"
    if f.op == "ne":
        if f.value is None:
            return "false"
        return f"({v} IS NOT NULL AND NOT {_literal_compare(v, 'eq', f.value)})"
    return _literal_compare(v, f.op, f.value)


@dataclass
class _AggSQL:
    """One aggregation's SQL parts and how to turn them into the output value.

    ``parts`` are ``(alias, aggregate SQL)``; ``finish`` maps the fetched parts (by alias) to
    the output value plus hidden keys; ``numeric`` is SQL over the part aliases for derived
    columns, or None when the output is not a number.
    """

    parts: list[tuple[str, str]]
    finish: Callable[[Mapping[str, Any]], dict[str, Any]]
    numeric: str | None
    edge: str | None = None  # first/last: "min" or "max" event time over non-null values
    field: str | None = None  # the input field's alias


def _agg_sql(i: int, agg: Aggregation, v: str | None) -> _AggSQL:
    """SQL for aggregation ``i`` over field alias ``v`` (None for ``count`` of rows)."""
    kind, out, p = agg.kind, agg.output, params_of(agg)
    a = f"a{i}"

    def one(value: Any) -> dict[str, Any]:
        return {out: value}

    if kind == "count":
        counted = "count(*)" if v is None else f"count({v})"
        return _AggSQL([(f"{a}_n", counted)], lambda r: one(int(r[f"{a}_n"])), f"{a}_n")
    if v is None:
        raise ValueError(f"aggregation {kind!r} ({out}) needs col_name")
    num, ival, fval, key = f"{v}_num", f"{v}_int", f"{v}_flt", f"{v}_key"
    if kind in ("sum", "mean"):
        parts = [
            (f"{a}_si", f"sum({ival})"),
            (f"{a}_sf", f"fsum({fval})"),
            (f"{a}_n", f"count({num})"),
            (f"{a}_nf", f"count({fval})"),
        ]
        total = f"(CAST(coalesce({a}_si, 0) AS DOUBLE) + coalesce({a}_sf, 0))"

        def finish_sum(r: Mapping[str, Any]) -> dict[str, Any]:
            n, si, sf = r[f"{a}_n"], int(r[f"{a}_si"] or 0), r[f"{a}_sf"] or 0.0
            if n == 0:
                return one(None)
            if kind == "mean":
                return one((si + sf) / n)
            return one(float(si) + sf if r[f"{a}_nf"] else si)

        numeric = f"CASE WHEN {a}_n > 0 THEN {total} END"
        if kind == "mean":
            numeric = f"CASE WHEN {a}_n > 0 THEN {total} / {a}_n END"
        return _AggSQL(parts, finish_sum, numeric)
    if kind in ("min", "max"):
        parts = [(f"{a}_i", f"{kind}({ival})"), (f"{a}_f", f"{kind}({fval})")]
        pick = min if kind == "min" else max
        both = f"{'least' if kind == 'min' else 'greatest'}(CAST({a}_i AS DOUBLE), {a}_f)"

        def finish_minmax(r: Mapping[str, Any]) -> dict[str, Any]:
            best_int, best_float = r[f"{a}_i"], r[f"{a}_f"]
            vals = ([int(best_int)] if best_int is not None else []) + (
                [best_float] if best_float is not None else []
            )
            return one(pick(vals) if vals else None)

        return _AggSQL(parts, finish_minmax, both)
    if kind in ("variance", "stddev"):
        ddof = p["ddof"]
        parts = [(f"{a}_vp", f"var_pop({num})"), (f"{a}_n", f"count({num})")]
        var = f"CASE WHEN {a}_n > {ddof} THEN {a}_vp * {a}_n / ({a}_n - {ddof}) END"

        def finish_var(r: Mapping[str, Any]) -> dict[str, Any]:
            n = r[f"{a}_n"]
            if n <= ddof:
                return one(None)
            value = r[f"{a}_vp"] * n / (n - ddof)
            return one(math.sqrt(value) if kind == "stddev" else value)

        return _AggSQL(parts, finish_var, f"sqrt({var})" if kind == "stddev" else var)
    if kind in ("count_distinct", "count_distinct_exact", "hll_sketch"):
        parts = [(f"{a}_d", f"count(DISTINCT {key})"), (f"{a}_n", f"count({key})")]

        def finish_distinct(r: Mapping[str, Any]) -> dict[str, Any]:
            if kind == "hll_sketch" and r[f"{a}_n"] == 0:
                return one(None)
            return one(int(r[f"{a}_d"]))

        numeric = None if kind == "hll_sketch" else f"{a}_d"
        return _AggSQL(parts, finish_distinct, numeric)
    if kind == "approx_quantiles":
        # Exact decimal fractions: ceil(0.07 * 100) must be 7, not 8.
        quantiles = [Fraction(repr(float(q))) for q in p["quantiles"]]
        parts = [(f"{a}_v", f"list({num} ORDER BY {num}) FILTER (WHERE {num} IS NOT NULL)")]

        def finish_quantiles(r: Mapping[str, Any]) -> dict[str, Any]:
            values = r[f"{a}_v"] or []
            n = len(values)
            if n == 0:
                return {out: None, VALUES_PREFIX + out: []}
            ranks = [-(-q.numerator * n // q.denominator) for q in quantiles]  # ceil(q * n)
            picks = [float(values[max(rank - 1, 0)]) for rank in ranks]
            return {out: picks, VALUES_PREFIX + out: list(values)}

        return _AggSQL(parts, finish_quantiles, None)
    if kind == "top_k":
        k = int(p["k"])
        parts = [(f"{a}_h", f"histogram({key}) FILTER (WHERE {key} IS NOT NULL)")]

        def finish_top(r: Mapping[str, Any]) -> dict[str, Any]:
            counts = [[_decode_key(x), int(c)] for x, c in (r[f"{a}_h"] or {}).items()]
            top = heapq.nsmallest(k, counts, key=lambda vc: (-vc[1], value_key(vc[0])))
            return {out: top or None, COUNTS_PREFIX + out: counts}

        return _AggSQL(parts, finish_top, None)
    if kind in ("first", "last"):
        edge = f"__edge_{a}"
        chosen = "arg_min" if kind == "first" else "arg_max"
        at_edge = f"FILTER (WHERE {v} IS NOT NULL AND __t = {edge})"
        parts = [
            (f"{a}_v", f"{chosen}({v}_key, __seq) {at_edge}"),
            (f"{a}_ties", f"list(DISTINCT {v}_key) {at_edge}"),
        ]

        def finish_edge(r: Mapping[str, Any]) -> dict[str, Any]:
            key = r[f"{a}_v"]
            ties = [_decode_key(x) for x in r[f"{a}_ties"] or []]
            return {out: None if key is None else _decode_key(key), TIES_PREFIX + out: ties}

        numeric = f"CASE WHEN {a}_v[1] IN ('i', 'f') THEN CAST({a}_v[2:] AS DOUBLE) END"
        return _AggSQL(parts, finish_edge, numeric, "min" if kind == "first" else "max", v)
    if kind == "histogram":
        if "bounds" not in p:
            raise ValueError(f"histogram {out!r} needs params.bounds")
        bounds = [repr(float(b)) for b in p["bounds"]]
        conds = [f"{num} < {bounds[0]}"] if bounds else []
        conds += [f"{num} >= {lo} AND {num} < {hi}" for lo, hi in itertools.pairwise(bounds)]
        conds += [f"{num} >= {bounds[-1]}"] if bounds else [f"{num} IS NOT NULL"]
        parts = [(f"{a}_b{j}", f"count(*) FILTER (WHERE {c})") for j, c in enumerate(conds)]
        return _AggSQL(parts, lambda r: one([int(r[alias]) for alias, _ in parts]), None)
    if kind == "collect_set":
        max_size = int(p["max_size"])
        parts = [(f"{a}_s", f"list(DISTINCT {key}) FILTER (WHERE {key} IS NOT NULL)")]

        def finish_set(r: Mapping[str, Any]) -> dict[str, Any]:
            values = sorted((_decode_key(x) for x in r[f"{a}_s"] or []), key=value_key)
            return one(values[:max_size] if values else None)

        return _AggSQL(parts, finish_set, None)
    raise NotImplementedError(
        f"the oracle cannot compute aggregation {kind!r} ({out}); "
        f"it knows {', '.join(sorted(BUILTIN))}"
    )


# ---------------------------------------------------------------------------------------------
# The oracle


class Oracle:
    """Loads a JSON Lines input once; :meth:`rows` gives each view's expected rows.

    Args:
        input_path: A file, a glob, or a list of them (read in file-name order).
    """

    def __init__(self, input_path: str | Path | Sequence[str | Path]) -> None:
        paths = [input_path] if isinstance(input_path, str | Path) else list(input_path)
        self._con = duckdb.connect()
        self._con.execute(_MACROS)
        files = "[" + ", ".join(_sql_str(str(p)) for p in paths) + "]"
        # Raw lines, so that malformed JSON is judged here rather than by a reader's options.
        self._con.execute(f"""
            CREATE TEMP TABLE messages AS
            WITH lines AS (
                SELECT filename, generate_subscripts(l, 1) AS lineno, unnest(l) AS line
                FROM (SELECT filename, string_split(content, chr(10)) AS l FROM read_text({files}))
            )
            SELECT row_number() OVER (ORDER BY filename, lineno) AS __seq, line
            FROM lines
            WHERE CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END
        """)

    def close(self) -> None:
        self._con.close()

    def message_count(self) -> int:
        """Lines that are JSON objects (before any per-view check)."""
        return self._con.execute("SELECT count(*) FROM messages").fetchone()[0]

    def rows(self, view: ViewSpec) -> list[dict[str, Any]]:
        """The rows a bounded run of ``view`` must write, sorted by :func:`row_sort_key`."""
        fields = _Fields()
        t_alias = fields[view.event_time.field]
        group_alias = [fields[c] for c in view.grouping_cols]
        aggs = [
            _agg_sql(i, a, None if a.column is None else fields[a.column])
            for i, a in enumerate(view.aggregations)
        ]
        keep = _filter_sql(view.filter, fields)
        checks = self._usable_checks(view, fields)
        derived = resolve_derived(view)
        derived_sql = self._derived_sql(view, derived, aggs)
        self._build_usable(
            fields, self._needs(view, fields), t_alias, view.event_time.format, keep, checks
        )

        sets = view.grouping_sets if view.grouping_sets is not None else (view.grouping_cols,)
        sizes = list(view.window.sizes) if view.window.type != "session" else [None]
        out: list[dict[str, Any]] = []
        for set_index, cols in enumerate(sets):
            keys = [fields[c] for c in cols]
            for size in sizes:
                sql = self._group_query(view, size, keys, group_alias, aggs, derived_sql)
                cur = self._con.execute(sql)
                names = [d[0] for d in cur.description]
                for tup in cur.fetchall():
                    r = dict(zip(names, tup, strict=True))
                    out.append(self._row(view, r, set_index, size, group_alias, aggs, derived))
        out.sort(key=lambda r: row_sort_key(r, view))
        return out

    # -- steps -----------------------------------------------------------------------------

    @staticmethod
    def _needs(view: ViewSpec, fields: _Fields) -> dict[str, set[str]]:
        """Which typed variants of each field the aggregations and grouping read."""
        needs: dict[str, set[str]] = {}
        for agg in view.aggregations:
            if agg.column is not None and agg.kind != "count":
                kind = "num" if agg.kind in NUMERIC_INPUT else "key"
                needs.setdefault(fields[agg.column], set()).add(kind)
        for c in view.grouping_cols:
            needs.setdefault(fields[c], set()).add("key")
        return needs

    @staticmethod
    def _usable_checks(view: ViewSpec, fields: _Fields) -> list[str]:
        """Conditions a message must meet to be usable by the view (else a dead letter)."""
        checks = []
        for agg in view.aggregations:
            if agg.column is None or agg.kind == "count":
                continue
            v = fields[agg.column]
            test = "is_number" if agg.kind in NUMERIC_INPUT else "is_scalar"
            checks.append(f"({v} IS NULL OR {test}({v}, {v}_t))")
        for c in view.grouping_cols:
            v = fields[c]
            checks.append(f"({v} IS NULL OR is_scalar({v}, {v}_t))")
        return sorted(set(checks))

    def _build_usable(
        self,
        fields: _Fields,
        needs: Mapping[str, set[str]],
        t_alias: str,
        fmt: str | None,
        keep: str,
        checks: list[str],
    ) -> None:
        """Table ``usable``: the view's messages with a valid event time, kept by the filter,
        without unusable values; each field as JSON plus its typed variants.

        Built in steps through tables: DuckDB inlines CTEs, which would parse each line
        again for every reference to a field.
        """
        aliases = list(fields.alias.values())
        slots: dict[str, str] = {}  # JSON pointer -> its value in the list __v

        def slot(pointer: str) -> str:
            return slots.setdefault(pointer, f"__v[{len(slots) + 1}]")

        extracted = ", ".join(f"{_field_sql(n, slot)} AS {a}" for n, a in fields.alias.items())
        pointers = "[" + ", ".join(_sql_str(p) for p in slots) + "]"
        self._con.execute(f"""
            CREATE OR REPLACE TEMP TABLE view_fields AS
            SELECT *, {", ".join(f"json_type({a}) AS {a}_t" for a in aliases)}
            FROM (
                SELECT __seq, {extracted}
                FROM (SELECT __seq, json_extract(line, {pointers}) AS __v FROM messages)
            )
        """)
        t = t_alias
        iso = f"regexp_extract(str_value({t}, {t}_t), {_sql_str(_ISO_PATTERN)}, {_ISO_PARTS})"
        if fmt in _UNIT_MICROS:
            iso = "NULL"  # not read: spare the regular expression
        typed = []
        for a in aliases:
            typed.append(a)
            if "num" in needs.get(a, ()):
                typed += [
                    f"num_value({a}, {a}_t) AS {a}_num",
                    f"canon_int({a}, {a}_t) AS {a}_int",
                    f"canon_float({a}, {a}_t) AS {a}_flt",
                ]
            if "key" in needs.get(a, ()):
                typed.append(f"value_key({a}, {a}_t) AS {a}_key")
        where = " AND ".join([keep, *checks])
        self._con.execute(f"""
            CREATE OR REPLACE TEMP TABLE usable AS
            SELECT __seq, CAST(__us AS BIGINT) AS __t, {", ".join(typed)}
            FROM (
                SELECT *, {_event_time_sql(t_alias, fmt)} AS __us
                FROM (SELECT *, {iso} AS __iso FROM view_fields)
            )
            WHERE __us BETWEEN {MIN_MICROS} AND {MAX_MICROS} AND {where}
        """)

    @staticmethod
    def _windowed_sql(view: ViewSpec, size_us: int | None, keys: list[str]) -> tuple[str, str]:
        """``usable`` with the window columns: (FROM-able SQL, window-identity column)."""
        w = view.window
        if w.type == "fixed":
            s = size_us
            return f"(SELECT *, __t - ((__t % {s}) + {s}) % {s} AS __ws FROM usable)", "__ws"
        if w.type == "sliding":
            s, p = size_us, w.period.micros
            count = -(-s // p)  # windows a message can belong to, at most
            last = f"__t - ((__t % {p}) + {p}) % {p}"
            starts = f"unnest(generate_series({last} - {(count - 1) * p}, {last}, {p}))"
            return (
                f"(SELECT * FROM (SELECT *, {starts} AS __ws FROM usable) WHERE __ws + {s} > __t)",
                "__ws",
            )
        gap = w.gap.micros
        # Sessions are per key: number them by a running count of "gap >= gap" starts.
        part = f"PARTITION BY {', '.join(k + '_key' for k in keys)}" if keys else ""
        order = f"{part} ORDER BY __t, __seq"
        return (
            f"""(SELECT *, sum(__new) OVER ({order} ROWS UNBOUNDED PRECEDING) AS __sid FROM (
                SELECT *, CASE WHEN __t - lag(__t) OVER ({order}) < {gap} THEN 0 ELSE 1 END
                    AS __new
                FROM usable))""",
            "__sid",
        )

    def _group_query(
        self,
        view: ViewSpec,
        size: Any,
        keys: list[str],
        group_alias: list[str],
        aggs: list[_AggSQL],
        derived_sql: dict[str, str],
    ) -> str:
        """One grouping set at one granularity: windows, then GROUP BY, then derived."""
        size_us = None if size is None else size.micros
        source, wid = self._windowed_sql(view, size_us, keys)
        partition = ", ".join([*(k + "_key" for k in keys), wid])
        edges = [
            f"{ag.edge}(__t) FILTER (WHERE {ag.field} IS NOT NULL) "
            f"OVER (PARTITION BY {partition}) AS __edge_a{i}"
            for i, ag in enumerate(aggs)
            if ag.edge
        ]
        if edges:
            source = f"(SELECT *, {', '.join(edges)} FROM {source})"
        if view.window.type == "session":
            bounds = f"min(__t) AS __start, max(__t) + {view.window.gap.micros} AS __end"
        else:
            bounds = f"__ws AS __start, __ws + {size_us} AS __end"
        group_values = [
            f"any_value({a}_key) AS __g{j}" if a in keys else f"NULL AS __g{j}"
            for j, a in enumerate(group_alias)
        ]
        parts = [f"{sql} AS {alias}" for ag in aggs for alias, sql in ag.parts]
        derived = [f"{sql} AS __d_{j}" for j, sql in enumerate(derived_sql.values())]
        group_by = ", ".join([wid, *(k + "_key" for k in keys)])
        inner = f"""
            SELECT {", ".join([bounds, *group_values, *parts])}
            FROM {source} GROUP BY {group_by}"""
        return f"SELECT *{''.join(', ' + d for d in derived)} FROM ({inner})"

    @staticmethod
    def _derived_sql(
        view: ViewSpec, derived: dict[str, Arith], aggs: list[_AggSQL]
    ) -> dict[str, str]:
        by_output = {a.output: (a, s) for a, s in zip(view.aggregations, aggs, strict=True)}

        def ref(name: str) -> str:
            agg, sql = by_output[name]
            if sql.numeric is None:
                raise ValueError(
                    f"derived column refers to {name!r}, a {agg.kind} aggregation, "
                    "which is not a number"
                )
            return sql.numeric

        out = {}
        for name, node in derived.items():
            expr = node.to_sql(ref)
            out[name] = f"(CASE WHEN isfinite({expr}) THEN {expr} END)"
        return out

    @staticmethod
    def _row(
        view: ViewSpec,
        r: Mapping[str, Any],
        set_index: int,
        size: Any,
        group_alias: list[str],
        aggs: list[_AggSQL],
        derived: dict[str, Arith],
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "view": view.name,
            "window_start": format_instant(r["__start"]),
            "window_end": format_instant(r["__end"]),
        }
        for j, col in enumerate(view.grouping_cols):
            key = r[f"__g{j}"]
            row[col] = None if key is None else _decode_key(key)
        if view.grouping_sets is not None:
            row["grouping_set"] = set_index
        if view.window.multi_granularity:
            row["granularity"] = size.text
        hidden: dict[str, Any] = {}
        for ag in aggs:
            for key, value in ag.finish(r).items():
                (hidden if key.startswith(HIDDEN_PREFIX) else row)[key] = value
        for j, name in enumerate(derived):
            row[name] = r[f"__d_{j}"]
        row["pane_timing"] = "ON_TIME"
        row["pane_index"] = 0
        row.update(hidden)
        return row


def expected_rows(view: ViewSpec, input_path: str | Path | Sequence[str | Path]) -> list[dict]:
    """The rows a bounded run of ``view`` over ``input_path`` must produce (see module doc).

    Rows carry hidden ``__...`` keys for the comparator; :func:`public_rows` strips them.
    """
    oracle = Oracle(input_path)
    try:
        return oracle.rows(view)
    finally:
        oracle.close()
