"""The streaming path: a router that pre-aggregates batches, and a keyed window operator.

Beam's windowed ``GroupByKey`` drops data later than the allowed lateness without a trace;
SPEC requires such messages to reach the dead-letter output. So liveagg runs its own window
operator, a stateful DoFn with the semantics of Beam's
``AfterWatermark(early=AfterProcessingTime(early), late=AfterCount(1))`` in accumulating
mode, its rules written once in the window book (:mod:`liveagg.engine.windows`):

* every pane carries the full value of its window;
* ``EARLY`` panes ``emit.early`` of processing time after a key's first data in a window
  since its last pane (Beam's ``pastFirstElementInPane``); each entry keeps when its pane is
  due, and one processing-time timer per window of a bucket fires at the earliest;
* one ``ON_TIME`` pane when the watermark passes the end of the window;
* one ``LATE`` pane per batch of late data that arrives together (Beam's ``AfterCount(1)``
  on a bundle), until the watermark passes end + allowed lateness, when the window's state
  is dropped; a pane is ``LATE`` whenever the watermark had passed the window's end, also a
  window's first;
* data for a window whose end + allowed lateness the watermark had passed is ``too_late``,
  whether or not its key held state for the window;
* with ``emit.eager``, a batch for a key whose watched column was below ``below`` gives an
  ``EARLY`` pane at once, after it is applied (no timer); from ``below`` on, the EARLY timer;
* each pane fires the view's milestones that its value reaches and its window had not fired
  (:class:`~liveagg.engine.milestones.ViewMilestones`, the code the bounded path's events
  come from); the count fired is kept in the window's state entry, so it is checkpointed with
  it and a merged session keeps what either session fired. Panes that are partials (level 1
  of a two-level run, a hot key's shards) fire none: the operator that merges them does.

**Router.** A bundle's messages (batches from the sources, :class:`Messages`) are decoded once
as a batch and pre-aggregated per view, variant, window and grouping key by the engine
(:mod:`liveagg.engine.columns`, :mod:`liveagg.engine.partials`), so only partial accumulators
reach the operator: one element per grouping key and bundle (or every :data:`MAX_BATCHED`
messages), holding the key's windows. A message travels on only where it may be too late: the
Kafka source stamps each batch of records with its partition's watermark, which bounds the
operator's (the minimum over partitions) when the records arrive there; a record whose windows
all close after it cannot be too late, and its payload stays behind. Sources without that stamp
send every payload.

**State** is a bucket of grouping keys per cell (:mod:`liveagg.transforms.windowstate` says
why): a bundle reads and writes a few cells, whatever the number of keys it holds, decodes
only the (key, window) entries it touches, and with the SDK's state cache on (docs/flink.md)
reads from memory.
Each window has its own event-time timer per bucket, tagged with its bounds and shared by the
bucket's keys.

**The watermark** is known to a stateful DoFn only through the timers it fires: the operator
keeps the latest fired timer of the whole DoFn instance (every key's) as a floor of the
watermark, beside each key's own, to judge data for windows its key never held.
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from liveagg.engine import partials as engine
from liveagg.engine import values as v
from liveagg.engine import windows as book
from liveagg.engine.columns import Decoder
from liveagg.engine.compiled import CompiledView, RunContext, as_compiled
from liveagg.engine.partials import keep_latest
from liveagg.runtime import tune_gc
from liveagg.spec import ViewSpec
from liveagg.transforms.deadletter import NAMESPACE, counter, dead_letter
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.eventtime import rfc3339
from liveagg.transforms.live_keys import LiveKeys
from liveagg.transforms.plan import (
    BLANK_LINES,
    LINES_READ,
    MESSAGES,
    MILESTONES,
    Tally,
    ViewOutputs,
    ViewPlan,
    decode_key,
    encode_key,
    split,
    view_tag,
)
from liveagg.transforms.sources import WATERMARK, KafkaRecords
from liveagg.transforms.sources.files import LineBatch
from liveagg.transforms.windowstate import (
    Bucket,
    BucketCoder,
    Window,
    Windows,
    bucket_of,
    size_cache_entries_cheaply,
)

#: Messages a router holds before sending its batches, whatever the bundle's size.
MAX_BATCHED = 10_000

# Per-window state entry: [accumulator (encoded; with partials in, {shard: (pane, encoded)}),
# next pane index, ON_TIME or LATE fired, data since the last pane, source offsets covered,
# when its EARLY pane is due (processing time, us; None: none pending), milestones fired,
# when the key leaves state (a global window's latest event time + state_ttl, us; None:
# never before the window expires)]. Entries restored from state written before the last
# field existed have seven fields, and are never a global window's.
_ACC, _PANE, _FIRED, _DIRTY, _SPAN, _EARLY, _MILESTONES, _EXPIRES = range(8)
_NEVER = -(2**62)

#: A candidate for ``too_late``: (message id in its batch, event time, payload, source).
Candidate = tuple[int, int, Any, Any]
#: One window of one key in a router batch: (key, start, end, accumulator, candidates[,
#: latest event time of the key's messages, for a global window's ``state_ttl``]).
Item = tuple[bytes, int, int, Any, list[Candidate]] | tuple[bytes, int, int, Any, list, int]


def _new_entry() -> list:
    return [None, 0, False, False, None, None, None, None]


def _tag(window: Window) -> str:
    """A window's timer tag."""
    return f"{window[0]}/{window[1]}"


def _window_of(tag: str) -> Window:
    start, end = tag.split("/")
    return int(start), int(end)


