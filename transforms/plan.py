"""A view compiled for execution: accessors, filter, windows, combiners and row layout.

:class:`ViewPlan` is the single place that turns a decoded message into what a view
aggregates, and an aggregated value into the output row of SPEC section 3. Both execution
paths (bounded files and the streaming window operator) use it, so they cannot disagree.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from liveagg.combiners import InputError
from liveagg.combiners._common import json_type, normalize_number, shown
from liveagg.combiners.base import ALL_TYPES, ExtractFailed, fits, plain_types
from liveagg.combiners.registry import is_builtin
from liveagg.engine.compiled import CompiledView, as_compiled, window_fns
from liveagg.engine.milestones import ViewMilestones
from liveagg.engine.partials import Variant
from liveagg.expr import parse_expr
from liveagg.spec import ViewSpec
from liveagg.transforms import eventtime
from liveagg.transforms.combine import ViewCombineFn
from liveagg.transforms.deadletter import NAMESPACE, counter, dead_letter, result_dead_letter
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.eventtime import (
    MAX_US,
    MIN_US,
    OUT_OF_RANGE,
    EventTimeError,
    WindowText,
    rfc3339,
)
from liveagg.transforms.fields import getter, values_of
from liveagg.transforms.filters import compile_filter

GroupKey = bytes  # JSON array of the grouping values kept by a variant


def view_tag(view: str) -> str:
    """The tagged-output name of a view's messages (view names cannot clash with it)."""
    return f"view/{view}"


#: The tagged output of milestone events (docs/semantics.md, "Milestones"); a view's
#: aggregate transform returns them under this key beside ``views`` and ``dead_letters``.
MILESTONES = "milestones"


class ViewOutputs:
    """What an aggregating transform returns, gathered stage by stage: the rows of each view
    (``views``), every stage's dead letters as one collection (``dead_letters``) and, when a
    view declares milestones, their events (:data:`MILESTONES`)."""

    def __init__(self, dead_letters: beam.PCollection) -> None:
        self.views: dict[str, beam.PCollection] = {}
        self._dead = [dead_letters]
        self._milestones: list[beam.PCollection] = []

    def add(self, name: str, outputs: Any, milestones: bool = False) -> None:
        """A stage's tagged outputs: its main output ``rows`` are view ``name``'s rows; its
        dead letters join the others, and so do its milestone events if ``milestones``."""
        self.views[name] = outputs.rows
        self.dead_letters(outputs[DEAD_LETTER])
        if milestones:
            self._milestones.append(outputs[MILESTONES])

    def dead_letters(self, letters: beam.PCollection) -> None:
        """More dead letters, from a stage whose rows are not a view's."""
        self._dead.append(letters)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "views": self.views,
            "dead_letters": tuple(self._dead) | "DeadLetters" >> beam.Flatten(),
        }
        if self._milestones:
            out[MILESTONES] = tuple(self._milestones) | "Milestones" >> beam.Flatten()
        return out


class Reject(Exception):
    """A message this view cannot use; becomes a dead letter with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_PLAIN_KEY = (str, int)  # key values kept as they are (bool is not int here: type() is exact)
_PLAIN_KEY_TYPES = frozenset(_PLAIN_KEY)
_INT = frozenset((int,))
_NONE = frozenset((type(None),))


def _column(shared: dict, msgs: list[dict], name: str, get: Callable[[dict], Any]) -> list[Any]:
    """A field's values over the batch, read once for all views that share ``shared``."""
    values = shared.get(name)
    if values is None:
        values = shared[name] = values_of(msgs, name, get)
    return values


def _outside(shared: dict, name: Any, values: list[Any], types: frozenset) -> list[int]:
    """Indexes of the values whose type is not in ``types``; most batches have none, which
    one pass over the set of types present shows without a Python loop per value."""
    key = (name, types)
    found = shared.get(key)
    if found is None:
        present = set(map(type, values))
        found = shared[key] = (
            [] if present <= types else [i for i, v in enumerate(values) if type(v) not in types]
        )
    return found


