"""A view's pre-aggregated state as columns: one row per (variant, window, grouping key).

The staged aggregation of systems that count at scale: a batch of messages is aggregated
once at its *finest grain* (every grouping column, the smallest slice of time all the view's
windows are made of), and grouping sets, granularities, sliding and cumulative windows are
then *rolled up* from those pre-aggregates, not from each message: a cumulative window
``[p, p + k*step)`` is the merge of its period's step slices up to ``k``, each slice taken
once per window it falls in. The global window has no slices: its finest rows are the keys.
Partials of many batches, bundles or workers are concatenated and merged the same way, and
extracted into output values at the end.

Nothing here knows about Beam: :class:`ViewAggregator` is what the bounded path, the
streaming router and the two-level adapters call.
"""

from __future__ import annotations

import itertools
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from liveagg.engine import values as v
from liveagg.engine.groups import dense_codes, factorize, stable_order
from liveagg.engine.kernels import (
    Bag,
    Kernel,
    PyState,
    State,
    kernel,
    sharing_pairs,
    slice_column,
    slice_state,
)
from liveagg.engine.windows import GLOBAL, WindowFn, session_ids

#: ``variant`` of finest-grain rows (before the roll-up).
FINEST = -1


@dataclass
class Partial:
    """Rows of ``(variant, start, end, keys...)`` and one kernel state per aggregation.

    ``keys`` holds one column per grouping column of the view (null where a grouping set
    leaves a column out), in a scalar form of :mod:`liveagg.engine.values`.
    """

    variant: np.ndarray
    start: np.ndarray
    end: np.ndarray
    keys: list[pa.Array]
    states: list[State]

    @property
    def rows(self) -> int:
        return len(self.variant)


@dataclass
class Inputs:
    """What one view aggregates from a batch, column by column.

    ``ts`` holds the event time of each of the batch's ``rows`` used by the view; ``keys``
    one column per grouping column; ``values`` per aggregation ``(rows, column)``: the rows
    whose value is not null and their values (``None`` for ``count`` without ``col_name``).
    ``origin`` holds the position in the batch of each row's message, for the callers that
    need the message back (the streaming path's too-late dead letters).
    """

    ts: np.ndarray
    keys: list[pa.Array]
    values: list[tuple[np.ndarray, Any] | None]
    origin: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(self.ts)


def preaggregate_views(work: Sequence[tuple[ViewAggregator, Sequence[Inputs]]]) -> list[Partial]:
    """Each view's inputs since the last flush (batches of messages), pre-aggregated at once:
    a key and window once, unless numeric columns of different kinds kept batches apart.
    Views that aggregate one field of the same messages share its joined column and that
    column's codes (the rich benchmark views both count distinct users and URLs)."""
    joined: dict[tuple[int, ...], tuple[list[Any], Any]] = {}
    done = []
    with sharing_pairs():
        for aggregator, parts in work:
            partials = [aggregator.preaggregate(i) for i in concat_inputs(parts, joined)]
            if len(partials) > 1:
                partials = [aggregator.merge(concat(partials, aggregator))]
            done.append(partials[0])
    return done


def concat_inputs(
    parts: Sequence[Inputs], joined: dict[tuple[int, ...], tuple[list[Any], Any]] | None = None
) -> list[Inputs]:
    """Several batches' inputs of one view as few, to be aggregated together: those whose
    numeric columns have the same kind (int64, float64, Python numbers) are joined, as
    joining ints with doubles would turn ints beyond 2**53 inexact. ``joined`` keeps the
    columns joined so far by the parts they were joined from, for the next view."""
    by_kind: dict[tuple[str, ...], list[Inputs]] = {}
    for part in parts:
        by_kind.setdefault(tuple(map(_kind, part.values)), []).append(part)
    return [_join(group, {} if joined is None else joined) for group in by_kind.values()]


def _kind(item: tuple[np.ndarray, Any] | None) -> str:
    """A column's kind for joining: ``i``/``f`` numpy numbers, ``list``, or ``any`` (scalar
    columns, which :func:`liveagg.engine.values.concat` unifies, and absent ones)."""
    if item is None or isinstance(item[1], pa.Array):
        return "any"
    if isinstance(item[1], np.ndarray):
        return item[1].dtype.kind
    return "list"