class _Route(beam.DoFn):
    """Decodes a bundle's messages as batches and sends each view's partial accumulators,
    one element per (variant, grouping key[, shard]) per batch.

    A view is sharded (a fourth key part) at level 1 of a two-level run, by the Kafka
    partition a message was read from, and when it declares ``hot_key_fanout``, by a
    round-robin sub-key: its shards are aggregated apart and merged by a second operator.
    """

    def __init__(
        self,
        views: Sequence[CompiledView | ViewSpec],
        by_source: bool = False,
        fan_out: bool = True,
    ) -> None:
        self._views = [as_compiled(view) for view in views]
        self._specs = [view.spec for view in self._views]
        self._by_source = by_source
        self._fan_out = fan_out  # False: ``hot_key_fanout`` is not applied (see _fans_out)

    def setup(self) -> None:
        tune_gc()
        self._plans = [ViewPlan(view) for view in self._views]
        self._aggregators = [view.aggregator() for view in self._views]
        self._decoder = Decoder(self._plans)
        self._tags = [view_tag(s.name) for s in self._specs]
        self._fanout = [(s.hot_key_fanout or 0) if self._fan_out else 0 for s in self._specs]
        self._tally = Tally(self._specs[0].source)
        self._turn = 0

    def start_bundle(self) -> None:
        self._pending: list[Any] = []
        self._held = 0  # messages in _pending

    def process(self, element: Any) -> Iterator[TaggedOutput]:
        self._pending.append(element)
        self._held += len(element.lines) if type(element) in BATCHES else 1
        if self._held >= MAX_BATCHED:  # a large bundle (a bounded read) leaves in parts
            yield from self._flush()

    def finish_bundle(self) -> Iterator[TaggedOutput]:
        yield from self._flush()
        self._tally.flush()

    def _flush(self) -> Iterator[TaggedOutput]:
        """Each pending message's dead letters and each batch element, as windowed values
        stamped with the earliest window start they hold (dead letters: the minimum)."""
        for tag, value, at in self._batches():
            yield TaggedOutput(tag, GlobalWindows.windowed_value(value, Timestamp(micros=at)))

    def _batches(self) -> Iterator[tuple[str, Any, int]]:
        pending, self._pending, self._held = self._pending, [], 0
        if not pending:
            return
        groups: dict[str, list[Any]] = {}
        if self._by_source:  # level 1: a Kafka partition's messages are its own shard
            for element in pending:
                groups.setdefault(_origin(element), []).append(element)
        else:
            groups[""] = pending
        for origin, elements in groups.items():
            yield from self._send(Messages(elements), origin or None)

    def _send(self, messages: Messages, origin: str | None) -> Iterator[tuple[str, Any, int]]:
        hints = messages.hints
        # Sessions judged message by message (_sessions_apart): where partition watermarks
        # tell the few messages that may be late, or where messages come from no source of
        # liveagg's (a stream of the caller's, a TestStream) and any may be. Bounded input
        # through the operator (--streaming: files, a bounded Kafka read) is merged per batch,
        # as the split would cost a hot key one aggregation per message of the batch.
        apart = hints is not None or not messages.located
        decoded = self._decoder.decode(messages.payloads, messages.where)
        tally = self._tally
        tally.add(LINES_READ, decoded.lines)
        tally.add(BLANK_LINES, decoded.blank)
        tally.add(MESSAGES, decoded.messages)
        for payload, view, reason, detail, source in decoded.dead_letters:
            letter = dead_letter(payload, view, reason, detail, source)
            yield DEAD_LETTER, letter, book.MIN_US
        for index, (plan, aggregator, batch) in enumerate(
            zip(self._plans, self._aggregators, decoded.views, strict=True)
        ):
            tally.add(plan.used_counter, batch.used)
            tally.add(plan.filtered_counter, batch.filtered)
            fanout = self._fanout[index]
            for inputs in batch.inputs:
                for shard, part in _fan_out(inputs, origin, fanout, self):
                    pieces = _sessions_apart(plan, aggregator, part, hints) if apart else [part]
                    yield from self._elements(index, plan, aggregator, pieces, shard, messages)

    def _elements(
        self,
        index: int,
        plan: ViewPlan,
        aggregator: Any,
        pieces: Iterable[engine.Inputs],
        shard: str | None,
        messages: Messages,
    ) -> Iterator[tuple[str, Any, int]]:
        """The view's partial accumulators of a batch, one element per variant and bucket of
        keys; a key's items in the order of the batch's pieces, aggregated apart."""
        encode = plan.combine.encode
        by_key: dict[tuple, list[Item]] = {}
        for inputs in pieces:
            partial = aggregator.preaggregate(inputs)
            accumulators = aggregator.accumulators(partial)
            keys = [v.python_values(k) for k in partial.keys]
            variants, starts, ends = (
                partial.variant.tolist(),
                partial.start.tolist(),
                partial.end.tolist(),
            )
            # (variant, group) -> window -> the candidates of its item
            rows: dict[tuple[int, bytes], dict[Window, list[Candidate]]] = {}
            latest = _latest(plan, inputs)
            for r, acc in enumerate(accumulators):
                variant = plan.variants[variants[r]]
                group = encode_key(tuple(keys[i][r] for i in variant.positions))
                bucket = bucket_of(group)
                state_key = (
                    (plan.name, variant.index, bucket)
                    if shard is None
                    else (plan.name, variant.index, bucket, shard)
                )
                candidates: list[Candidate] = []
                item: Item = (group, starts[r], ends[r], encode(acc), candidates)
                if latest:
                    item = (*item, latest[(variant.index, group)])
                by_key.setdefault(state_key, []).append(item)
                rows.setdefault((variant.index, group), {})[(starts[r], ends[r])] = candidates
            self._candidates(plan, aggregator, inputs, messages, rows)
        tag = self._tags[index]
        for state_key, items in by_key.items():
            yield tag, (state_key, items), max(min(item[1] for item in items), book.MIN_US)

    @staticmethod
    def _candidates(
        plan: ViewPlan,
        aggregator: Any,
        inputs: engine.Inputs,
        messages: Messages,
        rows: dict[tuple[int, bytes], dict[Window, list[Candidate]]],
    ) -> None:
        """Attach to each (variant, key, window) the messages that may be too late for it:
        those whose earliest-closing window closed by the watermark their partition had
        reported, or every message, where the source reports none."""
        if inputs.origin is None:
            return
        origin, ts = inputs.origin, inputs.ts
        maybe = _maybe_late(plan, aggregator, inputs, messages.hints)
        if not len(maybe):
            return
        key_values = [v.python_values(k.take(maybe)) for k in inputs.keys]
        for j, row in enumerate(maybe.tolist()):
            t, i = int(ts[row]), int(origin[row])
            candidate = (i, t, messages.payloads[i], messages.where(i))
            for variant in plan.variants:
                group = encode_key(tuple(key_values[i][j] for i in variant.positions))
                found = rows.get((variant.index, group))
                if found is None:
                    continue
                if variant.session_gap_us is not None:
                    for (start, end), candidates in found.items():
                        if start <= t < end:
                            candidates.append(candidate)
                            break
                    continue
                for window in variant.assign(t):
                    candidates = found.get(window)
                    if candidates is not None:
                        candidates.append(candidate)


