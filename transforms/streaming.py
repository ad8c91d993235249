"""The streaming path: a keyed window operator with event-time and processing-time timers.

Beam's windowed ``GroupByKey`` drops data later than the allowed lateness without a trace;
SPEC requires such messages to reach the dead-letter output. So liveagg runs its own window
operator, a stateful DoFn keyed by (view variant, bucket of grouping keys), with the semantics of
Beam's ``AfterWatermark(early=AfterProcessingTime(early), late=AfterCount(1))`` in
accumulating mode:

* every pane carries the full value of its window;
* ``EARLY`` panes every ``emit.early`` of processing time while the window has new data;
* one ``ON_TIME`` pane when the watermark passes the end of the window;
* one ``LATE`` pane per late message until the watermark passes end + allowed lateness,
  when the window's state is dropped.

The operator knows the watermark only through its own fired timers. A window is closed to a
message when it closes (end + allowed lateness) no later than the last window its key's
bucket closed. A message for a window that its key does not hold and that closes later is
accepted, as a late pane if the watermark had passed; it cannot overwrite an earlier result,
because there is none. A message closed out of all its windows is a ``too_late`` dead letter;
one closed out of some of its (sliding) windows only is used, and each window it misses is
counted in ``late_windows/<view>``, as Beam drops an element per window. A message travels
once per variant (grouping set, granularity); its first variant decides whether it was used
or too late, so that each message is counted once (docs/semantics.md, "Accounting").

Layout, chosen for portable runners where state lives in the runner (Flink) and each state
access costs the SDK worker a blocking round trip:

* the operator is keyed by a *bucket* of grouping keys (:func:`bucket_of`), not by the
  grouping key: a bundle reads and writes at most :data:`KEY_BUCKETS` keys per view variant,
  however many grouping keys it holds;
* a bucket's whole state is one cell, read once per bucket and bundle (:func:`_load`);
* each window has its own event-time timer, tagged with its bounds (:meth:`_WindowLogic._arm`),
  shared by the bucket's grouping keys.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from liveagg.runtime import tune_gc
from liveagg.spec import ViewSpec
from liveagg.transforms import envelope
from liveagg.transforms.deadletter import NAMESPACE, counter, dead_letter
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.eventtime import rfc3339
from liveagg.transforms.live_keys import LiveKeys, run_token
from liveagg.transforms.plan import Tally, ViewPlan, route, split, view_tag

# Per-window state entry: [encoded accumulator, next pane index, on-time fired, dirty,
# source offsets covered]. With partials in, the accumulator is {shard: (pane, encoded)}.
_ACC, _PANE, _FIRED, _DIRTY, _SPAN = range(5)
_NEVER = -(2**62)
_FOREVER = 2**62

# Buckets per view variant (and shard). More buckets: more state round trips per bundle;
# fewer: bigger cells, each rewritten whole when a bundle touches it (docs/performance.md).
KEY_BUCKETS = 32
#: Messages a router holds before sending its batches, whatever the bundle's size.
MAX_BATCHED = 10_000

Windows = dict[tuple[int, int], list]
Groups = dict[bytes, Windows]  # a bucket's grouping keys and their open windows


def bucket_of(key: bytes) -> int:
    """The state bucket of a grouping key: stable across processes, unlike ``hash``."""
    return zlib.crc32(key) % KEY_BUCKETS


def _legacy(state_key: tuple) -> bool:
    """A state key of builds that keyed the operator by grouping key, not bucket."""
    return not isinstance(state_key[2], int)


def _load(cell: Any, state_key: tuple) -> tuple[Groups, int, bool]:
    """A bucket's state: its grouping keys' open windows, how far it has closed windows,
    and whether an EARLY timer is pending.

    All three live in one cell: on Flink each cell costs a blocking round trip per bundle.
    A state key of earlier builds (:func:`_legacy`) holds one grouping key's windows: as a
    bare dict (three cells), or with the other two parts (one cell).
    """
    value = cell.read()
    if value is None:
        return {}, _NEVER, False
    if _legacy(state_key):
        if type(value) is dict:
            value = (value, _NEVER, False)
        windows, closed_upto, early_pending = value
        return ({state_key[2]: windows} if windows else {}), closed_upto, bool(early_pending)
    groups, closed_upto, early_pending = value
    return groups, closed_upto, bool(early_pending)


def _store(
    cell: Any, state_key: tuple, groups: Groups, closed_upto: int, early_pending: bool
) -> None:
    if not groups and closed_upto == _NEVER and not early_pending:
        cell.clear()
        return
    if _legacy(state_key):  # written back in the layout its key was read with
        groups = groups.get(state_key[2], {})  # type: ignore[assignment]
    cell.write((groups, closed_upto, int(early_pending)))


class _Route(beam.DoFn):
    """Decodes messages and keys them per view by (variant, bucket[, shard]), the grouping
    key travelling with the message.

    A bundle's messages leave in one element per state key at the end of the bundle, not
    one per message: on a portable runner each element crosses to the runner and back to a
    worker, and the window operator loads a bucket's state and decodes each accumulator once
    per element. The batch carries the earliest event time of its messages.

    A view is sharded (a fourth key part) at level 1 of a two-level run, by the Kafka
    partition it was read from, and when it declares ``hot_key_fanout``, by a round-robin
    sub-key: its shards are aggregated apart and merged by a second operator.
    """

    def __init__(self, specs: list[ViewSpec], by_source: bool = False) -> None:
        self._specs = specs
        self._by_source = by_source

    def setup(self) -> None:
        tune_gc()
        self._plans = [ViewPlan(s) for s in self._specs]
        self._tags = [view_tag(s.name) for s in self._specs]
        self._fanout = [s.hot_key_fanout or 0 for s in self._specs]
        self._turn = 0
        self._tally = Tally(self._specs[0].source)

    def start_bundle(self) -> None:
        # state key -> [view index, earliest event time, items]
        self._batches: dict[tuple, list] = {}
        self._buffered = 0

    def process(self, element: Any) -> Iterator[TaggedOutput]:
        payload, source = split(element)
        origin = None
        if self._by_source:  # Kafka records name their partition; other sources are one
            kafka = type(source) is dict and "partition" in source
            origin = f"{source['topic']}/{source['partition']}" if kafka else "input"
        batches = self._batches
        for item in route(self._plans, element, self._tally):
            if isinstance(item, dict):
                yield TaggedOutput(DEAD_LETTER, item)
                continue
            index, (ts, row, group) = item
            plan = self._plans[index]
            shard = origin
            fanout = self._fanout[index]
            if fanout:
                self._turn += 1
                shard = f"{origin or ''}#{self._turn % fanout}"
            for variant, key in plan.keys(group):
                bucket = bucket_of(key)
                routed = (
                    (plan.name, variant.index, bucket)
                    if shard is None
                    else (plan.name, variant.index, bucket, shard)
                )
                batch = batches.get(routed)
                if batch is None:
                    batch = batches[routed] = [index, ts, []]
                elif ts < batch[1]:
                    batch[1] = ts
                batch[2].append((key, ts, row, payload, source))
        self._buffered += 1
        if self._buffered >= MAX_BATCHED:  # a large bundle (a bounded read) leaves in parts
            yield from self._flush()

    def finish_bundle(self) -> Iterator[TaggedOutput]:
        yield from self._flush()

    def _flush(self) -> Iterator[TaggedOutput]:
        """Each buffered batch as one element, stamped with its earliest event time."""
        for routed, (index, earliest, items) in self._batches.items():
            value = GlobalWindows.windowed_value((routed, items), Timestamp(micros=earliest))
            yield TaggedOutput(self._tags[index], value)
        self._batches = {}
        self._buffered = 0
        self._tally.flush()


class _WindowLogic(beam.DoFn):
    """One view's windows per key in state, panes fired from timers (see the module doc).

    The Beam-facing methods (``process`` and the timer callbacks, with their state and
    timer specs) are added by :func:`window_operator`.
    """

    def __init__(
        self,
        spec: ViewSpec,
        clock: Callable[[], float] = time.time,
        partials_in: bool = False,
        partials_out: bool = False,
    ) -> None:
        self._spec = spec
        self._clock = clock  # processing time in seconds; tests inject the runner's test clock
        # partials_in: elements are level-1 partials, merged per shard (level 2, fan-in);
        # partials_out: panes are emitted as partials of the key's shard (level 1, fan-out).
        self._partials_in = partials_in
        self._partials_out = partials_out
        self._run = run_token()  # live_keys: this run's cells (transforms/live_keys.py)

    def setup(self) -> None:
        tune_gc()
        self._plan = ViewPlan(self._spec)
        # What an operator watches (docs/flink.md): keys holding open windows, and how far
        # the view's event time (the last watermark it fired on) is behind the wall clock.
        self._live_keys = LiveKeys(self._spec.name, self._run)
        self._lag = Metrics.gauge(NAMESPACE, f"lag_seconds/{self._spec.name}")
        self.start_bundle()

    def start_bundle(self) -> None:
        # State key -> the earliest due of its entries after its last sweep in this bundle.
        # One watermark step fires the timer of every window due in a bucket, one callback
        # each; the first sweeps them all, so the others need neither a state read nor a
        # scan of the bucket. Messages for the key forget it (:meth:`_process`).
        self._swept: dict[Any, int] = {}

    def _process(
        self,
        element: tuple[tuple, list[tuple[bytes, int, tuple, Any, Any]]],
        cell: Any,
        watermark_timer: Any,
        early_timer: Any,
    ) -> Iterator[Any]:
        """One state key's batch of ``(group, ts, row, payload, source)`` items, in order.

        The bucket's state is loaded and stored once per batch, and each window's
        accumulator decoded and encoded once (sessions, which merge, and partials, which
        are not decoded, excepted).
        """
        state_key, items = element
        self._swept.pop(state_key, None)
        plan = self._plan
        combine = plan.combine
        variant = plan.variants[state_key[1]]
        lateness = plan.lateness_us
        in_place = variant.session_gap_us is None and not self._partials_in
        groups, closed_upto, early_pending = _load(cell, state_key)
        self._live_keys.loaded(state_key, len(groups))
        decoded: dict[int, list] = {}  # id -> entry whose _ACC is decoded until the end
        armed: dict[tuple[int, int], list[bytes]] = {}  # windows new to keys -> those keys
        changed = unfired = False
        # A message travels once per variant; its first variant (the first grouping set at
        # the first size) accounts for it: used, or a too_late dead letter when all its
        # windows there have closed. Windows closed for part of a message are counted only.
        accounts = state_key[1] == 0 and not self._partials_in
        used = late_windows = 0
        for group, ts, row, payload, source in items:
            key = (*state_key[:2], group, *state_key[3:])  # the row's (view, variant, key[, shard])
            state = groups.get(group)
            opened = state is None  # the grouping key had no open window before this message
            if state is None:
                state = {}
            touched = []
            expired = []
            # A partial names its window: (start, end, shard, pane, encoded accumulator).
            spans = [(row[0], row[1])] if self._partials_in else variant.assign(ts)
            for start, end in spans:
                if (start, end) not in state and end - 1 + lateness <= closed_upto:
                    expired.append((start, end))
                    continue
                if variant.session_gap_us is not None:
                    start, end, entry = self._merge_session(state, start, end)
                else:
                    entry = state.get((start, end)) or [None, 0, False, False, None]
                if self._partials_in:
                    shards = entry[_ACC] or {}
                    _, _, shard, pane, data = row
                    seen = shards.get(shard)
                    if seen is not None and seen[0] > pane:
                        continue  # an older pane of this shard, delivered late: superseded
                    shards[shard] = (pane, data)
                    entry[_ACC] = shards
                else:
                    if in_place and id(entry) in decoded:
                        acc = entry[_ACC]
                    else:
                        acc = (
                            combine.create_accumulator()
                            if entry[_ACC] is None
                            else combine.decode(entry[_ACC])
                        )
                    acc = combine.add_input(acc, row)
                    if in_place:
                        entry[_ACC] = acc
                        decoded[id(entry)] = entry
                    else:
                        entry[_ACC] = combine.encode(acc)
                    if self._partials_out and type(source) is dict and "offset" in source:
                        entry[_SPAN] = _cover(entry[_SPAN], source["offset"])
                entry[_DIRTY] = True
                if (start, end) not in state:
                    armed.setdefault((start, end), []).append(group)
                state[(start, end)] = entry
                touched.append((start, end))
            if expired and (touched or not (accounts or self._partials_in)):
                late_windows += len(expired)  # as Beam drops a late window's element
            elif expired:  # too late for all its windows: the message is a dead letter
                windows_text = ", ".join(f"[{rfc3339(s)}, {rfc3339(e)})" for s, e in expired)
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
            if touched and accounts:
                used += 1
            for window in touched:
                entry = state[window]
                if entry[_FIRED]:  # late data within lateness: one LATE pane per message
                    data = combine.encode(entry[_ACC]) if id(entry) in decoded else None
                    yield from self._pane(key, window, entry, "LATE", data)
            if not touched:
                continue
            changed = True
            if opened:
                groups[group] = state
                self._live_keys.inc()
            unfired = unfired or any(not state[w][_FIRED] for w in touched)
        for entry in decoded.values():
            entry[_ACC] = combine.encode(entry[_ACC])
        if used:
            counter(plan.used_counter).inc(used)
        if late_windows:
            counter(plan.late_counter).inc(late_windows)
        if not changed:
            return
        for window, keys in armed.items():  # a new entry is not fired: its end is earliest due
            # An entry may have been merged into a larger session since: arm what is left.
            entry = next((e for g in keys if (e := groups.get(g, {}).get(window))), None)
            if entry is not None:
                self._arm(watermark_timer, window, entry)
        if early_timer is not None and not early_pending and unfired:
            early_timer.set(Timestamp(seconds=self._clock()) + plan.early_us / 1_000_000)
            early_pending = True
        _store(cell, state_key, groups, closed_upto, early_pending)

    def _merge_session(self, state: Windows, start: int, end: int) -> tuple[int, int, list]:
        """Merge the proto-session [start, end) with the live sessions it overlaps."""
        combine = self._plan.combine
        entry: list = [None, 0, False, False, None]
        accs = []
        for window in [w for w in state if w[0] < end and start < w[1]]:
            old = state.pop(window)
            start, end = min(start, window[0]), max(end, window[1])
            accs.append(combine.decode(old[_ACC]))
            entry[_PANE] = max(entry[_PANE], old[_PANE])
            entry[_FIRED] = entry[_FIRED] or old[_FIRED]
        if accs:
            entry[_ACC] = combine.encode(combine.merge_accumulators(accs))
        return start, end, entry

    def _arm(self, timer: Any, window: tuple[int, int], entry: list) -> None:
        """Set the window's own timer: to its end, or once fired, to its end + lateness.

        A timer per window, not one per key: when the watermark jumps (a backlog, a source
        gone idle) every due window fires at once. One timer per key, moved to its next
        window after each firing, fired a key's windows one watermark step apart.
        """
        timer.set(Timestamp(micros=self._due(window, entry)), dynamic_timer_tag=_tag(window))

    def _due(self, window: tuple[int, int], entry: list) -> int:
        return window[1] - 1 + (self._plan.lateness_us if entry[_FIRED] else 0)

    def _pane(
        self,
        key: tuple,
        window: tuple[int, int],
        entry: list,
        timing: str,
        encoded: bytes | None = None,
    ) -> Iterator[Any]:
        """The window's pane: a row, or with ``partials_out`` the shard's partial.

        ``encoded`` is the accumulator when ``entry`` holds it decoded (:meth:`_process`).
        A row with a result beyond the range of a double is followed by its ``overflow``
        dead letters (:meth:`ViewPlan.row`), one per pane that holds the null.
        """
        plan = self._plan
        combine = plan.combine
        pane = entry[_PANE]
        entry[_PANE] += 1
        entry[_DIRTY] = False
        if self._partials_out:
            shard = key[3] if len(key) > 3 else ""
            origin, where = shard.split("#")[0], entry[_SPAN]  # "topic/partition[#sub-key]"
            offsets = {origin: where} if origin and where is not None else {}
            data = entry[_ACC] if encoded is None else encoded
            yield (plan.name, key[1], *window, key[2], shard, pane, data, offsets)
            return
        if self._partials_in:
            accs = [combine.decode(data) for _, data in entry[_ACC].values()]
            acc = combine.merge_accumulators(accs)
        else:
            acc = combine.decode(entry[_ACC] if encoded is None else encoded)
        outputs = combine.extract_output(acc)
        letters: list[dict[str, Any]] = []
        variant = plan.variants[key[1]]
        yield plan.row(variant, *window, key[2], outputs, timing, pane, letters=letters)
        for letter in letters:
            yield TaggedOutput(DEAD_LETTER, letter)

    def _on_watermark(
        self, state_key: Any, fire_ts: Any, tag: str, cell: Any, watermark_timer: Any
    ) -> Iterator[dict[str, Any]]:
        # Portable runners carry timer timestamps in milliseconds: the timer set for
        # end - 1us fires as end - 1ms, so anything within that millisecond is due.
        now = fire_ts.micros + 999
        self._lag.set(int(self._clock() - now / 1_000_000))
        swept = self._swept.get(state_key)
        if swept is not None and now < swept:
            return  # nothing due: an earlier callback of this step swept the bucket
        lateness = self._plan.lateness_us
        groups, closed_upto, early_pending = _load(cell, state_key)
        self._live_keys.loaded(state_key, len(groups))
        if not groups:
            return
        # Any window due by ``now`` fires, whichever window's timer this is: the watermark
        # has passed ``now``. A timer from before timers were per window has no tag, and
        # re-arms every window. Entries not due are only looked at for the earliest due.
        changed: set[tuple[int, int]] = set()  # windows whose timer must be set again
        earliest = _FOREVER  # of the entries left
        for group in list(groups):
            state = groups[group]
            todo = []
            for window, entry in state.items():
                at = window[1] - 1 + (lateness if entry[_FIRED] else 0)  # self._due, inlined
                if at <= now or not tag:
                    todo.append(window)
                elif at < earliest:
                    earliest = at
            if not todo:
                continue
            key = (*state_key[:2], group, *state_key[3:])
            for window in sorted(todo):
                entry = state[window]
                end_ts = window[1] - 1
                if not entry[_FIRED] and end_ts <= now:
                    yield from self._pane(key, window, entry, "ON_TIME")
                    entry[_FIRED] = True
                    changed.add(window)
                if entry[_FIRED] and end_ts + lateness <= now:
                    del state[window]
                    closed_upto = max(closed_upto, end_ts + lateness)
                    changed.add(window)
                    continue
                if not tag:
                    changed.add(window)
                earliest = min(earliest, self._due(window, entry))
            if not state:
                del groups[group]
                self._live_keys.dec()
        self._swept[state_key] = earliest
        # A window's timer is shared by the bucket's keys: it is set to the earliest due of
        # the entries left, and cleared when none is left (this firing's own is spent).
        due: dict[tuple[int, int], int] = {}
        for window in changed:
            for state in groups.values():
                entry = state.get(window)
                if entry is not None:
                    at = self._due(window, entry)
                    due[window] = min(due.get(window, at), at)
        for window in changed:
            if window in due:
                watermark_timer.set(Timestamp(micros=due[window]), dynamic_timer_tag=_tag(window))
            elif _tag(window) != tag:
                watermark_timer.clear(dynamic_timer_tag=_tag(window))
        if changed:  # else nothing fired or expired: the cell is as it was read
            _store(cell, state_key, groups, closed_upto, early_pending)

    def _on_early(self, state_key: Any, cell: Any) -> Iterator[dict[str, Any]]:
        groups, closed_upto, _ = _load(cell, state_key)
        for group, state in groups.items():
            key = (*state_key[:2], group, *state_key[3:])
            for window in sorted(state):
                entry = state[window]
                if entry[_DIRTY] and not entry[_FIRED]:
                    yield from self._pane(key, window, entry, "EARLY")
        _store(cell, state_key, groups, closed_upto, False)


def _tag(window: tuple[int, int]) -> str:
    """A window's timer tag."""
    return f"{window[0]}/{window[1]}"