def _join(parts: list[Inputs], joined: dict[tuple[int, ...], tuple[list[Any], Any]]) -> Inputs:
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0, *(p.rows for p in parts)])
    keys = [_concat([p.keys[i] for p in parts], joined) for i in range(len(parts[0].keys))]
    values: list[tuple[np.ndarray, Any] | None] = []
    for j in range(len(parts[0].values)):
        items = [p.values[j] for p in parts]
        if items[0] is None:
            values.append(None)
            continue
        rows = np.concatenate(
            [item[0] + offset for item, offset in zip(items, offsets[:-1], strict=True)]  # type: ignore[index]
        )
        columns = [item[1] for item in items]  # type: ignore[index]
        if isinstance(columns[0], np.ndarray):
            column: Any = np.concatenate(columns)
        elif isinstance(columns[0], list):
            column = [x for c in columns for x in c]
        else:
            column = _concat(columns, joined)
        values.append((rows, column))
    origins = [p.origin for p in parts]
    origin = None if any(o is None for o in origins) else np.concatenate(origins)  # type: ignore[arg-type]
    return Inputs(np.concatenate([p.ts for p in parts]), keys, values, origin)


def _concat(columns: list[pa.Array], joined: dict[tuple[int, ...], tuple[list[Any], Any]]) -> Any:
    """``columns`` joined, once for all the views that joined the same arrays (the entry
    holds them, so that their ids are not reused while it is kept)."""
    key = tuple(map(id, columns))
    found = joined.get(key)
    if found is not None and all(a is b for a, b in zip(found[0], columns, strict=True)):
        return found[1]
    column = v.concat(columns)
    joined[key] = (columns, column)
    return column


def keep_latest(panes: dict[Any, tuple[int, bytes]], shard: Any, pane: int, data: bytes) -> None:
    """Keep a shard's latest pane: a shard's panes accumulate, so the latest holds all it
    saw, and an older pane delivered again or late (Kafka is at least once) changes nothing.
    The merge of two-level and fan-out shards, bounded and streaming, keeps panes this way."""
    seen = panes.get(shard)
    if seen is None or seen[0] <= pane:
        panes[shard] = (pane, data)


@dataclass(frozen=True)
class Variant:
    """One output stream of a view: a granularity (its windows) crossed with a grouping set
    (the grouping columns it keeps, by position). Rows carry ``granularity`` only when
    ``window.size`` is a list and ``grouping_set`` only when the view has grouping sets."""

    index: int
    window: WindowFn
    positions: tuple[int, ...]
    granularity: str | None = None
    grouping_set: int | None = None

    def assign(self, ts: int) -> list[tuple[int, int]]:
        """The windows of an event time."""
        return self.window.assign(ts)

    @property
    def session_gap_us(self) -> int | None:
        return self.window.gap_us if self.window.merging else None

    @property
    def fixed_us(self) -> int | None:
        """The size of a fixed window, for the paths' shortcut to its one window."""
        return self.window.size_us if self.window.kind == "fixed" else None