def _maybe_late(
    plan: ViewPlan, aggregator: Any, inputs: engine.Inputs, hints: np.ndarray | None
) -> np.ndarray:
    """The rows that may be too late: those whose earliest-closing window closed by the
    watermark their partition had reported, or every row, where the source reports none."""
    if hints is None:
        return np.arange(inputs.rows)
    closes = _earliest_end(aggregator, inputs.ts) - 1 + plan.lateness_us
    return np.flatnonzero(closes <= hints[inputs.origin])


def _sessions_apart(
    plan: ViewPlan, aggregator: Any, inputs: engine.Inputs, hints: np.ndarray | None
) -> Iterator[engine.Inputs]:
    """A session view's batch in parts that merge no session of a message that may be too
    late with another message's.

    Beam judges each message by its own session, ``[t, t + gap)``, before merging
    (apache_beam/transforms/trigger.py, ``GeneralTriggerDriver.process_elements`` drops an
    element whose window has expired, then merges): a message whose session expired is too
    late even where another message of the batch would have merged it into a session still
    open. The operator judges each item it receives in order, so those messages reach it
    unmerged: the rest of the batch as one part, then parts that hold at most one of them
    per key (the grouping columns that all variants keep), all in the same elements. Where
    the source reports partition watermarks, few messages may be late and the parts are
    few."""
    if inputs.origin is None or plan.variants[0].session_gap_us is None:
        yield inputs
        return
    maybe = _maybe_late(plan, aggregator, inputs, hints)
    if not len(maybe):
        yield inputs
        return
    rest = np.setdiff1d(np.arange(inputs.rows), maybe, assume_unique=True)
    if len(rest):
        yield _take_inputs(inputs, rest)
    common = sorted(set.intersection(*(set(v.positions) for v in plan.variants)))
    columns = [v.python_values(inputs.keys[i].take(maybe)) for i in common]
    seen: dict[tuple, int] = {}
    parts: dict[int, list[int]] = {}
    for j, row in enumerate(maybe.tolist()):
        key = tuple(column[j] for column in columns) if common else (j,)
        rank = seen[key] = seen.get(key, -1) + 1
        parts.setdefault(rank, []).append(row)
    for rows in parts.values():
        yield _take_inputs(inputs, np.asarray(rows, dtype=np.int64))


def _latest(plan: ViewPlan, inputs: engine.Inputs) -> dict[tuple[int, bytes], int]:
    """The latest event time of each (variant, key) of the batch, for the variants of a global
    window (whose ``state_ttl`` counts from it); empty for a view without one."""
    global_variants = [v for v in plan.variants if v.window is not None and v.window.is_global]
    if not global_variants or not len(inputs.ts):
        return {}
    values = [v.python_values(k) for k in inputs.keys]
    latest: dict[tuple[int, bytes], int] = {}
    for row, t in enumerate(inputs.ts.tolist()):
        for variant in global_variants:
            where = (variant.index, encode_key(tuple(values[i][row] for i in variant.positions)))
            if latest.get(where, book.MIN_US - 1) < t:
                latest[where] = t
    return latest


def _earliest_end(aggregator: Any, ts: np.ndarray) -> np.ndarray:
    """The end of the first window to close, of each event time, over the view's variants."""
    ends = [window.first_end_many(ts) for window in {v.window for v in aggregator.variants}]
    return np.minimum.reduce(ends) if len(ends) > 1 else ends[0]


#: The batch elements of sources (:mod:`liveagg.transforms.sources`).
BATCHES = (KafkaRecords, LineBatch)


def _origin(element: Any) -> str:
    """A level-1 shard: the Kafka partition an element was read from, else ``input``."""
    if type(element) is KafkaRecords:
        return element.origin
    if type(element) is LineBatch:
        return "input"
    source = split(element)[1]
    return f"{source['topic']}/{source['partition']}" if type(source) is dict else "input"


class Messages:
    """A flush's elements (batches and single messages) as one batch: every payload, where
    each came from (:meth:`where`, for its dead letters), and each one's partition watermark
    when every element reports one (``hints``, µs; else None)."""

    def __init__(self, elements: list[Any]) -> None:
        self.payloads: list[Any] = []
        self._starts: list[int] = []  # each part's first payload
        self._wheres: list[Callable[[int], Any]] = []  # each part's where, from 0
        self.located = False  # whether any message says where it came from
        hints: list[np.ndarray] | None = []
        singles: list[Any] | None = None  # the sources of the last part, if singles
        for element in elements:
            if type(element) in BATCHES:
                self._part(element.where)
                self.payloads.extend(element.lines)
                self.located, singles = True, None
                watermark = getattr(element, "watermark_us", None)
                if hints is not None and watermark is not None:
                    hints.append(np.full(len(element.lines), watermark, dtype=np.int64))
                else:
                    hints = None
                continue
            payload, source = split(element)
            if type(source) is dict and WATERMARK in source:
                if hints is not None:
                    hints.append(np.array([source[WATERMARK]], dtype=np.int64))
                source = {k: x for k, x in source.items() if k != WATERMARK}
            else:
                hints = None
            if singles is None:
                singles = []
                self._part(singles.__getitem__)
            singles.append(source)
            self.payloads.append(payload)
            self.located |= source is not None
        self.hints = np.concatenate(hints) if hints else None

    def _part(self, where: Callable[[int], Any]) -> None:
        self._starts.append(len(self.payloads))
        self._wheres.append(where)

    def where(self, i: int) -> Any:
        """Where payload ``i`` came from: its ``meta`` (or file line), None if unknown."""
        part = bisect.bisect_right(self._starts, i) - 1
        return self._wheres[part](i - self._starts[part])


def _fan_out(
    inputs: engine.Inputs, origin: str | None, fanout: int, router: _Route
) -> Iterator[tuple[str | None, engine.Inputs]]:
    """The batch's inputs of one view, in round-robin sub-batches when the view fans hot
    keys out (``hot_key_fanout``), each named by its shard."""
    if not fanout:
        yield origin, inputs
        return
    turns = (np.arange(inputs.rows) + router._turn) % fanout
    router._turn = (router._turn + inputs.rows) % fanout
    for turn in range(fanout):
        rows = np.flatnonzero(turns == turn)
        if len(rows):
            yield f"{origin or ''}#{turn}", _take_inputs(inputs, rows)