def _cover(span: list[int] | None, offset: int) -> list[int]:
    """The ``[first, last]`` source offsets of a window's messages, widened by ``offset``."""
    return [offset, offset] if span is None else [min(span[0], offset), max(span[1], offset)]


def window_operator(
    spec: ViewSpec,
    clock: Callable[[], float] = time.time,
    early: bool = False,
    *,
    partials_in: bool = False,
    partials_out: bool = False,
) -> beam.DoFn:
    """The window operator DoFn for one view; with ``early``, processing-time EARLY panes.

    ``partials_in`` and ``partials_out`` are the two halves of a sharded aggregation
    (:class:`_WindowLogic`).

    Each call makes fresh state and timer specs, with timer names that carry the view name:
    Beam's Python DirectRunner mixes up the timers of stateful transforms whose timer
    families share a name. The early variant is a
    separate class because a processing-time timer makes that runner leave its fast batch
    engine, so views without early panes, and bounded runs, do without it.
    """
    # Both halves of a fan-out run in one pipeline: their timer families need their own names.
    family = spec.name + ("_merge" if partials_in else "_shard" if partials_out else "")
    windows = ReadModifyWriteStateSpec("windows", FastPrimitivesCoder())  # see _load
    watermark = TimerSpec(f"watermark_{family}", TimeDomain.WATERMARK)

    class WindowOperator(_WindowLogic):
        def process(
            self,
            element: tuple[tuple, list[tuple[bytes, int, tuple, Any, Any]]],
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
        ) -> Iterator[dict[str, Any]]:
            return self._on_watermark(key, fire_ts, tag, cell, watermark_timer)

    if not early:
        return WindowOperator(spec, clock, partials_in, partials_out)

    early_spec = TimerSpec(f"early_{family}", TimeDomain.REAL_TIME)

    class EarlyWindowOperator(WindowOperator):
        def process(
            self,
            element: tuple[tuple, list[tuple[bytes, int, tuple, Any, Any]]],
            cell: Any = beam.DoFn.StateParam(windows),
            watermark_timer: Any = beam.DoFn.TimerParam(watermark),
            early_timer: Any = beam.DoFn.TimerParam(early_spec),
        ) -> Iterator[Any]:
            return self._process(element, cell, watermark_timer, early_timer)

        @on_timer(early_spec)
        def on_early(
            self,
            key: Any = beam.DoFn.KeyParam,
            cell: Any = beam.DoFn.StateParam(windows),
        ) -> Iterator[dict[str, Any]]:
            return self._on_early(key, cell)

    return EarlyWindowOperator(spec, clock, partials_in, partials_out)