def _beyond(shared: dict, name: Any, times: list[Any], first: int, last: int) -> list[int]:
    """Indexes of the event times outside ``[first, last]``. The extremes of a batch's
    times, two C-level passes shared by the views that read them, show that most batches
    have none."""
    extremes = shared.get((name, "extremes"))
    if extremes is None:
        try:
            extremes = (min(times), max(times)) if times else (first, first)
        except TypeError:  # a Reject among them: its index is handled as such
            extremes = (None, None)
        shared[(name, "extremes")] = extremes
    low, high = extremes
    if low is not None and first <= low and high <= last:
        return []
    key = (name, first, last)
    found = shared.get(key)
    if found is None:
        found = shared[key] = [
            i for i, t in enumerate(times) if type(t) is int and not first <= t <= last
        ]
    return found


def _key_value(col: str, value: Any) -> Any:
    if isinstance(value, dict | list):
        raise Reject("not_scalar", f"grouping column {col}={shown(value)} is not a scalar")
    if type(value) is float:
        return normalize_number(value)  # 1 and 1.0 are one group, on every worker
    return value


def encode_key(values: tuple[Any, ...]) -> bytes:
    """Group keys travel as JSON bytes: typed (``true`` is not ``1``) and deterministic.

    An integer beyond 64 bits takes its canonical form (``normalize_number``: the double when
    one holds it exactly, so ``2**70`` and ``1.1805916207174113e+21`` are one group); one no
    double holds is written by the standard library (orjson refuses to), followed by a space
    that tells :func:`decode_key` to read it back exactly.

    The bytes are copied out of orjson's: a key lives as long as its windows do (it keys the
    streaming operator's state), and with orjson 3.13 the bytes object ``dumps`` returns
    holds a 4 KiB allocation whatever its length (``tracemalloc`` counts 4,098 bytes for
    ``orjson.dumps(("wayne", 12))`` and 54 for its copy; docs/performance.md, Flink,
    finding 23), 4 GiB at a million live keys. ``b"".join`` with an empty second part makes
    the copy (0.1 us).
    """
    try:
        dumped = orjson.dumps(values)
    except TypeError:
        values = tuple(normalize_number(v) if type(v) is int else v for v in values)
        try:
            dumped = orjson.dumps(values)
        except TypeError:
            text = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
            return text.encode() + _EXACT_KEY
    return b"".join((dumped, b""))


def _with_nulls(outputs: list[list[Any]], nulled: Collection[tuple[int, int]]) -> list[list[Any]]:
    """A copy of ``outputs`` with None at each ``(column, row)`` of ``nulled``."""
    outputs = [list(column) for column in outputs]
    for i, r in nulled:
        outputs[i][r] = None
    return outputs


#: Ints strictly inside these bounds are doubles (rounded) without a question.
_SAFE_INT = 2**1023