def _take_inputs(inputs: engine.Inputs, rows: np.ndarray) -> engine.Inputs:
    remap = np.full(inputs.rows, -1, dtype=np.int64)
    remap[rows] = np.arange(len(rows))
    values: list[Any] = []
    for item in inputs.values:
        if item is None:
            values.append(None)
            continue
        present, column = item
        keep = np.flatnonzero(remap[present] >= 0)
        values.append((remap[present[keep]], _take_column(column, keep)))
    return engine.Inputs(
        inputs.ts[rows],
        [k.take(rows) for k in inputs.keys],
        values,
        None if inputs.origin is None else inputs.origin[rows],
    )


def _take_column(column: Any, index: np.ndarray) -> Any:
    if isinstance(column, np.ndarray):
        return column[index]
    if isinstance(column, list):
        return [column[i] for i in index.tolist()]
    return column.take(index)


class _WindowLogic(beam.DoFn):
    """One view's windows per key in state, panes fired from timers (see the module doc).

    The Beam-facing methods (``process`` and the timer callbacks, with their state and
    timer specs) are added by :func:`window_operator`.
    """

    def __init__(
        self,
        view: CompiledView,
        clock: Callable[[], float] = time.time,
        partials_in: bool = False,
        partials_out: bool = False,
        shared_floor: bool = True,
        eager: bool = False,
        ttl: bool = False,
    ) -> None:
        self._view = view
        self._spec = spec = view.spec
        # ``state_ttl`` of a global window: a key leaves state once the watermark passes its
        # latest event time + state_ttl. Only on unbounded input (``ttl``): bounded input
        # keeps every key to its final ON_TIME row, whatever its TTL, as the bounded path
        # does (docs/semantics.md, "State TTL"), however its runner advances the watermark.
        self._ttl_us = spec.state_ttl.micros if ttl and spec.state_ttl is not None else None
        self._clock = clock  # processing time in seconds; tests inject the runner's test clock
        # ``emit.eager`` panes: processing-time panes, so only where EARLY panes are given.
        self._eager = eager and spec.eager is not None and not partials_out
        # Whether the watermark one key's timer showed holds for every key of the process
        # (see ``_floor``).
        self._shared_floor = shared_floor
        # partials_in: elements are level-1 partials, merged per shard (level 2, fan-in);
        # partials_out: panes are emitted as partials of the key's shard (level 1, fan-out).
        self._partials_in = partials_in
        self._partials_out = partials_out
        # Names this operator of this pipeline: the watermark floor its instances share.
        self._token = uuid.uuid4().hex

    def setup(self) -> None:
        tune_gc()
        size_cache_entries_cheaply()
        self._plan = ViewPlan(self._view)
        eager = self._spec.eager
        if self._eager and eager is not None:
            outputs = [a.output for a in self._spec.aggregations]
            self._eager_at: tuple[int, float] | None = (outputs.index(eager.column), eager.below)
        else:
            self._eager_at = None
        # Milestones fire from rows: not where panes are partials (level 1, a fan-out shard).
        self._milestones = None if self._partials_out else (self._plan.milestones or None)
        # What an operator watches (docs/flink.md): keys holding open windows, and how far
        # the view's event time (the last watermark it fired on) is behind the wall clock.
        self._live_keys = LiveKeys(self._spec.name, self._token)  # adopts restored keys
        self._lag = Metrics.gauge(NAMESPACE, f"lag_seconds/{self._spec.name}")

    @property
    def _floor(self) -> int:
        """The latest timer an instance of this operator fired in this process, of any key:
        the watermark was past it, for every key, where the runner runs each stage as one
        instance with one watermark (Beam's Python DirectRunner, which may also make a new
        instance per bundle). Elsewhere (Flink) the parallel instances of the operator in one
        worker process have watermarks of their own, and one instance's timer says nothing of
        another's keys; Prism fires a key's timers by the upstream watermark while other keys'
        older data still waits (:data:`_ONE_INSTANCE_RUNNERS`). There each bucket keeps the
        watermark its own timers showed (``Bucket.closed_upto``) and only that counts."""
        return _FLOORS.get(self._token, _NEVER) if self._shared_floor else _NEVER

    def _raise_floor(self, at: int) -> None:
        if self._shared_floor and at > _FLOORS.get(self._token, _NEVER):
            _FLOORS[self._token] = at

    # -- data --------------------------------------------------------------------------------

    def _process(
        self,
        element: tuple[tuple, list[Item]],
        cell: Any,
        watermark_timer: Any,
        early_timer: Any,
    ) -> Iterator[Any]:
        """A bucket's windows of a router batch: merge each into its key's window, or
        dead-letter the messages of a window that had closed."""
        state_key, items = element
        plan = self._plan
        variant = plan.variants[state_key[1]]
        lateness = plan.lateness_us
        bucket = Bucket.load(cell)
        self._live_keys.loaded(state_key, len(bucket))
        closed_before = bucket.closed_upto
        floor = max(self._floor, closed_before)
        fates: dict[int, list[bool]] = {}  # candidate message -> accepted by each window
        letters: dict[int, tuple[Candidate, list[Window]]] = {}
        changed: set[Window] = set()  # windows whose timer is set again
        quiet = set()  # windows without data waiting for an EARLY pane before this batch
        early_due = int(self._clock() * 1_000_000) + plan.early_us if early_timer else 0
        earliest: dict[Window, int] = {}  # the first EARLY pane due of each window touched
        # Windows judged once the batch is in (late, eager, or waiting for an EARLY pane): a
        # key's items may merge sessions with each other (_sessions_apart), and only the
        # session they end in is judged, as Beam merges a bundle's windows before firing.
        touched: dict[tuple[bytes, Window], tuple[tuple, bool]] = {}
        sessions = variant.session_gap_us is not None
        for item in items:
            group, start, end, data, candidates = item[:5]
            opened = not bucket.holds(group)
            window = (start, end)
            # Sessions merge with the key's others; other windows are read alone.
            windows = bucket.windows(group) if sessions else None
            entry = windows.get(window) if windows is not None else bucket.entry(group, window)
            # Without candidates, every message of the item was read while its partition's
            # watermark left the window open, which bounds the watermark here: kept.
            if candidates and entry is None and book.is_expired(end, lateness, floor):
                for candidate in candidates:
                    fates.setdefault(candidate[0], []).append(False)
                    letters.setdefault(candidate[0], (candidate, []))[1].append(window)
                continue
            for candidate in candidates:
                fates.setdefault(candidate[0], []).append(True)
            if windows is not None:
                window, entry, gone = _merge_session(plan.combine, windows, start, end)
                changed.update(gone)
            elif entry is None:
                entry = _new_entry()
                # A key back after its state_ttl fires none of the milestones it fired.
                entry[_MILESTONES] = bucket.take_spent(group, window)
                bucket.put(group, window, entry)
            if window not in changed and not bucket.dirty(window):
                quiet.add(window)
            changed.add(window)
            eager = self._below(entry)
            self._add(entry, data, candidates)
            entry[_DIRTY] = True
            if self._ttl_us is not None and len(item) > 5:
                expires = item[5] + self._ttl_us
                entry[_EXPIRES] = max(expires, entry[_EXPIRES] or expires)
            key = (*state_key[:2], group, *state_key[3:])
            touched.setdefault((group, window), (key, eager))
            if opened:
                self._live_keys.inc()
        for (group, window), (key, eager) in touched.items():
            entry = bucket.entry(group, window)
            if entry is None:  # merged into a later item's session
                continue
            if entry[_FIRED] or book.is_late(window[1], floor):
                entry[_FIRED] = True  # late from its first pane: it expires at end + lateness
                yield from self._pane(key, window, entry, book.LATE, bucket)
            elif eager:  # the batch shows at once; a pending EARLY pane is this one
                yield from self._pane(key, window, entry, book.EARLY, bucket)
            elif early_timer is not None:
                if entry[_EARLY] is None:
                    entry[_EARLY] = early_due
                earliest[window] = min(earliest.get(window, entry[_EARLY]), entry[_EARLY])
        yield from self._too_late(letters, fates, state_key)
        bucket.store(cell, closed_before)
        if not changed:
            return
        self._arm(bucket, changed, watermark_timer)
        if early_timer is not None:
            # A window whose keys had no pending EARLY pane: its timer is set for the first
            # due (this batch's, or a merged session's earlier one); otherwise it is set for
            # an earlier one already.
            for window in quiet & changed:
                if bucket.dirty(window):
                    due = earliest.get(window, early_due)
                    early_timer.set(Timestamp(micros=due), dynamic_timer_tag=_tag(window))

    def _arm(self, bucket: Bucket, windows: set[Window], timer: Any) -> None:
        """Set each window's timer to its due (shared by the bucket's keys), or clear it."""
        lateness = self._plan.lateness_us
        for window in windows:
            due = bucket.due(window, lateness)
            if due is None:
                timer.clear(dynamic_timer_tag=_tag(window))
            else:
                timer.set(Timestamp(micros=due), dynamic_timer_tag=_tag(window))

    def _below(self, entry: list) -> bool:
        """Whether ``emit.eager`` applies to the batch about to be added to ``entry``: the
        watched column's value before it is below ``below``. A window without data yet, and
        a null value (nothing counted), are below; so the key's first batch shows at once.
        False for a view without eager panes."""
        if self._eager_at is None:
            return False
        if entry[_ACC] is None:
            return True
        index, below = self._eager_at
        value = self._outputs(entry)[index]
        return type(value) not in (int, float) or value < below

    def _outputs(self, entry: list) -> list[Any]:
        """The window's value, one output per aggregation (with partials in: its shards'
        latest panes merged)."""
        combine = self._plan.combine
        if self._partials_in:
            accs = [combine.decode(data) for _, data in entry[_ACC].values()]
            acc = combine.merge_accumulators(accs)
        else:
            acc = combine.decode(entry[_ACC])
        return combine.extract_output(acc)

    def _add(self, entry: list, data: Any, candidates: list[Candidate]) -> None:
        combine = self._plan.combine
        if self._partials_in:
            shard, pane, encoded = data
            shards = entry[_ACC] or {}
            keep_latest(shards, shard, pane, encoded)
            entry[_ACC] = shards
            return
        if entry[_ACC] is None:
            entry[_ACC] = data
        else:
            entry[_ACC] = combine.encode(
                combine.merge_accumulators([combine.decode(entry[_ACC]), combine.decode(data)])
            )
        if self._partials_out:
            for _, _, _, source in candidates:
                if type(source) is dict and "offset" in source:
                    entry[_SPAN] = _cover(entry[_SPAN], source["offset"])

    def _too_late(
        self,
        letters: dict[int, tuple[Candidate, list[Window]]],
        fates: dict[int, list[bool]],
        state_key: tuple,
    ) -> Iterator[Any]:
        """A message too late for every window of its key here is a ``too_late`` dead letter
        (and no longer counts as used); one too late for some windows only is used, each
        missed window counted in ``late_windows/<view>`` (as Beam drops a late window's
        element). With several variants, the first decides (see docs/semantics.md)."""
        plan = self._plan
        late_windows = 0
        for message, (candidate, missed) in letters.items():
            decides = self._partials_in or state_key[1] == 0  # the first variant decides
            if decides and all(not accepted for accepted in fates[message]):
                _, ts, payload, source = candidate
                windows_text = ", ".join(f"[{rfc3339(s)}, {rfc3339(e)})" for s, e in missed)
                if not self._partials_in:  # level 2 reads envelopes: no message accounting
                    counter(plan.used_counter).inc(-1)
                yield TaggedOutput(
                    DEAD_LETTER,
                    dead_letter(
                        payload,
                        plan.name,
                        "too_late",
                        f"event time {rfc3339(ts)} falls in {windows_text}, closed at "
                        f"end + allowed_lateness {plan.spec.allowed_lateness.text}",
                        source,
                    ),
                )
            else:
                late_windows += len(missed)
        if late_windows:
            counter(plan.late_counter).inc(late_windows)

    # -- panes -------------------------------------------------------------------------------

    def _pane(
        self,
        key: tuple,
        window: Window,
        entry: list,
        timing: str,
        bucket: Bucket,
        batch: list[tuple[tuple, tuple, int]] | None = None,
    ) -> Iterator[Any]:
        """The window's pane: a row, or with ``partials_out`` the shard's partial; ``bucket``
        holds the key's other windows (a cumulative period's windows share their
        milestones). With ``batch`` the row is not made here: its key, outputs and pane index
        go to ``batch``, for :meth:`_rows`."""
        plan = self._plan
        pane = entry[_PANE]
        entry[_PANE] += 1
        entry[_DIRTY] = False
        entry[_EARLY] = None
        if self._partials_out:
            shard = key[3] if len(key) > 3 else ""
            origin, where = shard.split("#")[0], entry[_SPAN]  # "topic/partition[#sub-key]"
            offsets = {origin: where} if origin and where is not None else {}
            yield (plan.name, key[1], *window, key[2], shard, pane, entry[_ACC], offsets)
            return
        outputs = self._outputs(entry)
        if batch is not None:
            batch.append((key, outputs, pane))
        else:
            letters: list[dict[str, Any]] = []
            row = plan.row(
                plan.variants[key[1]], *window, key[2], outputs, timing, pane, True, letters
            )
            yield row
            for letter in letters:
                yield TaggedOutput(DEAD_LETTER, letter)
        if self._milestones is not None:
            # The thresholds fired so far live in the entry: checkpointed and restored with
            # it, and kept through session merges, so none fires twice.
            shared, windows = self._period_windows(key, window, bucket)
            fired = entry[_MILESTONES]
            for other in shared:
                fired = _union(fired, windows[other][_MILESTONES])
            written = [column[0] for column in plan.written([[value] for value in outputs])]
            fired, events = self._milestones.pane(
                key[1], *window, decode_key(key[2]), written, fired
            )
            entry[_MILESTONES] = fired
            for other in shared:
                windows[other][_MILESTONES] = fired
            plan.count_milestones(len(events))
            for event in events:
                yield TaggedOutput(MILESTONES, event)

    def _rows(self, window: Window, panes: list[tuple[tuple, tuple, int]], timing: str) -> list:
        """The rows of a window's panes collected by :meth:`_pane`, made at once (and their
        ``overflow`` dead letters)."""
        plan = self._plan
        n = len(panes)
        letters: list[dict[str, Any]] = []
        rows: list[Any] = plan.rows(
            [key[1] for key, _, _ in panes],
            [window[0]] * n,
            [window[1]] * n,
            [decode_key(key[2]) for key, _, _ in panes],
            [list(column) for column in zip(*(outputs for _, outputs, _ in panes), strict=True)],
            timing,
            [pane for _, _, pane in panes],
            letters,
            by_set=True,
        )
        plan.count_rows(n)
        rows.extend(TaggedOutput(DEAD_LETTER, letter) for letter in letters)
        return rows

    def _period_windows(
        self, key: tuple, window: Window, bucket: Bucket
    ) -> tuple[list[Window], Windows]:
        """The key's other windows that share ``window``'s milestones: those of its
        cumulative period (they share its start), and the key's windows (decoded only for a
        cumulative view). Each keeps the period's count, so that the period's longest
        window, the last to expire, holds it to the end."""
        fn = self._plan.variants[key[1]].window
        if fn is None or fn.kind != "cumulative":
            return [], {}
        windows = bucket.windows(key[2])
        return [w for w in windows if w[0] == window[0] and w != window], windows

    # -- timers ------------------------------------------------------------------------------

    def _on_watermark(
        self, state_key: Any, fire_ts: Any, tag: str, cell: Any, watermark_timer: Any
    ) -> Iterator[Any]:
        """Every window of the bucket due by now fires: its keys' ON_TIME panes at its end,
        its state dropped at end + allowed lateness, or a key's once its ``state_ttl`` has
        passed (a global window)."""
        # Portable runners carry timer timestamps in milliseconds: the timer set for
        # end - 1us fires as end - 1ms, so anything within that millisecond is due.
        now = fire_ts.micros + 999
        self._raise_floor(now)
        self._lag.set(int(self._clock() - now / 1_000_000))
        bucket = Bucket.load(cell)
        self._live_keys.loaded(state_key, len(bucket))
        closed_before = bucket.closed_upto
        lateness = self._plan.lateness_us
        due = [w for w in bucket.windows_held() if (bucket.due(w, lateness) or now + 1) <= now]
        if not due:
            return
        bucket.closed_upto = max(bucket.closed_upto, now)  # the watermark is past ``now``
        for window in sorted(due):
            end_ts = window[1] - 1
            # Before its end a window changes only for keys whose state_ttl has passed (the
            # global window never ends): those alone are decoded, not every key it holds.
            held = bucket.members(window) if end_ts <= now else bucket.expired(window, now)
            # Past end + lateness the entries that have fired leave undecoded: nothing of
            # theirs is written any more.
            fired = bucket.fired(window) if end_ts + lateness <= now else ()
            panes: list[tuple[tuple, tuple, int]] = []  # the ON_TIME panes, made at once
            for group in sorted(held):
                if group in fired:
                    self._drop(bucket, group, window)
                    continue
                entry = bucket.entry(group, window)
                if entry is None:
                    continue
                key = (*state_key[:2], group, *state_key[3:])
                if not entry[_FIRED] and end_ts <= now:
                    yield from self._pane(key, window, entry, book.ON_TIME, bucket, panes)
                    entry[_FIRED] = True
                expires = entry[_EXPIRES] if len(entry) > _EXPIRES else None
                if entry[_FIRED] and end_ts + lateness <= now:
                    self._drop(bucket, group, window)
                elif expires is not None and expires <= now:
                    # state_ttl: the key leaves state; data since its last pane is written
                    # first, so its last row holds all of it.
                    if entry[_DIRTY]:
                        yield from self._pane(key, window, entry, book.EARLY, bucket)
                    if entry[_MILESTONES] and any(entry[_MILESTONES]):
                        bucket.spend(group, window, entry[_MILESTONES])
                    self._drop(bucket, group, window)
            if panes:
                yield from self._rows(window, panes, book.ON_TIME)
        bucket.store(cell, closed_before)
        self._arm(bucket, set(due), watermark_timer)

    def _drop(self, bucket: Bucket, group: bytes, window: Window) -> None:
        """The key leaves the window's state, and the live keys once it holds no window."""
        bucket.drop(group, window)
        if not bucket.holds(group):
            self._live_keys.dec()

    def _on_early(self, state_key: Any, tag: str, cell: Any, early_timer: Any) -> Iterator[Any]:
        """The window's EARLY panes that are due; the timer is set again for the next.

        The timer was set for the earliest pending pane, so that one is due whatever the
        clock says (a test's clock may stand still while the runner's advances)."""
        bucket = Bucket.load(cell)
        self._live_keys.loaded(state_key, len(bucket))
        closed_before = bucket.closed_upto
        window = _window_of(tag)
        pending = []
        for group in sorted(bucket.dirty(window)):
            entry = bucket.entry(group, window)
            if entry is not None and entry[_DIRTY] and not entry[_FIRED]:
                pending.append((group, entry))
        if pending:
            dues = [entry[_EARLY] or _NEVER for _, entry in pending]
            now = max(int(self._clock() * 1_000_000), min(dues))
            for (group, entry), due in zip(pending, dues, strict=True):
                if due <= now:
                    key = (*state_key[:2], group, *state_key[3:])
                    yield from self._pane(key, window, entry, book.EARLY, bucket)
            later = [due for due in dues if due > now]
            if later:
                early_timer.set(Timestamp(micros=min(later)), dynamic_timer_tag=tag)
        bucket.store(cell, closed_before)