@dataclass
class ViewAggregator:
    """Pre-aggregates, rolls up, merges and extracts one view's partials."""

    fns: Sequence[Any]
    variants: Sequence[Variant]
    key_count: int
    needs_time: Sequence[bool] = ()
    kernels: list[Kernel] = field(init=False)

    def __post_init__(self) -> None:
        self.kernels = [kernel(fn) for fn in self.fns]
        windows = {variant.window for variant in self.variants}
        self._merging = any(w.merging for w in windows)
        # A view's windows are all global or none: its finest rows are then keys alone.
        self._global = all(w.is_global for w in windows)
        grains = [w.grain_us for w in windows]
        self._grain = 0
        for g in grains:
            self._grain = g if not self._grain else _gcd(self._grain, g)
        self._all = tuple(range(self.key_count))
        # The finest pre-aggregate is already the output when there is one variant that keeps
        # every column and whose windows are the grain itself.
        only = self.variants[0] if len(self.variants) == 1 else None
        self._finest_is_final = (
            only is not None
            and only.positions == self._all
            and only.window.kind in ("fixed", "global")
        )
        # Roll-up order: a variant after every variant it can be merged from (more grouping
        # columns, or the same ones and smaller windows).
        self._rollup_order = sorted(
            self.variants, key=lambda var: (-len(var.positions), var.window.grain_us)
        )
        self._parents: dict[int, tuple[int, ...]] = {}
        for i, variant in enumerate(self._rollup_order):
            self._parents[variant.index] = tuple(
                parent.index
                for parent in self._rollup_order[:i]
                if set(variant.positions) <= set(parent.positions)
                and parent.window.within(variant.window)
            )

    # -- from a batch ----------------------------------------------------------------------

    def preaggregate(self, inputs: Inputs) -> Partial:
        """The batch's partial: aggregated at the finest grain, then rolled up to every
        variant. Sessions are cut per key within the batch and merged across batches."""
        ts = inputs.ts
        if self._merging:
            finest = self._sessions(inputs)
        elif self._global:
            groups = factorize(list(inputs.keys), inputs.rows)
            states = self._batch_states(inputs, groups.ids, groups.count)
            finest = Partial(
                np.full(groups.count, FINEST, dtype=np.int64),
                np.full(groups.count, GLOBAL[0], dtype=np.int64),
                np.full(groups.count, GLOBAL[1], dtype=np.int64),
                list(groups.keys),
                states,
            )
        else:
            grain = self._grain
            start = ts - ts % grain
            groups = factorize([start, *inputs.keys], inputs.rows)
            states = self._batch_states(inputs, groups.ids, groups.count)
            first = groups.keys[0]
            finest = Partial(
                np.full(groups.count, FINEST, dtype=np.int64),
                np.asarray(first),
                np.asarray(first) + grain,
                list(groups.keys[1:]),
                states,
            )
        if self._finest_is_final:
            finest.variant[:] = 0
            return finest
        return self.rollup(finest)

    def _batch_states(self, inputs: Inputs, ids: np.ndarray, count: int) -> list[State]:
        states = []
        sub_ids: dict[int, np.ndarray] = {}  # one id array per row set: kernels share pairs
        with sharing_pairs():
            for kern, item, with_time in zip(
                self.kernels,
                inputs.values,
                self.needs_time or [False] * len(self.kernels),
                strict=True,
            ):
                if item is None:
                    states.append(kern.batch(None, ids, count))
                    continue
                rows, column = item
                own = sub_ids.get(id(rows))
                if own is None:
                    own = sub_ids[id(rows)] = ids[rows]
                values = (inputs.ts[rows], column) if with_time else column
                states.append(kern.batch(values, own, count))
        return states

    def _sessions(self, inputs: Inputs) -> Partial:
        """Finest sessions of a batch: per full grouping key, messages closer than the gap."""
        gap = next(w.window.gap_us for w in self.variants if w.window.merging)
        keys = factorize(list(inputs.keys), inputs.rows)
        ts = inputs.ts
        ids = session_ids(keys.ids, ts, ts + gap)
        count = int(ids.max()) + 1 if len(ids) else 0
        states = self._batch_states(inputs, ids, count)
        start = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(start, ids, ts)
        end = np.full(count, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(end, ids, ts + gap)
        first = np.full(count, len(ids), dtype=np.int64)
        np.minimum.at(first, ids, np.arange(len(ids)))
        key_columns = [column.take(pa.array(first)) for column in inputs.keys]
        return Partial(np.full(count, FINEST, dtype=np.int64), start, end, key_columns, states)

    # -- roll-up and merge -----------------------------------------------------------------

    def rollup(self, finest: Partial) -> Partial:
        """Every variant's rows, each merged from the fewest rows it can be: the finest
        grain's, or those of a variant already rolled up whose grouping columns include its
        own and whose windows lie within its own (:attr:`_parents`). A cube's coarse grouping
        sets and granularities are computed from their smallest parent, as cube engines do,
        instead of each from the finest rows. Partials merge associatively (the one result
        whatever the merge tree, up to the rounding of doubles), so the rows are those the
        finest rows would give. Variants of one source share the codes of their values."""
        done: dict[int, Partial] = {}
        with sharing_pairs():
            for variant in self._rollup_order:
                source = min(
                    (done[p] for p in self._parents[variant.index]),
                    key=lambda part: part.rows,
                    default=finest,
                )
                done[variant.index] = self._rollup_one(source, variant)
        return concat([done[variant.index] for variant in self.variants], self)

    def _rollup_one(self, source: Partial, variant: Variant) -> Partial:
        """``variant``'s rows from ``source``: the finest rows, or a parent variant's."""
        keys = [source.keys[i] if i in variant.positions else None for i in self._all]
        kept = [source.keys[i] for i in variant.positions]
        window = variant.window
        if window.merging:
            key_groups = factorize(kept, source.rows)
            ids = session_ids(key_groups.ids, source.start, source.end)
            return self._reduce(source, np.arange(source.rows), ids, variant, keys, sessions=True)
        if window.kind == "fixed":
            rows = np.arange(source.rows)
            start = source.start - source.start % window.size_us
            end = start + window.size_us
            columns = [start, *kept]
        elif window.is_global:
            rows = np.arange(source.rows)
            start, end = source.start, source.end
            columns = list(kept)
        else:
            rows, start, end = window.assign_many(source.start)
            index = pa.array(rows)
            # A sliding window is told by its start; a cumulative one by its end (the windows
            # of a period share their start).
            by = end if window.kind == "cumulative" else start
            columns = [by, *[k.take(index) for k in kept]]
        groups = factorize(columns, len(rows))
        return self._reduce(source, rows, groups.ids, variant, keys, bounds=(start, end))

    def _reduce(
        self,
        source: Partial,
        rows: np.ndarray,
        ids: np.ndarray,
        variant: Variant,
        keys: list[pa.Array | None],
        sessions: bool = False,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Partial:
        """Rows ``rows`` of ``source`` merged by ``ids``; ``bounds`` gives each of them its
        window (``start``, ``end``, aligned with ``rows``), sessions take the union of theirs."""
        count = int(ids.max()) + 1 if len(ids) else 0
        identity = len(rows) == source.rows and np.array_equal(rows, np.arange(source.rows))
        states = [
            # Variants share the finest rows: row-wise states are taken (copied) for each.
            kern.merge(
                state if identity and not isinstance(state, PyState) else kern.take(state, rows),
                ids,
                count,
            )
            for kern, state in zip(self.kernels, source.states, strict=True)
        ]
        first = np.full(count, len(ids), dtype=np.int64)
        np.minimum.at(first, ids, np.arange(len(ids)))
        src = rows[first]
        if sessions:
            start = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(start, ids, source.start[rows])
            end = np.full(count, np.iinfo(np.int64).min, dtype=np.int64)
            np.maximum.at(end, ids, source.end[rows])
        elif bounds is not None:
            start, end = bounds[0][first], bounds[1][first]
        else:
            raise ValueError("windows that do not merge need their bounds")
        key_columns = [
            pa.nulls(count, v.STRING) if k is None else k.take(pa.array(src)) for k in keys
        ]
        return Partial(
            np.full(count, variant.index, dtype=np.int64), start, end, key_columns, states
        )

    def merge(self, partial: Partial) -> Partial:
        """One row per (variant, window, key): partials of many batches merged."""
        if not partial.rows:
            return partial
        if self._merging:
            key_groups = factorize([partial.variant, *partial.keys], partial.rows)
            ids = session_ids(key_groups.ids, partial.start, partial.end)
            count = int(ids.max()) + 1
            start = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(start, ids, partial.start)
            end = np.full(count, np.iinfo(np.int64).min, dtype=np.int64)
            np.maximum.at(end, ids, partial.end)
        else:
            groups = factorize(
                [partial.variant, partial.start, partial.end, *partial.keys], partial.rows
            )
            ids, count = groups.ids, groups.count
        first = np.full(count, len(ids), dtype=np.int64)
        np.minimum.at(first, ids, np.arange(len(ids)))
        if not self._merging:
            start, end = partial.start[first], partial.end[first]
        states = [
            kern.merge(state, ids, count)
            for kern, state in zip(self.kernels, partial.states, strict=True)
        ]
        index = pa.array(first)
        return Partial(
            partial.variant[first], start, end, [k.take(index) for k in partial.keys], states
        )

    def extract(self, partial: Partial) -> list[list[Any]]:
        """Each aggregation's outputs, one list per aggregation, a value per row."""
        return [
            kern.extract(state) for kern, state in zip(self.kernels, partial.states, strict=True)
        ]

    def accumulators(self, partial: Partial) -> list[list[Any]]:
        """Each row's CombineFn accumulators (one per aggregation), for row-wise consumers:
        the streaming operator's state and level-1 envelopes."""
        columns = [
            kern.accumulators(state)
            for kern, state in zip(self.kernels, partial.states, strict=True)
        ]
        return [list(row) for row in zip(*columns, strict=True)] if columns else []

    # -- moving partials ---------------------------------------------------------------------

    def dumps(self, partial: Partial) -> bytes:
        """A partial as bytes for a shuffle between workers of one pipeline (pickle, with
        row-wise states as their CombineFns' accumulator bytes: sketches do not pickle, and
        bags with how many values each row holds rather than the row of each value)."""
        states = [
            _packed(kern, state) for kern, state in zip(self.kernels, partial.states, strict=True)
        ]
        return pickle.dumps(
            Partial(partial.variant, partial.start, partial.end, partial.keys, states),
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    def loads(self, data: bytes) -> Partial:
        partial: Partial = pickle.loads(data)
        partial.states = [
            _unpacked(kern, state) for kern, state in zip(self.kernels, partial.states, strict=True)
        ]
        return partial

    def take(self, partial: Partial, index: np.ndarray) -> Partial:
        pindex = pa.array(index, pa.int64())
        return Partial(
            partial.variant[index],
            partial.start[index],
            partial.end[index],
            [k.take(pindex) for k in partial.keys],
            [
                kern.take(state, index)
                for kern, state in zip(self.kernels, partial.states, strict=True)
            ],
        )

    def shard(self, partial: Partial, shards: int) -> list[tuple[int, Partial]]:
        """The partial split by a stable hash of (variant, key) (and the window start, unless
        sessions, whose windows of one key must meet): each key's rows on one shard."""
        which = shard_of(partial, shards, by_window=not self._merging)
        order = stable_order(which, shards)
        # One gather puts each shard's rows together; each shard is then a slice.
        grouped = self.take(partial, order)
        bags = [s.bounds() if isinstance(s, Bag) else None for s in grouped.states]
        limits = np.searchsorted(which[order], np.arange(shards + 1)).tolist()
        out = []
        for shard, (start, end) in enumerate(itertools.pairwise(limits)):
            if start == end:
                continue
            part = Partial(
                grouped.variant[start:end],
                grouped.start[start:end],
                grouped.end[start:end],
                [slice_column(k, start, end) for k in grouped.keys],
                [
                    slice_state(state, start, end, bounds)
                    for state, bounds in zip(grouped.states, bags, strict=True)
                ],
            )
            out.append((shard, part))
        return out


@dataclass
class _Encoded:
    """A :class:`PyState` on the wire: each accumulator's bytes."""

    data: list[bytes]


@dataclass
class _PackedBag:
    """A :class:`Bag` on the wire: ``lengths[row]`` values per row, in order of row (an
    int64 per row instead of one per value: a third of a rich view's shuffle)."""

    rows: int
    lengths: np.ndarray
    values: pa.Array | np.ndarray
    counts: np.ndarray | None
    sketches: dict[int, bytes]


def _packed(kern: Kernel, state: State) -> Any:
    if isinstance(state, PyState):
        return _Encoded([kern.fn.encode_accumulator(a) for a in state.accumulators])
    if isinstance(state, Bag):
        bag = state.sorted()  # itself: bags are kept in order of row
        return _PackedBag(bag.rows, np.diff(bag.bounds()), bag.values, bag.counts, bag.sketches)
    return state


def _unpacked(kern: Kernel, state: Any) -> State:
    if isinstance(state, _Encoded):
        return PyState([kern.fn.decode_accumulator(a) for a in state.data])
    if isinstance(state, _PackedBag):
        owner = np.repeat(np.arange(state.rows, dtype=np.int64), state.lengths)
        return Bag(state.rows, owner, state.values, state.counts, state.sketches)
    return state


def shard_of(partial: Partial, shards: int, by_window: bool) -> np.ndarray:
    """A shard per row, the same on every worker: the CRC-32 of each key value's canonical
    text (computed once per distinct value), mixed with the variant, the window start and
    the other key columns by SplitMix64's finalizer, all rows at once."""
    mixed = _mix(partial.variant.astype(np.uint64))
    if by_window:
        mixed = _mix(mixed ^ partial.start.astype(np.uint64))
    for column in partial.keys:
        codes, values = dense_codes(column)
        texts = v.to_text(pa.array(values)).to_pylist()
        crc = [0 if t is None else zlib.crc32(t.encode()) for t in texts]
        mixed = _mix(mixed ^ np.array(crc, dtype=np.uint64)[codes])
    return (mixed % np.uint64(shards)).astype(np.int64)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: every input bit reaches every output bit (uint64, wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def concat(partials: Sequence[Partial], aggregator: ViewAggregator) -> Partial:
    """Partials as one (rows of all of them, not merged)."""
    partials = [p for p in partials if p.rows] or list(partials[:1])
    if len(partials) == 1:
        return partials[0]
    key_count = len(partials[0].keys)
    return Partial(
        np.concatenate([p.variant for p in partials]),
        np.concatenate([p.start for p in partials]),
        np.concatenate([p.end for p in partials]),
        [v.concat([p.keys[i] for p in partials]) for i in range(key_count)],
        [kern.concat([p.states[i] for p in partials]) for i, kern in enumerate(aggregator.kernels)],
    )


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a
