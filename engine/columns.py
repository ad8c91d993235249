"""A batch of raw messages decoded once into the columns its views aggregate.

Two paths give the same result, message for message:

* the **fast path** decodes the whole batch with Arrow's JSON reader against the types the
  fields had so far (strict: a string where a number was, a duplicate key, a line holding two
  objects all fail it; a dotted field is read as its literal key and as a path through
  objects read as structs, the literal key first, as ``fields.getter`` does), then filters,
  reads event times, checks values and builds keys column by column. Rows a vectorized check
  cannot accept (a value of another type, an unreadable time) are handed to the exact path
  one by one, which decides for them;
* the **exact path** decodes each message with orjson and runs the view's own per-message
  definition (:meth:`liveagg.transforms.plan.ViewPlan.extract`): what a message means,
  its dead letters and their reasons are written once, there.

The fast path is an optimization: a batch it cannot read exactly (types that changed, an
object where a value was) takes the exact path, in parts. Arrow's reader is more lenient
than JSON, so lines it would read where the exact path rejects them (:func:`misread`) take
the exact path alone.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from liveagg.combiners._common import double_holds
from liveagg.combiners.registry import builtin_kind
from liveagg.engine import values as v
from liveagg.engine.kernels import vectorized
from liveagg.engine.lines import Lines, joined
from liveagg.engine.partials import Inputs
from liveagg.engine.windows import MAX_US, MIN_US
from liveagg.spec import AllOf, AnyOf, Filter, Predicate
from liveagg.transforms.plan import ORJSON_DEPTH, Reject, ViewPlan, accepted_times, decode

#: ``(payload, view or None, reason, detail, source)`` of a dead letter, counted by the caller.
DeadLetter = tuple[Any, str | None, str, str, Any]

_EPOCH_SCALE = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}
#: The ISO 8601 forms Arrow's cast parses exactly as the view's parser does: a date, ``T`` or
#: a space, a time with seconds, then ``Z`` or an offset (``+hh:mm``, ``+hhmm``, ``+hh``: cast
#: to UTC) or nothing (a log's naive time, UTC to the view's parser: cast without a zone); up
#: to six fraction digits in microseconds, seven to nine (Java's and Go's nanoseconds) in
#: nanoseconds, floored to microseconds as the parser drops the digits past six. Other strings
#: are parsed one by one by the view's parser, as are dates Arrow refuses (February 30th).
_ISO_TIME = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9]"
)
_ISO_ZONE = r"(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)"
#: (pattern, unit, zone) of each form, the most common first.
_ISO_FORMS = tuple(
    (f"{_ISO_TIME}{fraction}{zone}$", unit, tz)
    for fraction, unit in ((r"(\.[0-9]{1,6})?", "us"), (r"\.[0-9]{7,9}", "ns"))
    for zone, tz in ((_ISO_ZONE, "UTC"), ("", None))
)
#: Parts of a batch smaller than this that the fast path cannot read take the exact path.
MIN_SPLIT = 64
_NUMERIC_KINDS = (
    "sum",
    "mean",
    "min",
    "max",
    "variance",
    "stddev",
    "histogram",
    "approx_quantiles",
)


@dataclass
class ViewBatch:
    """What one view takes from a batch: its inputs (the fast path's and the exact path's
    rows are kept apart: their key columns may differ in form), and its counts."""

    inputs: list[Inputs] = field(default_factory=list)
    used: int = 0
    filtered: int = 0


@dataclass
class Decoded:
    """A decoded batch: per view its :class:`ViewBatch`, and the dead letters."""

    views: list[ViewBatch]
    dead_letters: list[DeadLetter]
    lines: int = 0
    blank: int = 0
    messages: int = 0
    fast: bool = False
    exact_lines: int = 0  # lines the exact path decoded


class Decoder:
    """Decodes batches for a fixed list of views (one per worker; it learns field types)."""

    def __init__(self, plans: Sequence[ViewPlan]) -> None:
        self._plans = list(plans)
        self._fast_views = [_vectorizable(plan) for plan in self._plans]
        # The fields the fast path reads: those of the views it aggregates (a view with a
        # custom aggregation takes every message through the exact path, its fields too).
        self._fields = sorted(
            {
                f
                for plan, fast in zip(self._plans, self._fast_views, strict=True)
                if fast
                for f in _fields_of(plan)
            }
        )
        self._types: dict[str, pa.DataType] | None = None
        #: A dotted field's type as a path into nested objects (its literal key's: _types).
        self._nested: dict[str, pa.DataType] = {}
        #: Fields whose values mix JSON types (numbers and "N/A", say): read from the decoded
        #: messages, not by Arrow's reader, which fails a batch on any value of another type;
        #: their values of the learnt type are columns, the others go to the exact path.
        self._loose: set[str] = set()
        self._fast_ok = any(self._fast_views) and _paths_fit(self._fields)

    def decode(
        self, payloads: Sequence[Any], source: Callable[[int], Any] | None = None
    ) -> Decoded:
        """Decode ``payloads`` (``bytes`` or ``str``, one message each); ``source(i)`` locates
        payload ``i`` for its dead letters (a file and line, a Kafka offset)."""
        source = source or _no_source
        if type(payloads) is Lines:  # a file's lines, each an object already
            lines, index, blank = payloads, list(range(len(payloads))), 0
        else:
            lines, index, blank = message_lines(payloads)
        if self._fast_ok and self._types is None:
            # Types from a sample; a batch they do not fit is split until the parts that do
            # take the fast path, and the types are learnt again when most of it did not.
            self._learn([msg for msg, problem in map(_loads, lines[:256]) if problem is None])
        decoded = self._screened(lines, payloads, index, source)
        if self._fast_ok and decoded.exact_lines * 2 > len(lines):
            self._learn([msg for msg, problem in map(_loads, lines[:1024]) if problem is None])
        decoded.lines = len(payloads)
        decoded.blank = blank
        return decoded

    # -- exact path ------------------------------------------------------------------------

    def _screened(
        self,
        lines: list[bytes],
        payloads: Sequence[Any],
        index: list[int],
        source: Callable[[int], Any],
    ) -> Decoded:
        """:meth:`_split` for the lines the fast path reads as the exact path does; the exact
        path for the others (:func:`misread`)."""
        if not (self._fast_ok and self._types is not None and lines):
            return self._split(lines, payloads, index, source)
        odd, whole = misread(lines)
        if not odd.any():
            return self._split(lines, payloads, index, source, whole)
        rest = np.flatnonzero(~odd).tolist()
        rows = np.flatnonzero(odd).tolist()
        exact = self._exact([lines[r] for r in rows], payloads, [index[r] for r in rows], source)
        if not rest:
            return exact
        fast = self._split([lines[r] for r in rest], payloads, [index[r] for r in rest], source)
        return _join(fast, exact)

    def _split(
        self,
        lines: list[bytes],
        payloads: Sequence[Any],
        index: list[int],
        source: Callable[[int], Any],
        whole: bytes | None = None,
    ) -> Decoded:
        """The fast path where it reads the lines exactly; halves of what it cannot read are
        tried again, down to :data:`MIN_SPLIT` lines, which take the exact path. ``whole``:
        the lines joined by newlines, if the caller has them."""
        if self._fast_ok and self._types is not None:
            decoded = self._fast(lines, payloads, index, source, whole)
            if decoded is not None:
                return decoded
            if len(lines) > MIN_SPLIT:
                half = len(lines) // 2
                return _join(
                    self._split(lines[:half], payloads, index[:half], source),
                    self._split(lines[half:], payloads, index[half:], source),
                )
        return self._exact(lines, payloads, index, source)

    def _exact(
        self,
        lines: list[bytes],
        payloads: Sequence[Any],
        index: list[int],
        source: Callable[[int], Any],
    ) -> Decoded:
        dead: list[DeadLetter] = []
        msgs: list[dict] = []
        where: list[int] = []
        for line, i in zip(lines, index, strict=True):
            msg, problem = _loads(line)
            if problem is not None:
                dead.append((payloads[i], None, problem[0], problem[1], source(i)))
                continue
            msgs.append(msg)
            where.append(i)
        self._widen(msgs)
        views = [
            self._exact_view(
                plan, msgs, [payloads[i] for i in where], [source(i) for i in where], dead, where
            )
            for plan in self._plans
        ]
        return Decoded(views, dead, messages=len(msgs), exact_lines=len(lines))

    def _exact_view(
        self,
        plan: ViewPlan,
        msgs: list[dict],
        payloads: list[Any],
        sources: list[Any],
        dead: list[DeadLetter],
        origins: list[int],
    ) -> ViewBatch:
        batch = ViewBatch()
        rows = _exact_rows(plan, msgs, payloads, sources, dead, batch, origins)
        if rows is not None:
            batch.inputs.append(rows)
        return batch

    def _learn(self, msgs: list[dict]) -> None:
        """Field types for the fast path, from messages the exact path decoded."""
        if not self._fast_ok or not msgs:
            return
        types: dict[str, pa.DataType] = {}
        nested: dict[str, pa.DataType] = {}
        loose: set[str] = set()
        for name, path, values in self._values(msgs):
            kinds = set(map(type, values))
            kinds.discard(type(None))
            kind = _arrow_type(kinds, values)
            if kind is None and not path and "." not in name:
                kind = _loose_type(kinds, values)
                loose.add(name)
            if kind is None:
                self._types = None
                return
            (nested if path else types)[name] = kind
        self._types = types
        self._nested = nested
        self._loose = loose

    def _widen(self, msgs: list[dict]) -> None:
        """Widen the learnt types by what messages the fast path could not read held.

        A field the sample never had (null) takes the type it shows, and an int64 field that
        met a double becomes float64 (an integral double takes the int's place everywhere,
        and the fast path checks that each double holds its integer exactly). Other changes,
        a string where a number was, stay with the exact path, message by message. Without
        this, a field missing from the sample, or one double among ints, made the reader fail
        on part of every later batch, which then took the exact path.
        """
        if not (self._fast_ok and self._types is not None and msgs):
            return
        for name, path, values in self._values(msgs):
            table = self._nested if path else self._types
            kinds = set(map(type, values))
            kinds.discard(type(None))
            have, kind = table[name], _arrow_type(kinds, values) if kinds else None
            if kind is None or kind == have:
                continue
            if pa.types.is_null(have) or (have == pa.int64() and kind == pa.float64()):
                table[name] = kind

    def _values(self, msgs: list[dict]) -> Iterator[tuple[str, bool, list[Any]]]:
        """Each field's values in ``msgs``: its literal key's, then, for a dotted field, its
        path's through objects (True), as :func:`liveagg.transforms.fields.getter` reads both."""
        for name in self._fields:
            yield name, False, [m.get(name) for m in msgs]
            if "." in name:
                parts = name.split(".")
                yield name, True, [_nested_value(m, parts) for m in msgs]

    def _schema(self) -> pa.Schema:
        """What the reader reads: every field's literal key, and the objects holding the
        dotted fields' paths as structs (their other keys are skipped)."""
        assert self._types is not None
        fields: list[tuple[str, pa.DataType]] = [
            (name, self._types[name]) for name in self._fields if name not in self._loose
        ]
        tree: dict[str, Any] = {}
        for name, kind in self._nested.items():
            *parents, leaf = name.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = kind

        def struct(node: dict[str, Any]) -> pa.DataType:
            return pa.struct(
                [(k, struct(x) if isinstance(x, dict) else x) for k, x in node.items()]
            )

        fields += [(root, struct(node)) for root, node in tree.items()]
        return pa.schema(fields)

    def _column(self, table: pa.Table, name: str) -> pa.Array | None:
        """A field's column as :func:`liveagg.transforms.fields.getter` reads it: the literal
        key where it is not null, else the path through objects; None when the two have
        different types in this batch (the exact path then decides)."""
        column = table.column(name).combine_chunks()
        if "." not in name:
            return column
        root, *path = name.split(".")
        nested = pc.struct_field(table.column(root).combine_chunks(), path)
        if column.null_count == len(column):
            return nested
        if column.type != nested.type:
            return None
        return pc.coalesce(column, nested)

    # -- fast path -------------------------------------------------------------------------

    def _fast(
        self,
        lines: list[bytes],
        payloads: Sequence[Any],
        index: list[int],
        source: Callable[[int], Any],
        whole: bytes | None = None,
    ) -> Decoded | None:
        if not lines:
            return None
        table = read_table(joined(lines) if whole is None else whole, self._schema())
        if table is None or table.num_rows != len(lines):
            return None
        msgs: dict[int, dict] = {}

        def message(row: int) -> dict:
            msg = msgs.get(row)
            if msg is None:
                msg, problem = _loads(lines[row])
                if problem is not None:  # read by Arrow, not by the exact path: not ours
                    raise _Misread
                msgs[row] = msg
            return msg

        columns: dict[str, pa.Array] = {}
        times: dict[tuple[str, str | None], tuple[np.ndarray, np.ndarray]] = {}
        strays: dict[str, np.ndarray] = {}  # per loose field, rows of another type
        dead: list[DeadLetter] = []
        views: list[ViewBatch] = []
        try:
            # Every message, decoded once, for the loose fields and the views read exactly.
            wanted = self._loose or not all(self._fast_views)
            everyone = [message(row) for row in range(len(lines))] if wanted else []
            for name in self._fields:
                if name in self._loose:
                    columns[name], strays[name] = _loose_column(
                        [m.get(name) for m in everyone], self._types[name]
                    )
                    continue
                column = self._column(table, name)
                if column is None:
                    return None
                columns[name] = column
            for column in columns.values():
                if pa.types.is_floating(column.type):
                    present = column.drop_null().to_numpy()
                    integral = present[np.floor(present) == present]
                    if len(integral) and np.abs(integral).max() >= v.EXACT_FLOAT_INT:
                        return None  # an integer a double does not hold exactly
            exact = not all(self._fast_views)  # a view with a custom aggregation
            origins = np.asarray(index, dtype=np.int64)  # once for all views
            exact_payloads = [payloads[i] for i in index] if exact else []
            exact_sources = [source(i) for i in index] if exact else []
            for plan, fast in zip(self._plans, self._fast_views, strict=True):
                if fast:
                    batch = self._fast_view(
                        plan,
                        columns,
                        times,
                        strays,
                        message,
                        payloads,
                        index,
                        origins,
                        source,
                        dead,
                    )
                else:
                    batch = self._exact_view(
                        plan, everyone, exact_payloads, exact_sources, dead, index
                    )
                views.append(batch)
        except _Misread:
            return None
        return Decoded(views, dead, messages=len(lines), fast=True)

    def _fast_view(
        self,
        plan: ViewPlan,
        columns: dict[str, pa.Array],
        times: dict[tuple[str, str | None], tuple[np.ndarray, np.ndarray]],
        strays: dict[str, np.ndarray],
        message: Callable[[int], dict],
        payloads: Sequence[Any],
        index: list[int],
        origins: np.ndarray,
        source: Callable[[int], Any],
        dead: list[DeadLetter],
    ) -> ViewBatch:
        """One view's inputs from the batch's columns; ``origins`` is ``index`` as an array."""
        batch = ViewBatch()
        spec = plan.spec
        n = len(index)
        # Rows whose loose fields hold a value of another type: the exact path decides them
        # whole, filter included.
        stray = np.zeros(n, dtype=bool)
        for name in _fields_of(plan) & strays.keys():
            stray |= strays[name]
        keep = np.ones(n, dtype=bool)
        if spec.filter is not None:
            keep = _filter_mask(spec.filter, columns, n) | stray
            batch.filtered = int(n - keep.sum())
        ok = keep & ~stray
        # Views reading one field in one format share its times (the arrays are not changed).
        when = (spec.event_time.field, spec.event_time.format)
        if when not in times:
            times[when] = column_times(when[1], columns[when[0]])
        ts, ts_ok = times[when]
        first, last = accepted_times(spec)
        ok &= ts_ok & (ts >= first) & (ts <= last)  # the rest: out of range, decided exactly
        keys = []
        for col in spec.grouping_cols:
            column = columns[col]
            if pa.types.is_boolean(column.type) or pa.types.is_null(column.type):
                column = v.scalars(column)
            keys.append(v.scalars(column))
        inputs: list[tuple[np.ndarray | None, Any] | None] = []
        checks: list[tuple[pa.Array, str]] = []
        kinds = _kinds(plan)
        for agg, kind in zip(spec.aggregations, kinds, strict=True):
            if agg.column is None:
                inputs.append(None)
                continue
            column = columns[agg.column]
            checks.append((column, kind))
            valid = (
                None  # every row holds a value
                if not column.null_count
                else ~np.asarray(column.is_null().to_numpy(zero_copy_only=False))
            )
            if kind in _NUMERIC_KINDS and not (
                pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
            ):
                # strings and booleans where numbers are needed: exact path
                ok &= False if valid is None else ~valid
            inputs.append((valid, column))
        good = np.flatnonzero(ok)
        slow = np.flatnonzero(keep & ~ok)
        if len(good):
            remap = np.full(n, -1, dtype=np.int64)
            remap[good] = np.arange(len(good))
            taken_values: list[tuple[np.ndarray, Any] | None] = []
            shared: dict[tuple[str, str], tuple[np.ndarray, Any]] = {}
            for agg, kind, item in zip(spec.aggregations, kinds, inputs, strict=True):
                if item is None:
                    taken_values.append(None)
                    continue
                found = shared.get((agg.column, _form(kind)))  # type: ignore[arg-type]
                if found is None:  # aggregations over one field share its column
                    valid, column = item
                    rows = good if valid is None else good[valid[good]]
                    taken = column if len(rows) == n else column.take(pa.array(rows))
                    found = (remap[rows], _as_input(kind, taken))
                    shared[(agg.column, _form(kind))] = found  # type: ignore[index]
                taken_values.append(found)
            kept_keys = keys
            if len(good) < n:  # most often every row is kept: nothing to take then
                kept = pa.array(good)
                kept_keys = [k.take(kept) for k in keys]
            batch.inputs.append(
                Inputs(
                    ts[good],
                    kept_keys,
                    taken_values,
                    origins[good],
                )
            )
            batch.used += len(good)
        if len(slow):
            msgs = [message(int(r)) for r in slow]
            rows = _exact_rows(
                plan,
                msgs,
                [payloads[index[r]] for r in slow.tolist()],
                [source(index[r]) for r in slow.tolist()],
                dead,
                batch,
                [index[r] for r in slow.tolist()],
            )
            if rows is not None:
                batch.inputs.append(rows)
        return batch