def _merge_session(
    combine: Any, windows: Windows, start: int, end: int
) -> tuple[Window, list, list[Window]]:
    """Merge the session [start, end) with the key's live sessions it overlaps, as Beam's
    ``Sessions`` does; a merged session restarts its panes at 0, as Beam's do. Returns the
    session, its entry and the sessions merged away (their timers are set again)."""
    overlapping = [w for w in windows if w[0] < end and start < w[1]]
    if len(overlapping) == 1 and overlapping[0][0] <= start and end <= overlapping[0][1]:
        return overlapping[0], windows[overlapping[0]], []
    entry = _new_entry()
    accs = []
    for window in overlapping:
        old = windows.pop(window)
        start, end = min(start, window[0]), max(end, window[1])
        if old[_ACC] is not None:
            accs.append(combine.decode(old[_ACC]))
        entry[_FIRED] = entry[_FIRED] or old[_FIRED]
        entry[_MILESTONES] = _union(entry[_MILESTONES], old[_MILESTONES])
        if old[_EARLY] is not None:  # a pending EARLY pane keeps its due through the merge
            entry[_EARLY] = min(old[_EARLY], entry[_EARLY] or old[_EARLY])
    if accs:
        entry[_ACC] = combine.encode(combine.merge_accumulators(accs))
    window = (start, end)
    windows[window] = entry
    return window, entry, overlapping