def _as_double(value: int) -> bool:
    """Whether a double holds ``value``, rounded: ints just past the largest double round
    down to it, those past its last half unit do not (``float`` raises)."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _guarded(coerce: Callable[[Any], Any], output: str) -> Callable[[Any], Any]:
    """A custom aggregation's ``coerce``, where any error but :class:`InputError` on a value
    is that message's dead letter (``aggregation_error``, naming the aggregation and the
    error) rather than a failed run: user code judging user data may fail on data it did
    not expect, and no message may stop a pipeline (SPEC section 2)."""

    def guarded(value: Any) -> Any:
        try:
            return coerce(value)
        except InputError:
            raise
        except Exception as e:  # any error of user code on one value
            raise InputError(
                "aggregation_error", f"{output!r}: coerce raised {type(e).__name__}: {e}"
            ) from None

    plain = plain_types(coerce)
    if plain is not None:  # what it passes through unchanged, as the fast checks read it
        guarded.plain_types = plain  # type: ignore[attr-defined]
    return guarded


# ---------------------------------------------------------------------------------------------
# Decoding messages

#: Digits as "0", anything else as " ": a run of 19 digits is then a substring, found in C.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_RUN = b"0" * 19


def long_digits(payload: bytes | str) -> bool:
    """Whether a payload holds a run of 19 digits, the only way to spell an integer beyond
    the 64 bits orjson reads exactly: it reads larger ones as floats
    (``orjson.loads(b"18446744073709551616")`` is ``1.8446744073709552e+19``), as it calls
    yyjson without ``YYJSON_READ_BIGNUM_AS_RAW`` (orjson's src/deserialize/yyjson.rs,
    ``yyjson_read_opts(..., YYJSON_READ_NOFLAG, ...)``), and yyjson reads integers beyond
    int64/uint64 as doubles unless that flag is set.

    About 0.3 us for a 200-byte line (a regular expression takes 2 us).
    """
    if not isinstance(payload, bytes | bytearray):
        payload = payload.encode("utf-8", "surrogatepass")
    return _RUN in payload.translate(_DIGITS)


def exact(payload: bytes | str) -> Any:
    """A payload orjson accepted, decoded again by the standard library, which keeps every
    integer exact (up to the 309 digits of the double range, beyond which orjson refuses).

    The standard library's decoder recurses once per level of nesting, counted against
    Python's recursion limit from the depth of the caller's stack, so a message nested near
    the 1,024 levels orjson takes would be read or refused by where it was decoded from
    (which batch, which path). Such a message is decoded again with room for all of its
    levels above the caller's frame (:func:`_recursion_room`).
    """
    text = payload.decode() if isinstance(payload, bytes | bytearray) else payload
    try:
        return json.loads(text)
    except RecursionError:
        pass
    with _recursion_room(ORJSON_DEPTH + 64):
        try:
            return json.loads(text)
        except RecursionError:  # not reached for what orjson accepts: kept as a dead letter
            raise Reject(
                "not_json",
                "the message nests too deeply to read its integers beyond 64 bits exactly "
                "(maximum recursion depth exceeded)",
            ) from None


#: The deepest nesting orjson reads (``[`` 1,024 times is read, 1,025 times is "depth limit
#: exceeded"): the exact path's limit.
ORJSON_DEPTH = 1024
_ROOM_LOCK = threading.Lock()
_ROOM_USERS = [0, 0]  # threads inside _recursion_room, the limit to restore after the last


@contextmanager
def _recursion_room(levels: int) -> Iterator[None]:
    """Python's recursion limit raised, while inside, to ``levels`` above this frame (never
    lowered); the limit is shared by the process's threads, so it is restored when the last
    thread inside leaves."""
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    with _ROOM_LOCK:
        if not _ROOM_USERS[0]:
            _ROOM_USERS[1] = sys.getrecursionlimit()
        _ROOM_USERS[0] += 1
        sys.setrecursionlimit(max(sys.getrecursionlimit(), depth + levels))
    try:
        yield
    finally:
        with _ROOM_LOCK:
            _ROOM_USERS[0] -= 1
            if not _ROOM_USERS[0]:
                sys.setrecursionlimit(_ROOM_USERS[1])


def decode(payload: bytes | str) -> dict | None:
    """The message a payload holds, or None for a blank line (JSON whitespace only).

    Integers beyond 64 bits stay exact (:func:`exact`). Raises :class:`Reject`:
    ``not_json`` with the parser's reason, ``not_an_object`` for other JSON values.
    """
    return decode_line(payload)[0]


def decode_line(payload: bytes | str) -> tuple[dict | None, bool]:
    """:func:`decode`, and whether the message was decoded again for its long integers."""
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        if not payload.strip(b" \t\r\n" if isinstance(payload, bytes) else " \t\r\n"):
            return None, False
        raise Reject("not_json", _not_json(payload, e)) from None
    if type(msg) is not dict:
        raise Reject("not_an_object", f"expected a JSON object, got {json_type(msg)}")
    if long_digits(payload):
        return exact(payload), True
    return msg, False


def _not_json(payload: bytes | str, error: orjson.JSONDecodeError) -> str:
    detail = f"the message is not valid JSON: {error}"
    if isinstance(payload, bytes | bytearray):
        try:
            payload = bytes(payload).decode()
        except UnicodeDecodeError as e:
            return f"{detail} (invalid UTF-8 at byte {e.start})"
    if payload.startswith("\ufeff"):
        detail += " (a byte order mark is dropped only at the start of a file)"
    return detail


_EXACT_KEY = b" "


def decode_key(key: bytes) -> list[Any]:
    """A group key's values (:func:`encode_key`), integers beyond 64 bits exact."""
    return exact(key) if key.endswith(_EXACT_KEY) else orjson.loads(key)