class StreamingAggregate(beam.PTransform):
    """Aggregates an unbounded (or bounded) PCollection of messages with live panes.

    Returns ``{"views": {name: PCollection[row]}, "dead_letters": PCollection[dict]}``,
    like :class:`~liveagg.transforms.bounded.BoundedAggregate`. With ``partials`` (level 1
    of a two-level run) each view's PCollection holds the
    :data:`~liveagg.transforms.envelope.Partial` panes of each Kafka partition's keys.
    """

    def __init__(
        self,
        specs: list[ViewSpec],
        clock: Callable[[], float] = time.time,
        early_panes: bool = True,
        partials: bool = False,
    ) -> None:
        super().__init__()
        self._specs = specs
        self._clock = clock
        self._early_panes = early_panes  # False for bounded input: its watermark jumps to the end
        self._partials = partials

    def expand(self, messages: beam.PCollection) -> dict[str, Any]:
        names = [view_tag(s.name) for s in self._specs]
        routed = messages | "Route" >> beam.ParDo(
            _Route(self._specs, by_source=self._partials)
        ).with_outputs(DEAD_LETTER, *names)
        views = {}
        dead = [routed[DEAD_LETTER]]
        for spec in self._specs:
            envelope.check_sharded(spec, self._partials)
            early = self._early_panes and spec.early is not None
            sharded = self._partials or spec.hot_key_fanout is not None
            operator = window_operator(spec, self._clock, early, partials_out=sharded)
            fired = routed[view_tag(spec.name)] | f"{spec.name}/Window" >> beam.ParDo(
                operator
            ).with_outputs(DEAD_LETTER, main="rows")
            dead.append(fired[DEAD_LETTER])
            if self._partials or not sharded:
                views[spec.name] = fired.rows
                continue
            # Hot-key fan-out: the sub-keys' partial panes merge per key in a second operator.
            merged = fired.rows | f"{spec.name}/FanIn" >> MergePartials(spec, self._clock, early)
            views[spec.name] = merged.rows
            dead.append(merged[DEAD_LETTER])
        dead_letters = tuple(dead) | "DeadLetters" >> beam.Flatten()
        return {"views": views, "dead_letters": dead_letters}