def _union(fired: list[int] | None, other: list[int] | None) -> list[int] | None:
    """The milestones two merged sessions fired: per watched column a count of thresholds
    fired, a prefix of the ascending thresholds, so their union is the longer prefix."""
    if fired is None or other is None:
        return fired if other is None else list(other)
    return [max(a, b) for a, b in zip(fired, other, strict=True)]


#: Watermark floors per operator (its token), for the instances of this process.
_FLOORS: dict[str, int] = {}

#: Runners that run each stage of a pipeline as one instance at a time, with one watermark
#: whose passing a timer of any key shows. Not Prism (Beam 2.77): it builds a stateful stage's
#: bundles at the upstream watermark (``stageState.bundleReady`` returns ``upstreamW``, not the
#: input watermark that pending data holds back) and fires a key's timer once that watermark
#: passes it (``statefulStageKind.buildEventTimeBundle``: ``if e.timestamp > watermark``), in
#: order with that key's own data only; so a timer of one bucket fires while another bucket's
#: older data waits, and a shared floor made that data LATE, or too late. (Beam's own
#: DirectRunner may hand a pipeline to Prism itself; liveagg's ``PythonDirectRunner`` never
#: does: docs/runners.md, "Which engine a plain liveagg run uses".)
_ONE_INSTANCE_RUNNERS = frozenset(
    {
        "PythonDirectRunner",
        "DirectRunner",
        "SwitchingDirectRunner",
        "BundleBasedDirectRunner",
        "FnApiRunner",
    }
)