# ---------------------------------------------------------------------------------------------
# Accounting

LINES_READ = "lines_read"
BLANK_LINES = "blank_lines"
MESSAGES = "messages"


class Tally:
    """Message accounting (docs/semantics.md, "Accounting"), added up in memory and sent to
    Beam's counters at :meth:`flush`: an ``inc()`` per message and view would cost more than
    the message's aggregation.

    Counters: ``lines_read``, ``blank_lines``, ``messages`` (and ``messages/<source>``), and
    per view ``used/<view>``, ``filtered/<view>``, ``late_windows/<view>``.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def flush(self) -> None:
        counts = self.counts
        if counts.get(MESSAGES):
            counts[f"{MESSAGES}/{self.source}"] += counts[MESSAGES]
        for name, n in counts.items():
            if n:
                counter(name).inc(n)
        counts.clear()


def accepted_times(spec: ViewSpec) -> tuple[int, int]:
    """``(first, last)``: the event times the view takes, those whose every window (of every
    size) has bounds that can be written, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z.

    Other times are ``event_time_out_of_range`` dead letters: a daily window of
    ``9999-12-31T12:00:00Z`` would end in year 10000. ``first > last`` when none fits.
    """
    spans = [fn.accepted(MIN_US, MAX_US) for fn in window_fns(spec)]
    return max(first for first, _ in spans), min(last for _, last in spans)


class ViewPlan:
    """Runtime form of a :class:`~liveagg.engine.compiled.CompiledView` (accessors, filter,
    parsers, row layouts, metrics). Built on workers from the compiled view they receive,
    never pickled."""

    def __init__(self, view: CompiledView | ViewSpec) -> None:
        self.compiled = compiled = as_compiled(view)
        self.spec = spec = compiled.spec
        self.name = spec.name
        self.fns = list(compiled.fns)
        self.combine = ViewCombineFn(self.fns)
        self.lateness_us = spec.allowed_lateness.micros
        self.early_us = spec.early.micros if spec.early else None
        self._ts_field = spec.event_time.field
        self._get_ts = getter(spec.event_time.field)
        self._parse_ts = eventtime.parser(spec.event_time.field, spec.event_time.format)
        self._filter = compile_filter(spec.filter)
        self.time_key = (spec.event_time.field, spec.event_time.format)
        self._groups = [(c, getter(c)) for c in spec.grouping_cols]
        self._inputs = [
            # No col_name (count(*)): the aggregation is fed 1 per message.
            (
                a.column,
                None if a.column is None else getter(a.column),
                fn.coerce if is_builtin(a.kind) else _guarded(fn.coerce, a.output),
                fn.needs_event_time,
            )
            for a, fn in zip(spec.aggregations, self.fns, strict=True)
        ]
        self._derived = [(d.name, parse_expr(d.expr)) for d in spec.derived]
        self._outputs = [a.output for a in spec.aggregations]
        self.variants = list(compiled.variants)
        self._first, self._last = accepted_times(spec)
        self._layouts = [self._layout(v) for v in self.variants]
        # Outputs that may be a double beyond its range (inf, nan): written as null, with an
        # ``overflow`` dead letter (see row). Counts, sketches and texts are not looked at.
        types = compiled.output_types
        # Outputs of aggregations liveagg did not write, checked against the type they declare:
        # a value that does not fit is null, with a ``wrong_type`` dead letter (see row).
        self._declared = tuple(
            (i, t)
            for i, (a, t) in enumerate(zip(spec.aggregations, types, strict=True))
            if not is_builtin(a.kind)
        )
        self._doubles = tuple(i for i, t in enumerate(types) if t in ("double", "json"))
        self._double_lists = tuple(i for i, t in enumerate(types) if t == "list<double>")
        # ``double`` columns that may hold an int (a sum of ints, a custom aggregation's value):
        # one beyond the range of a double is no more a double than an infinity is.
        self._double_ints = tuple(i for i, t in enumerate(types) if t == "double")
        self._aggregated = compiled.value_columns
        # Every variant keeps all grouping columns: one key serves them all.
        self._single_set = spec.grouping_sets is None
        self._row_counter = Metrics.counter(NAMESPACE, f"rows/{spec.name}")
        #: The view's milestones (falsy without any): which events a pane or a final row fires.
        self.milestones = ViewMilestones(spec)
        self._milestone_counter = Metrics.counter(NAMESPACE, f"milestones/{spec.name}")
        # Tally names (see Tally): messages the view aggregated, rejected by its filter, and
        # window contributions dropped as too late (streaming).
        self.used_counter = f"used/{spec.name}"
        self.filtered_counter = f"filtered/{spec.name}"
        self.late_counter = f"late_windows/{spec.name}"
        self._window_text = WindowText()
        self._global = spec.window.is_global

    def _out_of_range(self, ts: int) -> Reject:
        if self._first > self._last:
            text = "no event time fits: a window of this view is longer than years 1-9999"
        elif ts < self._first:
            text = (
                f"event time {rfc3339(ts)} falls in a window that starts before "
                f"0001-01-01T00:00:00Z; this view takes event times from {rfc3339(self._first)}"
            )
        else:
            text = (
                f"event time {rfc3339(ts)} falls in a window that ends after "
                f"9999-12-31T23:59:59.999999Z; this view takes event times up to "
                f"{rfc3339(self._last)}"
            )
        return Reject(OUT_OF_RANGE, text)

    @property
    def is_session(self) -> bool:
        return self.spec.window.type == "session"

    def event_time(self, msg: dict) -> int | Reject:
        """The message's event time in microseconds, or the :class:`Reject` it earns."""
        raw_ts = self._get_ts(msg)
        if raw_ts is None:
            return Reject("missing_event_time", f"event-time field {self._ts_field!r} is missing")
        try:
            return self._parse_ts(raw_ts)
        except EventTimeError as e:
            return Reject(e.reason, e.detail)

    def extract(
        self, msg: dict, times: dict | None = None
    ) -> tuple[int, tuple[Any, ...], tuple[Any, ...]] | None:
        """Return ``(event_time_us, input_row, grouping_values)``, or None when filtered out.

        ``times`` caches event times per message across views that read the same field in
        the same format (keyed by :attr:`time_key`), so each is parsed once.

        Raises :class:`Reject` for a message the view cannot use.
        """
        if self._filter is not None and not self._filter(msg):
            return None
        if times is None:
            ts = self.event_time(msg)
        else:
            ts = times.get(self.time_key)
            if ts is None:
                ts = times[self.time_key] = self.event_time(msg)
        if type(ts) is not int:
            raise Reject(ts.reason, ts.detail)  # type: ignore[union-attr]
        if not self._first <= ts <= self._last:
            raise self._out_of_range(ts)
        row = []
        for column, get, coerce, with_time in self._inputs:
            if get is None:
                row.append(1)
                continue
            value = get(msg)
            if value is None:
                row.append(None)
                continue
            try:
                value = coerce(value)
            except InputError as e:
                raise Reject(e.reason, f"{column}={shown(value)}: {e.detail or e.reason}") from None
            row.append((ts, value) if with_time else value)
        group = []
        for col, get in self._groups:
            value = get(msg)
            group.append(value if type(value) in _PLAIN_KEY else _key_value(col, value))
        return ts, tuple(row), tuple(group)

    def extract_batch(
        self,
        msgs: list[dict],
        shared: dict,
        tally: Tally | None = None,
        exact: Collection[int] = (),
    ) -> tuple[list[int], list[tuple[Any, ...]], list[Any], list[tuple[int, Reject]]]:
        """:meth:`extract` over a batch, column by column: ``(times, rows, groups, rejects)``.

        ``rejects`` holds ``(index into msgs, Reject)``; the other lists hold the messages
        that pass, in order. A group is the tuple of grouping values when they are all
        strings and ints (grouped as they are, encoded once per key by the caller), else the
        list of each variant's encoded :data:`GroupKey` (values that needed normalizing).
        Values that are not of a type ``coerce`` passes unchanged go through :meth:`extract`,
        the single definition of what a message means, so both agree on every message.

        ``shared`` is one dict per batch, handed to every view: views without a filter
        share the event times and columns they read, so each is read and checked once.
        ``tally`` counts the messages the filter rejects. ``exact`` holds the indexes of
        messages with integers beyond 64 bits (:func:`exact`): the types that ``coerce``
        passes unchanged do not say whether such an integer needs its canonical form, so
        they always go through :meth:`extract`.
        """
        kept: list[int] | None = None
        if self._filter is not None:
            keep = self._filter
            kept = [i for i, m in enumerate(msgs) if keep(m)]
            if tally is not None:
                tally.add(self.filtered_counter, len(msgs) - len(kept))
            msgs = [msgs[i] for i in kept]
            shared = {}  # columns of the filtered messages are this view's own
        column = shared.get(self.time_key)
        if column is None:
            column = shared[self.time_key] = [self.event_time(m) for m in msgs]
        slow = set(_outside(shared, self.time_key, column, _INT))
        slow.update(_beyond(shared, self.time_key, column, self._first, self._last))
        if exact:
            if kept is None:
                slow.update(exact)
            else:
                position = {j: i for i, j in enumerate(kept)}
                slow.update(position[j] for j in exact if j in position)
        columns: list[list[Any]] = []
        for column_name, get, coerce, with_time in self._inputs:
            if get is None:
                columns.append([1] * len(msgs))
                continue
            values = _column(shared, msgs, column_name, get)
            plain = plain_types(coerce)
            if plain is not ALL_TYPES:
                slow.update(_outside(shared, column_name, values, (plain or frozenset()) | _NONE))
            if with_time:
                values = [v if v is None else (t, v) for t, v in zip(column, values, strict=True)]
            columns.append(values)
        group_columns = []
        for col, get in self._groups:
            values = _column(shared, msgs, col, get)
            slow.update(_outside(shared, col, values, _PLAIN_KEY_TYPES))
            group_columns.append(values)
        rows = list(zip(*columns, strict=True)) if columns else [()] * len(msgs)
        groups = list(zip(*group_columns, strict=True)) if group_columns else [()] * len(msgs)
        rejects: list[tuple[int, Reject]] = []
        if slow:
            keep_ts, keep_rows, keep_groups = [], [], []
            for i, (ts, row, group) in enumerate(zip(column, rows, groups, strict=True)):
                if i in slow:
                    try:
                        extracted = self.extract(msgs[i])
                        if extracted is None:
                            continue
                        ts, row, values = extracted
                        group = [key for _, key in self.keys(values)]
                    except Reject as r:
                        rejects.append((i if kept is None else kept[i], r))
                        continue
                keep_ts.append(ts)
                keep_rows.append(row)
                keep_groups.append(group)
            column, rows, groups = keep_ts, keep_rows, keep_groups
        return column, rows, groups, rejects

    def keys(self, group: tuple[Any, ...]) -> list[tuple[Variant, GroupKey]]:
        """The encoded grouping key of each variant (grouping set) for one message.

        Granularities share a grouping set's key, so each distinct set is encoded once.
        """
        if self._single_set:
            key = encode_key(group)
            return [(variant, key) for variant in self.variants]
        encoded: dict[tuple[int, ...], GroupKey] = {}
        out = []
        for variant in self.variants:
            key = encoded.get(variant.positions)
            if key is None:
                key = encoded[variant.positions] = encode_key(
                    tuple(group[i] for i in variant.positions)
                )
            out.append((variant, key))
        return out

    def row(
        self,
        variant: Variant,
        start_us: int,
        end_us: int,
        key: GroupKey,
        outputs: tuple[Any, ...],
        pane_timing: str,
        pane_index: int,
        count: bool = True,
        letters: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The flat output row of SPEC section 3.

        Built from one tuple of values zipped with the variant's column names: the bounded
        path makes a row per output key, so this is on its hot path. ``count=False`` leaves
        the ``rows/<view>`` metric to the caller, which adds a batch's rows at once
        (:meth:`count_rows`).

        A double beyond its range (a sum of ``1.7e308`` twice) cannot be written: JSON has no
        infinity and orjson would write null without a word. Its column is null, and one
        ``overflow`` dead letter per such column goes to ``letters``; so does a custom
        aggregation's value of another type than it declares, as ``wrong_type`` (see
        :meth:`_nulled`).
        """
        rows = self.rows(
            [variant.index],
            [start_us],
            [end_us],
            [decode_key(key)],
            [[value] for value in outputs],
            pane_timing,
            pane_index,
            letters,
            by_set=True,
        )
        if count:
            self._row_counter.inc()
        return rows[0]

    def rows(
        self,
        variants: list[int],
        starts: list[int],
        ends: list[int],
        keys: Sequence[Sequence[Any]],
        outputs: list[list[Any]],
        pane_timing: str,
        pane_index: int | Sequence[int],
        letters: list[dict[str, Any]] | None = None,
        by_set: bool = False,
    ) -> list[dict[str, Any]]:
        """:meth:`row` for many rows at once, from columns: ``keys`` holds each row's key
        values (``by_set``: only the columns of its grouping set, as in a :data:`GroupKey`;
        else every grouping column, null where its set leaves it out); ``outputs`` holds one
        list per aggregation; ``pane_index`` is every row's, or one per row. Not counted in
        ``rows/<view>`` (see :meth:`count_rows`)."""
        n = len(starts)
        bounds: list[tuple[str, ...]]
        if self._global:  # rows of the global window carry no bounds
            bounds = [()] * n
        else:
            text = self._window_text
            bounds = [text(window) for window in zip(starts, ends, strict=True)]
        nulled = self._nulls(outputs)
        if nulled:
            before = outputs
            outputs = _with_nulls(outputs, nulled)
        columns = outputs
        if self._derived:
            names = self._outputs
            derived = [[] for _ in self._derived]
            for values in zip(*outputs, strict=True):
                aggregated = dict(zip(names, values, strict=True))
                for j, (name, expr) in enumerate(self._derived):
                    aggregated[name] = value = expr.evaluate(aggregated)
                    derived[j].append(value)
            columns = [*outputs, *derived]
        rows = []
        layouts = self._layouts  # by variant index
        view = self.name
        aggregated = list(zip(*columns, strict=True)) if columns else [()] * n
        indexes = [pane_index] * n if type(pane_index) is int else pane_index
        for variant, window, values, outs, index in zip(
            variants, bounds, keys, aggregated, indexes, strict=True
        ):
            names, width, extras = layouts[variant]
            if by_set and width:  # a grouping set that leaves columns out: they are null
                grouping = [None] * width
                positions = self.variants[variant].positions
                for position, value in zip(positions, values, strict=True):
                    grouping[position] = value
                values = grouping
            # ``names`` matches the tuple by construction (:meth:`_layout`).
            row = (view, *window, *values, *extras, *outs, pane_timing, index)
            rows.append(dict(zip(names, row)))  # noqa: B905
        if letters is not None:
            for (i, r), reason in nulled.items():
                letters.append(self._nulled(rows[r], i, reason, before[i][r]))
        return rows

    def written(self, outputs: list[list[Any]]) -> list[list[Any]]:
        """``outputs`` (one list per aggregation) as :meth:`rows` writes them, null where a
        value cannot be written: what milestones read, so that none fires from a value its
        row does not hold."""
        nulled = self._nulls(outputs)
        return _with_nulls(outputs, nulled) if nulled else outputs

    def _nulls(self, outputs: list[list[Any]]) -> dict[tuple[int, int], str]:
        """The outputs written as null, ``(column, row)`` -> the dead letter's reason."""
        nulled: dict[tuple[int, int], str] = {}
        for i, declared in self._declared:
            for r, v in enumerate(outputs[i]):
                if type(v) is ExtractFailed:  # before ``fits``: a ``json`` column holds anything
                    nulled[(i, r)] = "extract_error"
                elif not fits(v, declared):
                    nulled[(i, r)] = "wrong_type"
        for i in self._doubles:
            for r, v in enumerate(outputs[i]):
                if type(v) is float and v - v and (i, r) not in nulled:
                    nulled[(i, r)] = "overflow"
        for i in self._double_lists:
            for r, v in enumerate(outputs[i]):
                if v and (i, r) not in nulled and any(type(x) is float and x - x for x in v):
                    nulled[(i, r)] = "overflow"
        for i in self._double_ints:
            for r, v in enumerate(outputs[i]):
                if type(v) is int and not -_SAFE_INT < v < _SAFE_INT and not _as_double(v):
                    nulled[(i, r)] = "overflow"
        return nulled

    def _nulled(self, row: dict[str, Any], index: int, reason: str, value: Any) -> dict[str, Any]:
        """The dead letter of a row's column ``index`` written as null: ``overflow`` (a double
        beyond its range), ``wrong_type`` (a custom aggregation's value that is not of the
        type it declares) or ``extract_error`` (its ``extract_output`` raised). No message is
        to blame, so its payload is the row's key and window (and pane) as JSON, and its
        detail names the column. Counted apart from messages
        (``result_dead_letter/<view>/<reason>``)."""
        agg = self.spec.aggregations[index]
        if reason == "overflow":
            problem = "is beyond the range of a double (about ±1.8e308)"
        elif reason == "extract_error":
            problem = f"raised {value.error} in extract_output"
        else:
            declared = self.compiled.output_types[index]
            problem = f"declares {declared} but gave {json_type(value)} {shown(value)}"
        detail = f"column {agg.output!r} ({agg.kind}) {problem}; the row holds null there"
        return result_dead_letter(row, self._aggregated, self.name, reason, detail)

    def count_rows(self, rows: int) -> None:
        """Add rows made with ``row(..., count=False)`` to the ``rows/<view>`` metric."""
        if rows:
            self._row_counter.inc(rows)

    def count_milestones(self, events: int) -> None:
        """Add milestone events to the ``milestones/<view>`` metric."""
        if events:
            self._milestone_counter.inc(events)

    def _layout(self, variant: Variant) -> tuple[tuple[str, ...], int, tuple[Any, ...]]:
        """A variant's row column names (the compiled view's columns, the same for every
        variant), the grouping width to pad its key values to (0: the key holds every
        grouping column in order) and its ``grouping_set``/``granularity`` values."""
        names = tuple(c.name for c in self.compiled.columns)
        extras = tuple(
            value for value in (variant.grouping_set, variant.granularity) if value is not None
        )
        cols = self.spec.grouping_cols
        width = 0 if variant.positions == tuple(range(len(cols))) else len(cols)
        return names, width, extras