class MergePartials(beam.PTransform):
    """Merges :data:`~liveagg.transforms.envelope.Partial` panes into the view's rows.

    Per grouping key, each window keeps the latest pane of every shard
    and fires like the one-level operator. ``spec`` is the view whose rows are written.
    Returns ``{"rows": ..., "dead_letter": ...}``.
    """

    def __init__(
        self,
        spec: ViewSpec,
        clock: Callable[[], float] = time.time,
        early: bool = False,
    ) -> None:
        super().__init__()
        self._spec = spec
        self._clock = clock
        self._early = early

    def expand(self, partials: beam.PCollection) -> Any:
        operator = window_operator(self._spec, self._clock, self._early, partials_in=True)
        return (
            partials
            | "Key" >> beam.Map(keyed_partial)
            | "Merge" >> beam.ParDo(operator).with_outputs(DEAD_LETTER, main="rows")
        )


def keyed_partial(partial: tuple, payload: Any = None, source: Any = None) -> tuple:
    """A partial as the merge operator's ``((view, variant, bucket), [(key, ts, partial, ...)])``
    (a batch of one)."""
    view, variant, start, end, key, shard, pane, data, _ = partial
    return (
        (view, variant, bucket_of(key)),
        [(key, start, (start, end, shard, pane, data), payload, source)],
    )