def one_watermark_per_stage(pipeline: beam.Pipeline) -> bool:
    """Whether ``pipeline``'s runner runs a stage as one instance with one watermark, so that
    one key's timer tells the watermark of all keys (any other runner: no)."""
    return type(pipeline.runner).__name__ in _ONE_INSTANCE_RUNNERS


def _cover(span: list[int] | None, offset: int) -> list[int]:
    """The ``[first, last]`` source offsets of a window's messages, widened by ``offset``."""
    return [offset, offset] if span is None else [min(span[0], offset), max(span[1], offset)]


def window_operator(
    view: CompiledView | ViewSpec,
    clock: Callable[[], float] = time.time,
    early: bool = False,
    *,
    partials_in: bool = False,
    partials_out: bool = False,
    shared_floor: bool = True,
    eager: bool = False,
    ttl: bool = False,
) -> beam.DoFn:
    """The window operator DoFn for one view; with ``early``, processing-time EARLY panes;
    with ``eager``, the ``emit.eager`` panes of a view that declares it (EARLY panes right
    after a batch, needing no timer); with ``ttl``, a global window's ``state_ttl`` (keys
    leave state), for unbounded input.

    Rows leave on the main output, dead letters on ``dead_letter`` and, where panes are rows
    (not ``partials_out``), the view's milestone events on ``milestones``.

    ``shared_floor``: whether the pipeline's runner runs each stage as one instance with one
    watermark (:func:`one_watermark_per_stage`).

    ``partials_in`` and ``partials_out`` are the two halves of a sharded aggregation
    (:class:`_WindowLogic`).

    Each call makes fresh state and timer specs, with timer names that carry the view name:
    Beam's Python DirectRunner mixes up the timers of stateful transforms whose timer
    families share a name. The early variant is a separate class because a processing-time
    timer makes that runner leave its fast batch engine, so views without early panes, and
    bounded runs, do without it.
    """
    view = as_compiled(view)
    # Both halves of a fan-out run in one pipeline: their timer families need their own names.
    family = view.name + ("_merge" if partials_in else "_shard" if partials_out else "")
    windows = BagStateSpec("bucket", BucketCoder())
    watermark = TimerSpec(f"watermark_{family}", TimeDomain.WATERMARK)

    class WindowOperator(_WindowLogic):
        def process(
            self,
            element: tuple[tuple, list[Item]],
            cell: Any = beam.DoFn.StateParam(windows),
            watermark_timer: Any = beam.DoFn.TimerParam(watermark),
        ) -> Iterator[Any]:
            return self._process(element, cell, watermark_timer, None)

        @on_timer(watermark)
        def on_watermark(
            self,
            key: Any = beam.DoFn.KeyParam,
            fire_ts: Any = beam.DoFn.TimestampParam,
            tag: str = beam.DoFn.DynamicTimerTagParam,
            cell: Any = beam.DoFn.StateParam(windows),
            watermark_timer: Any = beam.DoFn.TimerParam(watermark),
        ) -> Iterator[Any]:
            return self._on_watermark(key, fire_ts, tag, cell, watermark_timer)

    if not early:
        return WindowOperator(view, clock, partials_in, partials_out, shared_floor, eager, ttl)

    early_spec = TimerSpec(f"early_{family}", TimeDomain.REAL_TIME)

    class EarlyWindowOperator(WindowOperator):
        def process(
            self,
            element: tuple[tuple, list[Item]],
            cell: Any = beam.DoFn.StateParam(windows),
            watermark_timer: Any = beam.DoFn.TimerParam(watermark),
            early_timer: Any = beam.DoFn.TimerParam(early_spec),
        ) -> Iterator[Any]:
            return self._process(element, cell, watermark_timer, early_timer)

        @on_timer(early_spec)
        def on_early(
            self,
            key: Any = beam.DoFn.KeyParam,
            tag: str = beam.DoFn.DynamicTimerTagParam,
            cell: Any = beam.DoFn.StateParam(windows),
            early_timer: Any = beam.DoFn.TimerParam(early_spec),
        ) -> Iterator[Any]:
            return self._on_early(key, tag, cell, early_timer)

    return EarlyWindowOperator(view, clock, partials_in, partials_out, shared_floor, eager, ttl)