def split(element: Any) -> tuple[Any, Any]:
    """A source element as ``(payload, source_meta)``.

    Sources emit either the raw payload (``str``/``bytes``) or ``(payload, source_meta)``
    where ``source_meta`` locates the message (Kafka topic, partition, offset; a file line).
    """
    if isinstance(element, tuple):
        return element
    return element, None


def route(
    plans: list[ViewPlan], element: Any, tally: Tally
) -> Iterator[tuple[int, tuple[int, tuple[Any, ...], tuple[Any, ...]]] | dict[str, Any]]:
    """Decode one message and yield, per view, ``(view_index, extracted)`` or a dead letter.

    Blank lines yield nothing: they carry no message. ``tally`` counts the line, the
    message and the views that filter it out; whether a view used it is the caller's to
    count (the streaming operator may still find it too late).
    """
    payload, source = split(element)
    tally.add(LINES_READ)
    try:
        msg = decode(payload)
    except Reject as r:
        yield dead_letter(payload, None, r.reason, r.detail, source)
        return
    if msg is None:
        tally.add(BLANK_LINES)
        return
    tally.add(MESSAGES)
    times: dict = {}
    for index, plan in enumerate(plans):
        try:
            extracted = plan.extract(msg, times)
        except Reject as r:
            yield dead_letter(payload, plan.name, r.reason, r.detail, source)
            continue
        if extracted is None:
            tally.add(plan.filtered_counter)
            continue
        yield index, extracted