def read_table(joined: bytes, schema: pa.Schema) -> pa.Table | None:
    """Newline-joined messages read by Arrow's JSON reader as ``schema`` (other keys
    skipped), or None when the reader refuses the batch (a value of another type, a
    duplicate key, a line that is no object)."""
    try:
        return pj.read_json(
            io.BytesIO(joined),
            read_options=pj.ReadOptions(use_threads=False, block_size=1 << 30),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def column_times(fmt: str | None, column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Event times in microseconds of a column read as ``fmt`` (a view's
    ``event_time.format``), and whether each is valid; the rest are left to the view's
    parser (:func:`liveagg.transforms.eventtime.parser`)."""
    n = len(column)
    ts = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    kind = column.type
    if pa.types.is_string(kind) and fmt in (None, "iso8601"):
        rest = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        rows = np.flatnonzero(zulu_times(column, rest))
        if len(rows):
            rows, parsed = _cast_times(column, rows, pa.timestamp("us", tz="UTC"))
            ts[rows] = parsed
            ok[rows] = True
            rest[rows] = False
        for pattern, unit, zone in _ISO_FORMS:
            if not rest.any():
                break
            part = column if rest.all() else column.filter(pa.array(rest))
            where = np.flatnonzero(rest)
            match = pc.match_substring_regex(part, pattern).fill_null(False)
            rows = where[match.to_numpy(zero_copy_only=False)]
            if not len(rows):
                continue
            rows, parsed = _cast_times(column, rows, pa.timestamp(unit, tz=zone))
            ts[rows] = parsed // (1000 if unit == "ns" else 1)
            ok[rows] = True
            rest[rows] = False
    elif (pa.types.is_integer(kind) or pa.types.is_floating(kind)) and fmt != "iso8601":
        scale = _EPOCH_SCALE[fmt or "epoch_s"]
        present = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        raw = column.fill_null(0).to_numpy()
        if pa.types.is_integer(kind):
            inside = present & (raw >= MIN_US // scale) & (raw <= MAX_US // scale)
            ts = np.where(inside, raw, 0).astype(np.int64) * scale
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                scaled = np.round(raw * scale)
                # an integer a double does not hold exactly: the parser reads its digits
                inexact = (np.floor(raw) == raw) & (np.abs(raw) >= v.EXACT_FLOAT_INT)
            inside = present & ~inexact & (scaled >= MIN_US) & (scaled <= MAX_US)
            ts = np.where(inside, scaled, 0).astype(np.int64)
        ok = inside
    ok &= (ts >= MIN_US) & (ts <= MAX_US)
    return ts, ok


def message_lines(payloads: Sequence[Any]) -> tuple[list[bytes], list[int], int]:
    """The payloads that hold a message, as bytes without the JSON whitespace around them
    (a Kafka producer's trailing newline or CRLF is no part of a message, and left in, it kept
    the whole batch off the fast path), their positions, and how many hold none."""
    if set(map(type, payloads)) <= {bytes}:  # the common case, without a loop in Python
        stripped = [payload.strip(b" \t\r\n") for payload in payloads]
        if all(stripped):
            return stripped, list(range(len(stripped))), 0
    lines: list[bytes] = []
    index: list[int] = []
    blank = 0
    for i, payload in enumerate(payloads):
        data = (
            payload if isinstance(payload, bytes) else str(payload).encode("utf-8", "surrogatepass")
        )
        data = data.strip(b" \t\r\n")
        if not data:  # JSON whitespace only: no message
            blank += 1
            continue
        lines.append(data)
        index.append(i)
    return lines, index, blank


#: The Python types of the values a column of each learnt type holds.
_ACCEPTS = {
    pa.int64(): (int,),
    pa.float64(): (int, float),
    pa.string(): (str,),
    pa.bool_(): (bool,),
}


def _loose_type(kinds: set[type], values: list[Any]) -> pa.DataType | None:
    """The column type of a field whose values mix JSON types: its numbers', else its
    strings' (the other values go to the exact path)."""
    for group in ({int, float}, {str}, {bool}):
        if kinds & group:
            return _arrow_type(kinds & group, [x for x in values if type(x) in group])
    return None


def _loose_column(values: list[Any], kind: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """A loose field's column: its values of ``kind``, null elsewhere; and the rows holding
    a value of another type."""
    accepts = _ACCEPTS[kind]
    fits = [x if type(x) in accepts else None for x in values]
    if kind == pa.int64():  # beyond 64 bits: not a value of the column
        fits = [x if x is None or -(2**63) <= x < 2**63 else None for x in fits]
    elif kind == pa.float64():  # an int no double holds exactly: the exact path reads it
        fits = [x if double_holds(x) else None for x in fits]
    stray = np.fromiter(
        (x is not None and y is None for x, y in zip(values, fits, strict=True)),
        dtype=bool,
        count=len(values),
    )
    return pa.array(fits, kind), stray


#: ``YYYY-MM-DDTHH:MM:SS[.f]Z`` by position: the lowest and highest byte allowed at each
#: position of the longest form (``T`` and the space are checked apart, the fraction's
#: length and the ``Z`` per length).
_ZULU_LOW = np.frombuffer(b"0000-00-00 00:00:00.000000Z", dtype=np.uint8)
_ZULU_HIGH = np.frombuffer(b"9999-19-39T29:59:59.999999Z", dtype=np.uint8)
#: (position of the tens digit, lowest, highest) of month, day and hour (minute and
#: second are bounded by the bytes alone).
_ZULU_RANGES = ((5, 1, 12), (8, 1, 31), (11, 0, 23))


def zulu_times(column: pa.Array, among: np.ndarray) -> np.ndarray:
    """Which strings of ``column`` (rows where ``among``) have the most common ISO 8601 form,
    a UTC time as JavaScript's ``toISOString`` and Java's ``Instant`` write it:
    ``YYYY-MM-DD``, ``T`` or a space, ``HH:MM:SS``, up to six fraction digits, ``Z``. That is
    the first of :data:`_ISO_FORMS` with a ``Z`` (the same ranges of month, day, hour, minute
    and second), checked on the strings' bytes by position with numpy instead of by Arrow's
    regex kernel. Rows it leaves out are tried against :data:`_ISO_FORMS` as before."""
    n = len(column)
    found = np.zeros(n, dtype=bool)
    data = column.buffers()[2]
    if not n or data is None:
        return found
    offsets = np.frombuffer(
        column.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * column.offset
    )
    chars = np.frombuffer(data, dtype=np.uint8)
    lengths = np.diff(offsets)
    for length in (24, 20, 22, 23, 25, 26, 27):  # 20, and 21 + 1 to 6 fraction digits
        same = among & (lengths == length)
        if same.all():  # one form throughout (the common case): the bytes are the matrix
            rows = np.arange(n)
            text = chars[offsets[0] : offsets[-1]].reshape(n, length)
        else:
            rows = np.flatnonzero(same)
            if not len(rows):
                continue
            text = chars[offsets[rows][:, None] + np.arange(length)]
        low = _ZULU_LOW[:length].copy()
        high = _ZULU_HIGH[:length].copy()
        low[-1] = high[-1] = ord("Z")
        good = ((text >= low) & (text <= high)).all(axis=1)
        good &= (text[:, 10] == ord("T")) | (text[:, 10] == ord(" "))
        for at, least, most in _ZULU_RANGES:
            value = (text[:, at] - ord("0")) * 10 + (text[:, at + 1] - ord("0"))
            good &= (value >= least) & (value <= most)
        found[rows[good]] = True
        if len(rows) == n:
            break
    return found


def _cast_times(
    column: pa.Array, rows: np.ndarray, target: pa.DataType
) -> tuple[np.ndarray, np.ndarray]:
    """The ``rows`` whose strings Arrow's cast reads as ``target``, and their values (int64).

    A cast fails whole on one string it refuses (February 30th): the halves of a part it
    refuses are cast again, down to single rows, so that such a string leaves the rest of
    its batch on the fast path; the rows refused are left to the view's parser.
    """
    try:
        return rows, pc.cast(column.take(pa.array(rows)), target).cast(pa.int64()).to_numpy()
    except pa.ArrowInvalid:
        if len(rows) == 1:
            return rows[:0], np.zeros(0, dtype=np.int64)
        half = len(rows) // 2
        first, second = (_cast_times(column, part, target) for part in (rows[:half], rows[half:]))
        return np.concatenate([first[0], second[0]]), np.concatenate([first[1], second[1]])


def _paths_fit(fields: Sequence[str]) -> bool:
    """Whether the fields' dotted paths can be read as structs: no empty part, and no field
    is an object that another field's path goes through ("a" beside "a.b")."""
    names = set(fields)
    for name in fields:
        parts = name.split(".")
        if "" in parts:
            return False
        if any(".".join(parts[:i]) in names for i in range(1, len(parts))):
            return False
    return True


def _nested_value(msg: dict, parts: list[str]) -> Any:
    """The value at a dotted path through objects only (None past anything else)."""
    value: Any = msg
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class _Misread(Exception):
    """A line Arrow's reader read that the exact path does not decode: the part it is in
    takes the exact path."""


_NAN_INF = (b"NaN", b"Inf")


def misread(lines: Sequence[bytes]) -> tuple[np.ndarray, bytes]:
    """Which of ``lines`` (stripped, none blank) Arrow's JSON reader could read although the
    exact path rejects them, or read otherwise: they are decoded by the exact path alone.
    Also the lines joined by newlines, as the reader takes them.

    Arrow's reader (``cpp/src/arrow/json/parser.cc``) parses with RapidJSON's
    ``kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag |
    kParseNumbersAsStringsFlag`` over ``EncodedInputStream<UTF8<>, MemoryStream>``: it takes
    ``NaN``, ``Inf`` and ``Infinity`` as numbers, any nesting depth, and strings of invalid
    UTF-8 (no ``kParseValidateEncodingFlag``), all of which orjson rejects. The test is
    conservative: a line with ``NaN`` or ``Inf`` inside a string goes to the exact path too.
    Lines that are not framed as one object take the exact path here as well, rather than
    making the whole batch fail the reader.
    """
    n = len(lines)
    whole = joined(lines)
    if type(lines) is Lines:
        starts, lengths = lines.bounds()
    else:
        lengths = np.fromiter(map(len, lines), dtype=np.int64, count=n)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1] + 1, out=starts[1:])
    data = np.frombuffer(whole, dtype=np.uint8)
    odd = (data[starts] != ord("{")) | (data[starts + lengths - 1] != ord("}"))
    head = data[:-2]
    for token in _NAN_INF:
        at = np.flatnonzero(head == token[0])
        at = at[(data[at + 1] == token[1]) & (data[at + 2] == token[2])]
        if len(at):
            odd[np.searchsorted(starts, at, side="right") - 1] = True
    if not whole.isascii():
        try:
            whole.decode("utf-8")
        except UnicodeDecodeError:
            for i, line in enumerate(lines):
                if not line.isascii():
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        odd[i] = True
    for i in np.flatnonzero(lengths >= 2 * ORJSON_DEPTH).tolist():
        if lines[i].count(b"[") + lines[i].count(b"{") >= ORJSON_DEPTH:
            odd[i] = True
    return odd, whole


def _join(a: Decoded, b: Decoded) -> Decoded:
    views = []
    for x, y in zip(a.views, b.views, strict=True):
        views.append(ViewBatch(x.inputs + y.inputs, x.used + y.used, x.filtered + y.filtered))
    return Decoded(
        views,
        a.dead_letters + b.dead_letters,
        messages=a.messages + b.messages,
        fast=a.fast or b.fast,
        exact_lines=a.exact_lines + b.exact_lines,
    )


def _no_source(i: int) -> None:
    return None


def _loads(line: bytes) -> tuple[Any, tuple[str, str] | None]:
    """The message of a (non-blank) line, or the reason and detail of its dead letter: the
    message path's own decoding (:func:`liveagg.transforms.plan.decode`)."""
    try:
        return decode(line), None
    except Reject as r:
        return None, (r.reason, r.detail)


def _exact_rows(
    plan: ViewPlan,
    msgs: list[dict],
    payloads: list[Any],
    sources: list[Any],
    dead: list[DeadLetter],
    batch: ViewBatch,
    origins: list[int],
) -> Inputs | None:
    """The view's own per-message definition over ``msgs``: inputs, dead letters, counts.
    ``origins[i]`` is message ``i``'s position in the batch."""
    times: list[int] = []
    rows: list[tuple[Any, ...]] = []
    groups: list[tuple[Any, ...]] = []
    kept: list[int] = []
    for msg, payload, where, origin in zip(msgs, payloads, sources, origins, strict=True):
        try:
            extracted = plan.extract(msg)
        except Reject as r:
            dead.append((payload, plan.name, r.reason, r.detail, where))
            continue
        if extracted is None:
            batch.filtered += 1
            continue
        ts, row, group = extracted
        times.append(ts)
        rows.append(row)
        groups.append(group)
        kept.append(origin)
    batch.used += len(times)
    if not times:
        return None
    keys = [
        v.scalars_from_python([g[i] for g in groups]) for i in range(len(plan.spec.grouping_cols))
    ]
    values: list[tuple[np.ndarray, Any] | None] = []
    # Values are shared only between aggregations that coerce them alike: a quantile's are
    # doubles, a max's keep integers exact.
    shared: dict[tuple[str, str, Any], tuple[np.ndarray, Any]] = {}
    kinds = _kinds(plan)
    for j, agg in enumerate(plan.spec.aggregations):
        if agg.column is None:
            values.append(None)
            continue
        same = (agg.column, _form(kinds[j]), getattr(type(plan.fns[j]), "coerce", None))
        found = shared.get(same)
        if found is not None and vectorized(plan.fns[j]):
            values.append(found)
            continue
        present = [i for i, row in enumerate(rows) if row[j] is not None]
        items = [rows[i][j] for i in present]
        if items and type(items[0]) is tuple:  # (event time, value) of first/last
            items = [item[1] for item in items]
        if not vectorized(plan.fns[j]):  # a custom CombineFn takes its values as they are
            values.append((np.array(present, dtype=np.int64), items))
            continue
        found = (np.array(present, dtype=np.int64), _python_input(kinds[j], items))
        shared[same] = found
        values.append(found)
    return Inputs(np.array(times, dtype=np.int64), keys, values, np.array(kept, dtype=np.int64))


def _kinds(plan: ViewPlan) -> list[str]:
    """Each aggregation's kind as its kernel takes values: a ``custom`` one that names a
    built-in class is that built-in (its kernel, chosen by class, takes numbers, not the
    scalars of a custom aggregation)."""
    return [
        builtin_kind(type(fn)) or agg.kind
        for agg, fn in zip(plan.spec.aggregations, plan.fns, strict=True)
    ]


def _form(kind: str) -> str:
    """How an aggregation takes its column: counted, as numbers or as scalars."""
    if kind == "count":
        return "count"
    return "number" if kind in _NUMERIC_KINDS else "scalar"


def _python_input(kind: str, items: list[Any]) -> Any:
    if kind == "count":  # only how many values there are matters
        return np.ones(len(items), dtype=np.int8)
    if kind in _NUMERIC_KINDS:
        return v.numbers(items)
    return v.scalars_from_python(items)


def _as_input(kind: str, column: pa.Array) -> Any:
    if kind == "count":
        return np.ones(len(column), dtype=np.int8)
    if kind in _NUMERIC_KINDS:
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            # No values: a field no message of the batch has (Arrow's null type), or one whose
            # every value is a boolean or a string, which went to the exact path; numpy cannot
            # take an empty column of those without a copy.
            return np.zeros(len(column), dtype=np.float64)
        return column.to_numpy()
    return v.scalars(column)


def _fields_of(plan: ViewPlan) -> set[str]:
    spec = plan.spec
    names = {spec.event_time.field, *spec.grouping_cols}
    names.update(a.column for a in spec.aggregations if a.column is not None)
    names.update(_filter_fields(spec.filter))
    return names


def _filter_fields(spec: Filter | None) -> set[str]:
    if spec is None:
        return set()
    if isinstance(spec, AllOf | AnyOf):
        return set().union(*(_filter_fields(item) for item in spec.items))
    return {spec.field}


def _vectorizable(plan: ViewPlan) -> bool:
    """Whether the fast path computes this view's inputs (built-in aggregations only)."""
    return all(vectorized(fn) for fn in plan.fns)


def _arrow_type(kinds: set[type], values: list[Any]) -> pa.DataType | None:
    if not kinds:
        return pa.null()
    if kinds == {str}:
        return pa.string()
    if kinds == {bool}:
        return pa.bool_()
    if kinds <= {int, float}:
        ints = [x for x in values if type(x) is int]
        if any(not -(2**63) <= x < 2**63 for x in ints):
            return None
        return pa.int64() if kinds == {int} else pa.float64()
    return None


# ---------------------------------------------------------------------------------------------
# Filters over columns: the semantics of liveagg.transforms.filters, vectorized
# ---------------------------------------------------------------------------------------------

_KINDS = {bool: "bool", int: "number", float: "number", str: "str"}


def _column_kind(column: pa.Array) -> str | None:
    kind = column.type
    if pa.types.is_string(kind):
        return "str"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "number"
    return None  # all null


def _filter_mask(spec: Filter, columns: dict[str, pa.Array], n: int) -> np.ndarray:
    if isinstance(spec, AllOf):
        mask = np.ones(n, dtype=bool)
        for item in spec.items:
            mask &= _filter_mask(item, columns, n)
        return mask
    if isinstance(spec, AnyOf):
        mask = np.zeros(n, dtype=bool)
        for item in spec.items:
            mask |= _filter_mask(item, columns, n)
        return mask
    return _predicate_mask(spec, columns[spec.field], n)


def _bools(array: Any, n: int) -> np.ndarray:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _predicate_mask(p: Predicate, column: pa.Array, n: int) -> np.ndarray:
    present = _bools(column.is_valid(), n)
    if p.op == "exists":
        return present if p.value is not False else ~present
    kind = _column_kind(column)
    if p.op in ("in", "not_in"):
        given = list(p.value or [])
        comparable = [o for o in given if type(o) in _KINDS]
        inside = p.op == "in"
        if not inside and len(comparable) < len(given):
            return np.zeros(n, dtype=bool)
        same = [o for o in comparable if _KINDS[type(o)] == kind]
        if kind is None:
            return np.zeros(n, dtype=bool)
        if kind == "number":  # only the numbers some value of the column may equal
            exact = [_exact_number("eq", o, column.type) for o in same]
            same = [x for x in exact if type(x) is not bool]
            if pa.types.is_floating(column.type):
                # pc.is_in([-0.0, 0.0], value_set=[0.0]) gives [False, True] (pyarrow 25),
                # where equal says -0.0 == 0.0; x + 0.0 is 0.0 for either zero, x otherwise.
                column = pc.add(column, pa.scalar(0.0, column.type))
                same = [x + 0.0 for x in same]
        hits = (
            _bools(pc.is_in(column, value_set=pa.array(same, column.type)), n)
            if same
            else np.zeros(n, dtype=bool)
        )
        return present & (hits if inside else ~hits)
    want = p.value
    want_kind = _KINDS.get(type(want))
    if want_kind is None:
        return np.zeros(n, dtype=bool)
    if p.op in ("eq", "ne"):
        if kind != want_kind:
            return np.zeros(n, dtype=bool) if p.op == "eq" else present
    elif want_kind == "bool" or kind != want_kind:
        return np.zeros(n, dtype=bool)
    if kind == "number":
        bound = _exact_number(p.op, want, column.type)
        if type(bound) is bool:  # on one side of every value of the column
            return present if bound else np.zeros(n, dtype=bool)
        want = bound
    compare = {
        "eq": pc.equal,
        "ne": pc.not_equal,
        "gt": pc.greater,
        "ge": pc.greater_equal,
        "lt": pc.less,
        "le": pc.less_equal,
    }
    return present & _bools(compare[p.op](column, pa.scalar(want, column.type)), n)


def _exact_number(op: str, want: int | float, kind: pa.DataType) -> Any:
    """A number of the column's type that compares with each of its values under ``op`` as
    ``want`` does in Python (exactly), or the answer for every value (a bool).

    Arrow would convert one side: an int64 column to doubles (failing beyond 2**53), a float
    to an int (1.5 matching 1), an int beyond 64 bits to nothing at all.
    """
    if pa.types.is_floating(kind):
        # A double column of the fast path holds no number of 2**53 or more (see _fast):
        # a bound beyond it is on the same side of every value as 2**53 is.
        return float(max(-v.EXACT_FLOAT_INT, min(v.EXACT_FLOAT_INT, want)))
    if type(want) is float:
        if op in ("eq", "ne") and not want.is_integer():
            return op == "ne"
        # An integer is above x when above its floor, and at least x when at least its ceiling.
        want = math.floor(want) if op in ("eq", "ne", "gt", "le") else math.ceil(want)
    if -(2**63) <= want < 2**63:
        return want
    above = want > 0  # beyond every int64
    return {"eq": False, "ne": True, "gt": not above, "ge": not above}.get(op, above)