class StreamingAggregate(beam.PTransform):
    """Aggregates an unbounded (or bounded) PCollection of messages with live panes.

    Returns ``{"views": {name: PCollection[row]}, "dead_letters": PCollection[dict]}``, and
    ``"milestones"`` when a view declares milestones, like
    :class:`~liveagg.transforms.bounded.BoundedAggregate`: each pane fires the thresholds its
    value reaches that its window had not fired. With ``partials`` (level 1 of a two-level
    run) each view's PCollection holds the :data:`~liveagg.transforms.envelope.Partial` panes
    of each Kafka partition's keys, and no milestone fires (level 2 fires them).

    ``hot_key_fanout`` applies only where stages run apart (Flink, Prism). On Beam's Python
    DirectRunner (:func:`one_watermark_per_stage`) a view is aggregated unsharded: one
    process has no workers to spread a hot key over, and that runner does not hold a
    stage's output watermark for the timers it has pending (``_ParDoEvaluator.finish_bundle``
    returns ``TransformResult(self, bundles, [], result_counters, None)``, no watermark
    holds), so the merging operator's timers fired before the shards' ``ON_TIME`` panes
    reached it: its windows closed early, then reopened as ``LATE`` with part of the value,
    ``pane_index`` 0 and their milestones again.
    """

    def __init__(
        self,
        views: Sequence[CompiledView | ViewSpec],
        clock: Callable[[], float] = time.time,
        early_panes: bool = True,
        partials: bool = False,
    ) -> None:
        super().__init__()
        context = RunContext("--streaming", level=1 if partials else 0)
        self._views = [as_compiled(view, context) for view in views]
        self._clock = clock
        self._early_panes = early_panes  # False for bounded input: its watermark jumps to the end
        self._partials = partials

    def expand(self, messages: beam.PCollection) -> dict[str, Any]:
        names = [view_tag(view.name) for view in self._views]
        one_watermark = one_watermark_per_stage(messages.pipeline)
        fan_out = not one_watermark
        routed = messages | "Route" >> beam.ParDo(
            _Route(self._views, by_source=self._partials, fan_out=fan_out)
        ).with_outputs(DEAD_LETTER, *names)
        out = ViewOutputs(routed[DEAD_LETTER])
        for view in self._views:
            spec = view.spec
            early = self._early_panes and spec.early is not None
            sharded = self._partials or (fan_out and spec.hot_key_fanout is not None)
            operator = window_operator(
                view,
                self._clock,
                early,
                partials_out=sharded,
                shared_floor=one_watermark,
                eager=self._early_panes,
                ttl=self._early_panes,
            )
            fired = routed[view_tag(spec.name)] | f"{spec.name}/Window" >> beam.ParDo(
                operator
            ).with_outputs(DEAD_LETTER, MILESTONES, main="rows")
            if self._partials or not sharded:
                out.add(spec.name, fired, bool(spec.milestones) and not self._partials)
                continue
            out.dead_letters(fired[DEAD_LETTER])
            # Hot-key fan-out: the sub-keys' partial panes merge per key in a second operator.
            merged = fired.rows | f"{spec.name}/FanIn" >> MergePartials(
                view, self._clock, early, eager=self._early_panes
            )
            out.add(spec.name, merged, bool(spec.milestones))
        return out.result()


class MergePartials(beam.PTransform):
    """Merges :data:`~liveagg.transforms.envelope.Partial` panes into the view's rows.

    Per grouping key, each window keeps the latest pane of every shard
    and fires like the one-level operator, milestones and eager panes included (``eager``:
    where EARLY panes are given). ``view`` is the view whose rows are written.
    Returns ``{"rows": ..., "dead_letter": ..., "milestones": ...}``.
    """

    def __init__(
        self,
        view: CompiledView | ViewSpec,
        clock: Callable[[], float] = time.time,
        early: bool = False,
        eager: bool = False,
    ) -> None:
        super().__init__()
        self._view = view
        self._clock = clock
        self._early = early
        self._eager = eager

    def expand(self, partials: beam.PCollection) -> Any:
        operator = window_operator(
            self._view,
            self._clock,
            self._early,
            partials_in=True,
            shared_floor=one_watermark_per_stage(partials.pipeline),
            eager=self._eager,
        )
        return (
            partials
            | "Key" >> beam.Map(keyed_partial)
            | "Merge" >> beam.ParDo(operator).with_outputs(DEAD_LETTER, MILESTONES, main="rows")
        )


def keyed_partial(partial: tuple, payload: Any = None, source: Any = None) -> tuple:
    """A partial as the merge operator's ``((view, variant, bucket), [item])`` (a batch of
    one). The envelope is the partial's message: a too-late one is its dead letter."""
    view, variant, start, end, key, shard, pane, data, _ = partial
    candidates = [(0, start, payload, source)] if payload is not None else []
    return ((view, variant, bucket_of(key)), [(key, start, end, (shard, pane, data), candidates)])
