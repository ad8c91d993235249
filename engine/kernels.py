"""Each built-in aggregation computed over columns, and custom ones row by row.

A kernel is the vectorized form of one aggregation's CombineFn (``fn``). Its *state* for a
set of groups is a tuple of columns with one entry per group (or a :class:`Bag` of values
per group), and it always turns losslessly into the CombineFn's own accumulators
(:meth:`Kernel.accumulators`): the CombineFn stays the one definition of what an aggregation
means, the kernel computes the same thing without a Python call per value. The shared
harness (tests/combiners) checks every kernel against its CombineFn.

Three operations, each over all groups at once:

* ``batch(values, ids, count)``: the state of ``count`` groups from the (non-null, checked)
  values of their rows, ``ids[i]`` being the group of value ``i``;
* ``merge(state, ids, count)``: states of many rows (partials) reduced to ``count`` groups;
* ``extract(state)``: each group's output, as the CombineFn's ``extract_output`` gives it.

A state whose inputs a kernel cannot take exactly (integers beyond 64 bits, say) is a
:class:`PyState`: a list of CombineFn accumulators, merged by the CombineFn. States of both
forms merge; the vectorized ones are turned into accumulators first.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import (
    frequent_strings_sketch,
    hll_sketch,
    hll_union,
    kll_doubles_sketch,
    tgt_hll_type,
)

from liveagg.combiners import LiveaggCombineFn
from liveagg.combiners import _common as c
from liveagg.combiners.base import extractor
from liveagg.combiners.basic import CountFn, MaxFn, MeanFn, MinFn, SumFn
from liveagg.combiners.exact import CollectSetFn, CountDistinctExactFn, HistogramFn
from liveagg.combiners.hll import CountDistinctFn, HllSketchFn, hash_form
from liveagg.combiners.kll import ApproxQuantilesFn
from liveagg.combiners.moments import StddevFn, VarianceFn
from liveagg.combiners.ordered import FirstFn, LastFn
from liveagg.combiners.topk import TopKFn
from liveagg.engine import values as v
from liveagg.engine.groups import dense_codes, distinct, order_within, stable_order

Column = np.ndarray | pa.Array | list
_INT64_MAX = 2**63 - 1


@dataclass
class PyState:
    """A state as the CombineFn's own accumulators, one per group."""

    accumulators: list[Any]

    def __len__(self) -> int:
        return len(self.accumulators)


@dataclass
class Bag:
    """Values per group: ``owner[j]`` is the group (state row) of ``values[j]``, with an
    optional ``counts[j]``; ``rows`` is the number of state rows. Distinct counts, sets,
    sketches and ``top_k`` keep their values this way until a group has too many, then a
    serialized sketch in ``sketches[row]`` (rows still held as values have none)."""

    rows: int
    owner: np.ndarray
    values: pa.Array | np.ndarray
    counts: np.ndarray | None = None
    sketches: dict[int, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.rows

    def bounds(self) -> np.ndarray:
        """Where each row's values start once sorted by owner (see :meth:`sorted`), and the
        end: counted in one pass, where a binary search per row costs ``log`` values each."""
        bounds = np.zeros(self.rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.owner, minlength=self.rows), out=bounds[1:])
        return bounds

    def groups(self) -> list[tuple[int, int]]:
        """``(start, end)`` of each row's values once sorted by owner (see :meth:`sorted`)."""
        return list(itertools.pairwise(self.bounds().tolist()))

    def sorted(self) -> Bag:
        """The bag with its values in order of owner (itself when they are already)."""
        if len(self.owner) < 2 or bool((self.owner[1:] >= self.owner[:-1]).all()):
            return self
        order = stable_order(self.owner, self.rows)
        return Bag(
            self.rows,
            self.owner[order],
            _take(self.values, order),
            None if self.counts is None else self.counts[order],
            self.sketches,
        )


State = tuple[Column, ...] | Bag | PyState


def _take(column: Any, index: np.ndarray) -> Any:
    if isinstance(column, np.ndarray):
        return column[index]
    if isinstance(column, list):
        return [column[i] for i in index.tolist()]
    return column.take(pa.array(index, pa.int64()))


def _concat(columns: Sequence[Any]) -> Any:
    first = columns[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(columns)
    if isinstance(first, list):
        return [x for column in columns for x in column]
    return v.concat(columns)


def _add_at(count: int, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(count, dtype=values.dtype)
    np.add.at(out, ids, values)
    return out


def _counts(ids: np.ndarray, count: int) -> np.ndarray:
    return np.bincount(ids, minlength=count).astype(np.int64)


def _weighted(ids: np.ndarray, weights: np.ndarray, count: int) -> np.ndarray:
    """Sums of ``weights`` per id, as doubles: ``np.bincount`` gives int64 zeros when there
    are no ids at all, weights or not, and an accumulator's float parts must be floats."""
    return np.bincount(ids, weights=weights, minlength=count).astype(np.float64, copy=False)


class Kernel:
    """Vectorized form of one aggregation; see the module doc."""

    def __init__(self, fn: LiveaggCombineFn) -> None:
        self.fn = fn

    # -- the vectorized form (overridden) ----------------------------------------------------

    def batch(self, values: Any, ids: np.ndarray, count: int) -> State:
        return self.py_batch(values, ids, count)

    def merge(self, state: State, ids: np.ndarray, count: int) -> State:
        return self.py_merge(self.accumulators(state), ids, count)

    def extract(self, state: State) -> list[Any]:
        return list(map(extractor(self.fn), self.accumulators(state)))

    def accumulators(self, state: State) -> list[Any]:
        if isinstance(state, PyState):
            return state.accumulators
        raise NotImplementedError(type(self).__name__)

    # -- the row-wise form, shared -----------------------------------------------------------

    def py_batch(self, values: Any, ids: np.ndarray, count: int) -> PyState:
        """One accumulator per group, fed the group's values by the CombineFn."""
        fn = self.fn
        if fn.needs_event_time:  # ``(times, column)``: the CombineFn takes (time, value) pairs
            times, column = values
            items = list(zip(times.tolist(), _python(column), strict=True))
        elif values is None:  # no column: ``counts_rows``, one 1 per message
            items = [1] * len(ids)
        else:
            items = values if isinstance(values, list) else _python(values)
        per_group: list[list[Any]] = [[] for _ in range(count)]
        for group, item in zip(ids.tolist(), items, strict=True):
            per_group[group].append(item)
        return PyState([fn.add_inputs(fn.create_accumulator(), vals) for vals in per_group])

    def py_merge(self, accumulators: list[Any], ids: np.ndarray, count: int) -> PyState:
        per_group: list[list[Any]] = [[] for _ in range(count)]
        for group, acc in zip(ids.tolist(), accumulators, strict=True):
            per_group[group].append(acc)
        merge, create = self.fn.merge_accumulators, self.fn.create_accumulator
        return PyState([merge(accs) if accs else create() for accs in per_group])

    def concat(self, states: Sequence[State]) -> State:
        """States of several partials as one state over all their rows."""
        if any(isinstance(s, PyState) for s in states) or type(self).merge is Kernel.merge:
            return PyState([acc for s in states for acc in self.accumulators(s)])
        if isinstance(states[0], Bag):
            return _concat_bags(states)  # type: ignore[arg-type]
        return tuple(_concat([s[i] for s in states]) for i in range(len(states[0])))  # type: ignore[index]

    def take(self, state: State, index: np.ndarray) -> State:
        """The state of the rows ``index`` (a shard, or a sliding window's slices, which
        repeat). Accumulators are copied: a CombineFn merges into its first accumulator, and
        one taken twice must not carry one window's values into another."""
        if isinstance(state, PyState):
            encode, decode = self.fn.encode_accumulator, self.fn.decode_accumulator
            return PyState([decode(encode(state.accumulators[i])) for i in index.tolist()])
        if isinstance(state, Bag):
            return _take_bag(state, index)
        return tuple(_take(column, index) for column in state)


def _python(values: Any) -> list[Any]:
    if isinstance(values, np.ndarray):
        return values.tolist()
    if isinstance(values, pa.Array):
        return v.python_values(values)
    return list(values)


def _concat_bags(bags: Sequence[Bag]) -> Bag:
    offset, owners = 0, []
    for bag in bags:
        owners.append(bag.owner + offset)
        offset += bag.rows
    counts = None if bags[0].counts is None else np.concatenate([b.counts for b in bags])
    sketches: dict[int, bytes] = {}
    base = 0
    for bag in bags:
        sketches.update((base + row, data) for row, data in bag.sketches.items())
        base += bag.rows
    return Bag(offset, np.concatenate(owners), _concat([b.values for b in bags]), counts, sketches)


def _subset(bag: Bag, mask: np.ndarray) -> Bag:
    """The values of a bag where ``mask`` holds, in their order (its rows stay)."""
    index = np.flatnonzero(mask)
    counts = None if bag.counts is None else bag.counts[index]
    return Bag(bag.rows, bag.owner[index], _take_values(bag.values, index), counts)


def slice_state(state: State, start: int, end: int, bounds: np.ndarray | None) -> State:
    """Rows ``[start, end)`` of a state, copied where a pickle would write more than them
    (``bounds``: a :class:`Bag`'s, from :meth:`Bag.bounds`, its values in order of row)."""
    if isinstance(state, PyState):
        return PyState(state.accumulators[start:end])
    if isinstance(state, Bag):
        bounds = state.bounds() if bounds is None else bounds
        low, high = int(bounds[start]), int(bounds[end])
        return Bag(
            end - start,
            state.owner[low:high] - start,
            slice_column(state.values, low, high),
            None if state.counts is None else state.counts[low:high],
            {row - start: s for row, s in state.sketches.items() if start <= row < end},
        )
    return tuple(slice_column(column, start, end) for column in state)


def slice_column(column: Any, start: int, end: int) -> Any:
    """Items ``[start, end)`` of a column, to be pickled.

    An Arrow slice is copied: it pickles its parent's whole buffers (pyarrow/array.pxi,
    ``Array.__reduce__``: ``_reduce_array_data(self.sp_array.get().data().get())``, which
    does ``buffers.append(pyarrow_wrap_buffer(buf) ...)`` for each buffer; 10 values of a
    100,000-string array pickled to 1.3 MB). numpy pickles a view's own values only.
    """
    if isinstance(column, pa.Array):
        return pa.concat_arrays([column.slice(start, end - start)])
    return column[start:end]


def _take_bag(bag: Bag, index: np.ndarray) -> Bag:
    """The bag of rows ``index`` (repeats allowed: a sliding window's slices are taken once
    per window they fall in)."""
    bag = bag.sorted()
    bounds = bag.bounds()
    starts, lengths = bounds[:-1][index], np.diff(bounds)[index]
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(index), dtype=np.int64), lengths)
    positions = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    gather = np.repeat(starts, lengths) + positions
    sketches: dict[int, bytes] = {}
    if bag.sketches:
        for new, old in enumerate(index.tolist()):
            if old in bag.sketches:
                sketches[new] = bag.sketches[old]
    counts = None if bag.counts is None else bag.counts[gather]
    return Bag(len(index), owner, _take_values(bag.values, gather), counts, sketches)


# ---------------------------------------------------------------------------------------------
# count, sum, mean, min, max
# ---------------------------------------------------------------------------------------------


class CountKernel(Kernel):
    """State ``(n,)``; ``values`` is ``None`` for ``count`` without ``col_name``."""

    def batch(self, values: Any, ids: np.ndarray, count: int) -> State:
        return (_counts(ids, count),)

    def merge(self, state: State, ids: np.ndarray, count: int) -> State:
        if isinstance(state, PyState):
            return super().merge(state, ids, count)
        return (_add_at(count, ids, state[0]),)  # type: ignore[index]

    def extract(self, state: State) -> list[Any]:
        return self.accumulators(state)

    def accumulators(self, state: State) -> list[Any]:
        if isinstance(state, PyState):
            return state.accumulators
        return state[0].tolist()  # type: ignore[index, union-attr]


def _safe_int_sum(values: np.ndarray, ids: np.ndarray, count: int) -> np.ndarray | None:
    """Exact int64 sums per group, or None when a sum could leave the 64-bit range."""
    if not len(values):
        return np.zeros(count, dtype=np.int64)
    bound = int(np.abs(values).max()) if values.dtype != np.uint64 else int(values.max())
    if bound * len(values) > _INT64_MAX:
        return None
    return _add_at(count, ids, values.astype(np.int64, copy=False))


class SumKernel(Kernel):
    # extract is vectorized below for the common states; the CombineFn decides the rest.
    """``sum`` and ``mean``: state ``(int_sum, float_sum, compensation, n_int, n_float)``, the
    CombineFn's accumulator as columns. Integral values (canonical numbers) are summed exactly
    as integers; the others as doubles."""

    def batch(self, values: Any, ids: np.ndarray, count: int) -> State:
        if isinstance(values, list):
            return self.py_batch(values, ids, count)
        if values.dtype.kind in "iu":
            ints, int_ids = values, ids
            floats, float_ids = values[:0].astype(np.float64), ids[:0]
        else:
            integral = np.floor(values) == values
            if integral.any() and np.abs(values[integral]).max() >= 2.0**63:
                return self.py_batch(values.tolist(), ids, count)  # beyond int64: exact ints
            ints, int_ids = values[integral].astype(np.int64), ids[integral]
            floats, float_ids = values[~integral], ids[~integral]
        isum = _safe_int_sum(ints, int_ids, count)
        fsum = _weighted(float_ids, floats, count)
        if isum is None or not np.isfinite(fsum).all():  # the CombineFn spills exactly
            return self.py_batch(values.tolist(), ids, count)
        return (
            isum,
            fsum,
            np.zeros(count),
            _counts(int_ids, count),
            _counts(float_ids, count),
        )

    def merge(self, state: State, ids: np.ndarray, count: int) -> State:
        if isinstance(state, PyState) or state[0].dtype == object:  # type: ignore[index, union-attr]
            return super().merge(state, ids, count)
        isum, fsum, comp, nint, nfloat = state  # type: ignore[misc]
        merged = _safe_int_sum(isum, ids, count)
        floats = _weighted(ids, fsum, count)
        if merged is None or not np.isfinite(floats).all():
            return super().merge(state, ids, count)
        return (
            merged,
            floats,
            _weighted(ids, comp, count),
            _add_at(count, ids, nint),
            _add_at(count, ids, nfloat),
        )

    def accumulators(self, state: State) -> list[Any]:
        if isinstance(state, PyState):
            return state.accumulators
        return [list(row) for row in zip(*(col.tolist() for col in state), strict=True)]  # type: ignore[union-attr]

    def extract(self, state: State) -> list[Any]:
        """The CombineFn's ``extract_output`` over all groups; the same arithmetic (one
        correctly rounded operation per step) wherever the integer part is a double exactly."""
        if isinstance(state, PyState) or state[0].dtype == object:  # type: ignore[index, union-attr]
            return super().extract(state)
        isum, fsum, comp, nint, nfloat = state  # type: ignore[misc]
        floats = fsum + comp
        if np.abs(isum).max(initial=0) >= v.EXACT_FLOAT_INT or not np.isfinite(floats).all():
            return super().extract(state)
        n = nint + nfloat
        if isinstance(self.fn, MeanFn):
            with np.errstate(invalid="ignore", divide="ignore"):
                result = np.where(nfloat > 0, (isum + floats) / n, isum / n).tolist()
        else:
            result = np.where(nfloat > 0, isum + floats, 0.0).tolist()
            ints = isum.tolist()
            result = [
                r if nf else i for r, i, nf in zip(result, ints, nfloat.tolist(), strict=True)
            ]
        if (n == 0).any():
            result = [
                None if count == 0 else r for r, count in zip(result, n.tolist(), strict=True)
            ]
        return result


class ExtremeKernel(Kernel):
    """``min`` and ``max``: state ``(int_extreme, has_int, float_extreme)`` (NaN: none)."""

    def __init__(self, fn: LiveaggCombineFn) -> None:
        super().__init__(fn)
        self._is_min = isinstance(fn, MinFn)
        self._at = np.minimum.at if self._is_min else np.maximum.at
        self._start_int = np.iinfo(np.int64).max if self._is_min else np.iinfo(np.int64).min
        self._start_float = math.inf if self._is_min else -math.inf

    def _reduce(
        self,
        ints: np.ndarray,
        int_ids: np.ndarray,
        floats: np.ndarray,
        float_ids: np.ndarray,
        count: int,
    ) -> State:
        best_int = np.full(count, self._start_int, dtype=np.int64)
        self._at(best_int, int_ids, ints)
        has_int = np.zeros(count, dtype=bool)
        has_int[int_ids] = True
        best_float = np.full(count, self._start_float)
        self._at(best_float, float_ids, floats)
        best_float[np.isinf(best_float)] = np.nan
        return (best_int, has_int, best_float)

    def batch(self, values: Any, ids: np.ndarray, count: int) -> State:
        if isinstance(values, list):
            return self.py_batch(values, ids, count)
        if values.dtype.kind in "iu":
            return self._reduce(values, ids, values[:0].astype(float), ids[:0], count)
        return self._reduce(values[:0].astype(np.int64), ids[:0], values, ids, count)

    def merge(self, state: State, ids: np.ndarray, count: int) -> State:
        if isinstance(state, PyState):
            return super().merge(state, ids, count)
        best_int, has_int, best_float = state  # type: ignore[misc]
        present = ~np.isnan(best_float)
        return self._reduce(
            best_int[has_int], ids[has_int], best_float[present], ids[present], count
        )

    def accumulators(self, state: State) -> list[Any]:
        """Each row's extreme, as the CombineFn gives it: the int or the double it saw, the
        better of both, or None. Read from the arrays at once; ``normalize_number`` makes an
        integral double in the 64-bit range an int."""
        if isinstance(state, PyState):
            return state.accumulators
        best_int, has_int, best_float = state  # type: ignore[misc]
        has_float = ~np.isnan(best_float)
        out = best_float.tolist()
        integral = has_float & (np.floor(best_float) == best_float)
        integral &= (best_float >= -(2.0**63)) & (best_float < 2.0**64)
        for row in np.flatnonzero(integral).tolist():
            out[row] = int(out[row])
        ints = best_int.tolist()
        pick = min if self._is_min else max
        for row in np.flatnonzero(has_int).tolist():
            out[row] = pick(ints[row], out[row]) if has_float[row] else ints[row]
        for row in np.flatnonzero(~(has_int | has_float)).tolist():
            out[row] = None
        return out

    def extract(self, state: State) -> list[Any]:
        return self.accumulators(state)


# ---------------------------------------------------------------------------------------------
# variance and stddev
# ---------------------------------------------------------------------------------------------


class MomentsKernel(Kernel):
    """State ``(n, mean, m2)``, merged with Chan's formula as the CombineFn does."""

    def batch(self, values: Any, ids: np.ndarray, count: int) -> State:
        x = np.asarray(values, dtype=np.float64)
        n = _counts(ids, count)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = _weighted(ids, x, count) / n
        mean[n == 0] = 0.0
        dev = x - mean[ids]
        with np.errstate(over="ignore", invalid="ignore"):
            m2 = _weighted(ids, dev * dev, count)
        if not (np.isfinite(mean).all() and np.isfinite(m2).all()):
            return self.py_batch(_python(values), ids, count)
        return (n, mean, m2)

    def merge(self, state: State, ids: np.ndarray, count: int) -> State:
        if isinstance(state, PyState):
            return super().merge(state, ids, count)
        n, mean, m2 = state  # type: ignore[misc]
        total = _add_at(count, ids, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            new_mean = _weighted(ids, n * mean, count) / total
        new_mean[total == 0] = 0.0
        dev = mean - new_mean[ids]
        with np.errstate(over="ignore", invalid="ignore"):
            new_m2 = _weighted(ids, m2 + n * dev * dev, count)
        if not (np.isfinite(new_mean).all() and np.isfinite(new_m2).all()):
            return super().merge(state, ids, count)
        return (total, new_mean, new_m2)

    def extract(self, state: State) -> list[Any]:
        """``max(m2, 0) / (n - ddof)`` (its root for ``stddev``) for all rows at once, the
        CombineFn's arithmetic in IEEE doubles; ``None`` while ``n <= ddof``. A vectorized
        state's sums are finite: the others are held as the CombineFn's accumulators."""
        ddof = self.fn.ddof  # type: ignore[attr-defined]
        if isinstance(state, PyState) or ddof >= v.EXACT_FLOAT_INT:
            return super().extract(state)
        n, _, m2 = state  # type: ignore[misc]
        variance = np.where(m2 < 0, 0.0, m2) / np.maximum(n - ddof, 1).astype(np.float64)
        out = (np.sqrt(variance) if isinstance(self.fn, StddevFn) else variance).tolist()
        for row in np.flatnonzero(n <= ddof).tolist():
            out[row] = None
        return out

    def accumulators(self, state: State) -> list[Any]:
        if isinstance(state, PyState):
            return state.accumulators
        return [list(row) for row in zip(*(col.tolist() for col in state), strict=True)]  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# first and last
# ---------------------------------------------------------------------------------------------


class OrderedKernel(Kernel):
    """State ``(time, value)``: the winning event time and value per group (time
    ``_NONE`` for none). Values arrive as ``(times, scalar column)``."""

    _NONE = np.iinfo(np.int64).max

    def __init__(self, fn: LiveaggCombineFn) -> None:
        super().__init__(fn)
        self._first = isinstance(fn, FirstFn)

    def _best(self, times: np.ndarray, values: pa.Array, ids: np.ndarray, count: int) -> State:
        if self._first:
            best = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(best, ids, times)
        else:
            best = np.full(count, np.iinfo(np.int64).min, dtype=np.int64)
            np.maximum.at(best, ids, times)
        winners = np.flatnonzero(times == best[ids])
        winner_ids = ids[winners]
        ties = np.bincount(winner_ids, minlength=count)
        chosen = np.full(count, -1, dtype=np.int64)
        chosen[winner_ids] = winners  # any of the tied rows; ties resolved below
        tied_groups = np.flatnonzero(ties > 1)
        if len(tied_groups):
            pick = min if self._first else max
            tied = set(tied_groups.tolist())
            candidates: dict[int, list[tuple[Any, int]]] = {}
            py = v.python_values(values.take(pa.array(winners)))
            for row, group, value in zip(winners.tolist(), winner_ids.tolist(), py, strict=True):
                if group in tied:
                    candidates.setdefault(group, []).append((c.order_key(value), row))
            for group, items in candidates.items():
                chosen[group] = pick(items)[1]
        present = chosen >= 0
        index = np.where(present, chosen, 0)
        if not len(values):  # groups without values
            return (np.full(count, self._NONE, dtype=np.int64), pa.nulls(count, values.type))
        value_column = values.take(pa.array(index))
        if not present.all():
            value_column = pc.if_else(pa.array(present), value_column, None)
        best = np.where(present, best, self._NONE)
        return (best, value_column)

    def batch(self, values: Any, ids: np.ndarray, count: int) -> State:
        times, column = values
        return self._best(times, column, ids, count)

    def merge(self, state: State, ids: np.ndarray, count: int) -> State:
        if isinstance(state, PyState):
            return super().merge(state, ids, count)
        times, column = state  # type: ignore[misc]
        present = times != self._NONE
        index = np.flatnonzero(present)
        return self._best(times[index], column.take(pa.array(index)), ids[index], count)

    def accumulators(self, state: State) -> list[Any]:
        if isinstance(state, PyState):
            return state.accumulators
        times, column = state  # type: ignore[misc]
        return [
            None if t == self._NONE else [t, value]
            for t, value in zip(times.tolist(), v.python_values(column), strict=True)
        ]

    def extract(self, state: State) -> list[Any]:
        if isinstance(state, PyState):
            return super().extract(state)
        return v.python_values(state[1])  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# histogram
# ---------------------------------------------------------------------------------------------


class HistogramKernel(Kernel):
    """State ``(counts,)``, a ``groups x buckets`` int64 matrix."""

    def __init__(self, fn: LiveaggCombineFn) -> None:
        super().__init__(fn)
        self._width = len(fn.bounds) + 1  # type: ignore[attr-defined]

    def batch(self, values: Any, ids: np.ndarray, count: int) -> State:
        if isinstance(values, list):
            return self.py_batch(values, ids, count)
        buckets = self.fn.buckets(np.asarray(values))  # type: ignore[attr-defined]
        flat = np.bincount(ids * self._width + buckets, minlength=count * self._width)
        return (flat.reshape(count, self._width).astype(np.int64),)

    def merge(self, state: State, ids: np.ndarray, count: int) -> State:
        if isinstance(state, PyState):
            return super().merge(state, ids, count)
        out = np.zeros((count, self._width), dtype=np.int64)
        np.add.at(out, ids, state[0])  # type: ignore[index]
        return (out,)

    def accumulators(self, state: State) -> list[Any]:
        if isinstance(state, PyState):
            return state.accumulators
        return state[0].tolist()  # type: ignore[index, union-attr]

    def extract(self, state: State) -> list[Any]:
        return self.accumulators(state)


# ---------------------------------------------------------------------------------------------
# Values per group: exact distinct counts, sets, HyperLogLog, KLL, top_k
# ---------------------------------------------------------------------------------------------


def _distinct_pairs(
    values: pa.Array,
    ids: np.ndarray,
    groups: int,
    counts: np.ndarray | None = None,
    share: bool = True,
) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """The distinct ``(group, value)`` pairs (``ids`` below ``groups``), in order of group,
    and how often each occurs (summing ``counts``). Kept in order of group, a :class:`Bag`
    needs no sort later."""
    sharing = share and _SHARED.depth > 0
    if sharing and counts is None:
        memo = _SHARED.pairs.get((id(values), id(ids)))
        if memo is not None and memo[0] is values and memo[1] is ids:
            return memo[2]
    codes, size = _value_codes(values, sharing)
    # A pair is one int64: ids and codes are below the number of rows (no overflow below
    # 3e9 rows).
    first, totals = distinct(ids * size + codes, groups * size, counts)
    # Within a group, values in order of first appearance, as they were fed before: the
    # pairs' first rows in order of row, then stably in order of group.
    rows = np.zeros(len(ids), dtype=bool)
    rows[first] = True
    firsts = np.flatnonzero(rows)
    at_row = np.empty(len(ids), dtype=totals.dtype)
    at_row[first] = totals
    owner = ids[firsts]
    order = stable_order(owner, groups)
    firsts = firsts[order]
    result = owner[order], _take_values(values, firsts), at_row[firsts]
    if sharing and counts is None:
        _SHARED.pairs[(id(values), id(ids))] = (values, ids, result)
    return result


def _take_values(values: Any, index: np.ndarray) -> Any:
    """A bag's values at ``index``; within :func:`sharing_pairs` they keep the codes of
    the values they are taken from, so that a variant rolled up from this one's bag does
    not hash them again."""
    taken = _take(values, index)
    memo = _SHARED.codes.get(id(values)) if _SHARED.depth else None
    if memo is not None and memo[0] is values:
        _SHARED.codes[id(taken)] = (taken, memo[1][index], memo[2])
    return taken


def _value_codes(values: Any, sharing: bool) -> tuple[np.ndarray, int]:
    """Dense codes of ``values`` and their number; within :func:`sharing_pairs`, once per
    column (a roll-up regroups one column of values once per variant)."""
    if sharing:
        memo = _SHARED.codes.get(id(values))
        if memo is not None and memo[0] is values:
            return memo[1], memo[2]
    codes, dictionary = dense_codes(values)
    size = max(len(dictionary), 1)
    if sharing:
        _SHARED.codes[id(values)] = (values, codes, size)
    return codes, size


class _Shared(threading.local):
    """Distinct pairs and value codes of the batch being aggregated, shared by the kernels over
    one column (an exact and an estimated distinct count, say), by the variants of a roll-up
    and by the views of one flush; :func:`sharing_pairs` scopes them, per thread. Each entry
    holds the arrays it was computed from, so that their ids are not reused while it is kept.
    """

    depth = 0

    def __init__(self) -> None:
        self.pairs: dict[tuple[int, int], tuple[Any, np.ndarray, Any]] = {}
        self.codes: dict[int, tuple[Any, np.ndarray, int]] = {}


_SHARED = _Shared()


@contextmanager
def sharing_pairs() -> Iterator[None]:
    """Within this block and the blocks nested in it, kernels given the same value (and id)
    arrays share their codes (and pairs)."""
    shared = _SHARED
    shared.depth += 1
    try:
        yield
    finally:
        shared.depth -= 1
        if not shared.depth:
            shared.pairs.clear()
            shared.codes.clear()


class _BagKernel(Kernel):
    """Shared body of the kernels whose state is a :class:`Bag` of values per group."""

    #: Keep occurrence counts (``top_k``) rather than just distinct values.
    counted = False

    def limit(self) -> int:
        """Distinct values a group may hold as values before it becomes a sketch."""
        return 1 << 62

    def batch(self, values: Any, ids: np.ndarray, count: int) -> State:
        share = not isinstance(values, list)
        if not share:
            values = v.scalars_from_python(values)
        owner, held, counts = self.pairs(values, ids, count, None, share)
        return self._settle(Bag(count, owner, held, counts))

    def merge(self, state: State, ids: np.ndarray, count: int) -> State:
        if isinstance(state, PyState):
            return super().merge(state, ids, count)
        bag: Bag = state  # type: ignore[assignment]
        owner, held, counts = self.pairs(bag.values, ids[bag.owner], count, bag.counts, True)
        grouped: dict[int, list[bytes]] = {}
        for row, sketch in bag.sketches.items():
            grouped.setdefault(int(ids[row]), []).append(sketch)
        sketches = {row: self.merge_sketches(found) for row, found in grouped.items()}
        return self._settle(Bag(count, owner, held, counts, sketches))

    def pairs(
        self, values: Any, ids: np.ndarray, count: int, counts: np.ndarray | None, share: bool
    ) -> tuple[np.ndarray, Any, np.ndarray | None]:
        """A bag's ``(owner, values, counts)`` for ``values`` of groups ``ids``: each group's
        distinct values (with their occurrences, for a counted kernel)."""
        owner, held, totals = _distinct_pairs(values, ids, count, counts, share)
        return owner, held, totals if self.counted else None

    def oversized(self, bag: Bag) -> np.ndarray:
        """The rows to hold as a sketch: past :meth:`limit` values, or holding one already."""
        big = np.bincount(bag.owner, minlength=bag.rows) > self.limit()
        big[list(bag.sketches)] = True
        return big

    def _settle(self, bag: Bag) -> Bag:
        """Fold the values of the :meth:`oversized` rows into their sketches."""
        big = self.oversized(bag)
        if not big.any():
            return bag
        bag = bag.sorted()
        sketches = dict(bag.sketches)
        folded = big[bag.owner]
        # Only the values being folded are made Python objects, not the whole bag's.
        fold = bag if folded.all() else _subset(bag, folded)
        bounds = fold.bounds().tolist()  # only the big rows' spans are read
        items = self.items(fold.values)
        for row in np.flatnonzero(big).tolist():
            start, end = bounds[row], bounds[row + 1]
            vals = items[start:end]
            weights = None if fold.counts is None else fold.counts[start:end].tolist()
            sketches[row] = self.to_sketch(sketches.get(row), vals, weights)
        kept = _subset(bag, ~folded)
        kept.sketches = sketches
        return kept

    def items(self, values: pa.Array | np.ndarray) -> Any:
        """A bag's values as :meth:`to_accumulator` takes them, sliced per row."""
        return v.python_values(values) if isinstance(values, pa.Array) else values

    def to_sketch(self, sketch: bytes | None, values: Any, weights: list[int] | None) -> bytes:
        raise NotImplementedError

    def merge_sketches(self, sketches: list[bytes]) -> bytes:
        raise NotImplementedError

    def accumulators(self, state: State) -> list[Any]:
        if isinstance(state, PyState):
            return state.accumulators
        bag = state.sorted()  # type: ignore[union-attr]
        items = self.items(bag.values)
        out = []
        for row, (start, end) in enumerate(bag.groups()):
            vals = items[start:end]
            weights = None if bag.counts is None else bag.counts[start:end].tolist()
            sketch = bag.sketches.get(row)
            out.append(self.to_accumulator(sketch, vals, weights))
        return out

    def to_accumulator(self, sketch: bytes | None, values: Any, weights: list[int] | None) -> Any:
        raise NotImplementedError


class ExactDistinctKernel(_BagKernel):
    """``count_distinct_exact`` and ``collect_set``: the distinct values of each group."""

    def to_accumulator(self, sketch: bytes | None, values: Any, weights: list[int] | None) -> Any:
        return set(map(c.to_key, values))

    def extract(self, state: State) -> list[Any]:
        if isinstance(self.fn, CountDistinctExactFn) and isinstance(state, Bag):
            return np.bincount(state.owner, minlength=state.rows).tolist()
        return super().extract(state)


class CollectSetKernel(ExactDistinctKernel):
    def _settle(self, bag: Bag) -> Bag:
        # Keep at most 2 * max_size values per group, the smallest, as the CombineFn does.
        limit = 2 * self.fn.max_size  # type: ignore[attr-defined]
        per_group = np.bincount(bag.owner, minlength=bag.rows)
        if not (per_group > limit).any():
            return bag
        bag = bag.sorted()
        items = v.python_values(bag.values)
        keep: list[int] = []
        for start, end in bag.groups():
            if end - start <= limit:
                keep.extend(range(start, end))
                continue
            ranked = heapq.nsmallest(
                self.fn.max_size,  # type: ignore[attr-defined]
                range(start, end),
                key=lambda j: c.order_key(items[j]),
            )
            keep.extend(sorted(ranked))
        index = np.array(keep, dtype=np.int64)
        return Bag(bag.rows, bag.owner[index], _take(bag.values, index))


#: DataSketches' ``CurMode`` in the low two bits of a serialized HLL sketch's byte 7
#: (``HllUtil::MODE_BYTE``): ``LIST = 0, SET, HLL``.
_HLL_MODE_BYTE, _HLL_ARRAY_MODE = 7, 2
#: Longest table :func:`coupon_counts` builds: larger groups are fed to a sketch.
_COUPON_TABLE = 1024


@functools.cache
def coupon_counts(lg_k: int, target: tgt_hll_type) -> np.ndarray:
    """``counts[n]``: ``count_distinct`` of a sketch holding n distinct coupons in list or
    set mode, as long as a sketch of ``lg_k`` and ``target`` stays in those modes.

    In those modes the estimate is a function of the coupon count alone (``CouponList<A>::
    getEstimate``, which ``CouponHashSet`` inherits: ``const double est =
    CubicInterpolation<A>::usingXAndYTables(couponCount_); return fmax(est,
    couponCount_);``). A coupon is 32 bits of a value's hash (``HllUtil::coupon``: 26 bits
    of address and a 6-bit value), so n distinct values are n coupons unless two hashes
    share them, about once in 2**33 / n**2 groups of n; the sketch then counts one fewer
    than the values, and this table the values. The table is made by feeding a sketch
    distinct integers, and ends where it turns into an HLL array or an update leaves the
    estimate alone (two coupons met; never seen).
    """
    sketch = hll_sketch(lg_k, target)
    estimates = [sketch.get_estimate()]
    for i in range(_COUPON_TABLE - 1):
        sketch.update(i)
        mode = sketch.serialize_compact()[_HLL_MODE_BYTE] & 3
        if mode == _HLL_ARRAY_MODE or sketch.get_estimate() <= estimates[-1]:
            break
        estimates.append(sketch.get_estimate())
    return np.array([round(e) for e in estimates], dtype=object)


def _hashed_apart(values: pa.Array | np.ndarray) -> bool:
    """Whether distinct ``values`` are distinct hashed forms (:func:`hash_form`), so that a
    group's distinct values are its sketch's distinct inputs. Strings and 64-bit ints are
    hashed as themselves. Doubles are hashed as 64-bit ints when integral and as their bits
    otherwise: those meet only past 2**53 (where integral doubles wrap or become text) or
    below 2**-1021 (a non-integral double whose bits read as a small int). Mixed values (a
    text column) may meet: ``2**63`` and ``-2**63``, ``2**70`` and its decimal string."""
    kind = values.dtype if isinstance(values, np.ndarray) else values.type
    if kind in (v.STRING, v.INT64, np.dtype(np.int64)):
        return True
    if kind not in (pa.float64(), np.dtype(np.float64)):
        return False
    x = np.abs(values if isinstance(values, np.ndarray) else values.to_numpy(zero_copy_only=False))
    return bool(((x < 2.0**53) & ((x == 0) | (x >= 2.0**-1000))).all())


class HllKernel(_BagKernel):
    """``count_distinct`` and ``hll_sketch``: distinct values until a group has more than a
    sketch's list mode holds (``2**lg_k / 8``), then a serialized DataSketches HLL sketch."""

    def limit(self) -> int:
        return max(64, (1 << self.fn.lg_k) // 8)  # type: ignore[attr-defined]

    def _new(self) -> hll_sketch:
        return self.fn.create_accumulator()

    def items(self, values: pa.Array | np.ndarray) -> list[Any]:
        """What each value is handed to ``hll_sketch.update`` as (:func:`hash_form`): a
        string column without empty strings as it is, converted once for every row."""
        if (
            isinstance(values, pa.Array)
            and values.type == v.STRING
            and not values.null_count
            and not pc.any(pc.equal(pc.binary_length(values), 0)).as_py()
        ):
            return values.to_pylist()
        items = super().items(values)
        return [x if type(x) is str and x else hash_form(x) for x in items]

    def to_accumulator(self, sketch: bytes | None, values: Any, weights: list[int] | None) -> Any:
        """A sketch fed ``values`` as :meth:`items` gives them."""
        acc = self._new() if sketch is None else hll_sketch.deserialize(sketch)
        deque(map(acc.update, values), maxlen=0)  # update each, without a loop in Python
        return acc

    def to_sketch(self, sketch: bytes | None, values: Any, weights: list[int] | None) -> bytes:
        return self.to_accumulator(sketch, values, weights).serialize_compact()

    def extract(self, state: State) -> list[Any]:
        if not isinstance(state, Bag):
            return super().extract(state)
        bag = state.sorted()
        bounds = bag.bounds()
        sizes = np.diff(bounds)
        out = np.zeros(bag.rows, dtype=object)
        fed = np.ones(bag.rows, dtype=bool)  # the rows whose values go through a sketch
        if type(self.fn) is CountDistinctFn and _hashed_apart(bag.values):
            # A group of n distinct values that leaves a sketch in list or set mode has the
            # estimate of n coupons (:func:`coupon_counts`): no value needs hashing.
            counts = coupon_counts(self.fn.lg_k, self.fn._target)  # type: ignore[attr-defined]
            fed = sizes >= len(counts)
            fed[list(bag.sketches)] = True
            out[~fed] = counts[sizes[~fed]]
        rows = np.flatnonzero(fed)
        if not len(rows):
            return out.tolist()
        values, spans = bag.values, bounds
        if len(rows) < bag.rows:  # only the fed rows' values become Python objects
            values = _take(values, np.flatnonzero(np.repeat(fed, sizes)))
            spans = np.concatenate(([0], np.cumsum(sizes[rows])))
        items = self.items(values) if len(values) else []
        ends = spans.tolist()
        extract = self.fn.extract_output
        scratch = self._new()  # reset per group: a new sketch costs more than its updates
        for i, row in enumerate(rows.tolist()):
            data = bag.sketches.get(row)
            if data is None:
                scratch.reset()
                sketch = scratch
            else:
                sketch = hll_sketch.deserialize(data)
            deque(map(sketch.update, items[ends[i] : ends[i + 1]]), maxlen=0)
            out[row] = extract(sketch)
        return out.tolist()

    def merge_sketches(self, sketches: list[bytes]) -> bytes:
        if len(sketches) == 1:
            return sketches[0]
        union = hll_union(self.fn.lg_k)  # type: ignore[attr-defined]
        for data in sketches:
            union.update(hll_sketch.deserialize(data))
        return union.get_result(self.fn._target).serialize_compact()  # type: ignore[attr-defined]


class KllKernel(_BagKernel):
    """``approx_quantiles``: the group's values (a numpy array of doubles, as the sketch
    holds them) until there are more than ``k``, then a serialized KLL sketch."""

    def limit(self) -> int:
        return self.fn.k  # type: ignore[attr-defined]

    def batch(self, values: Any, ids: np.ndarray, count: int) -> State:
        # ``+ 0.0``: -0.0 is 0.0, as the CombineFn's ``coerce`` makes it
        floats = np.asarray(values, dtype=np.float64) + 0.0
        return self._settle(Bag(count, *self.pairs(floats, ids, count, None, False)))

    def pairs(
        self, values: Any, ids: np.ndarray, count: int, counts: np.ndarray | None, share: bool
    ) -> tuple[np.ndarray, Any, np.ndarray | None]:
        """Every value of each group, in order of arrival: the sketch takes repeats as they
        come, so finding the distinct ones (a sort of the pairs) would save it nothing."""
        order = stable_order(ids, count)
        return ids[order], _take(values, order), None if counts is None else counts[order]

    def to_accumulator(self, sketch: bytes | None, values: Any, weights: list[int] | None) -> Any:
        if sketch is None:
            acc = self.fn.create_accumulator()
        else:
            acc = kll_doubles_sketch.deserialize(sketch)
        if len(values):
            data = np.asarray(values, dtype=np.float64)
            if weights is not None:
                data = np.repeat(data, weights)
            acc.update(data)
        return acc

    def to_sketch(self, sketch: bytes | None, values: Any, weights: list[int] | None) -> bytes:
        return self.to_accumulator(sketch, values, weights).serialize()

    def merge_sketches(self, sketches: list[bytes]) -> bytes:
        merged = kll_doubles_sketch.deserialize(sketches[0])
        for data in sketches[1:]:
            merged.merge(kll_doubles_sketch.deserialize(data))
        return merged.serialize()

    def extract(self, state: State) -> list[Any]:
        """Rows held as values are read all at once: at most ``k`` values, which a KLL
        sketch keeps uncompacted at weight 1, so its inclusive quantile at rank q is its
        ``ceil(q * n)``-th smallest value, the smallest for q = 0
        (``quantiles_sorted_view<T, C, A>::get_quantile``: ``uint64_t weight = inclusive ?
        std::ceil(rank * total_weight_) : ...``, then the first entry whose cumulative
        weight reaches it). Rows holding a sketch go through the CombineFn."""
        if not isinstance(state, Bag) or state.counts is not None:
            return super().extract(state)
        bag = state.sorted()
        bounds = bag.bounds()
        sizes = np.diff(bounds)
        out: list[Any] = [None] * bag.rows  # a group of no value has no quantiles
        held = sizes > 0
        held[list(bag.sketches)] = False
        rows = np.flatnonzero(held)
        values = np.asarray(bag.values, dtype=np.float64)
        if len(rows):
            ordered = values[order_within(bag.owner, bag.rows, values)]
            ranks = np.asarray(self.fn.quantiles, dtype=np.float64)  # type: ignore[attr-defined]
            n = sizes[rows].astype(np.float64)[:, None]
            nth = np.clip(np.ceil(ranks[None, :] * n) - 1, 0, n - 1).astype(np.int64)
            quantiles = ordered[nth + bounds[rows][:, None]].tolist()
            for row, found in zip(rows.tolist(), quantiles, strict=True):
                out[row] = found
        extract = self.fn.extract_output
        for row, sketch in bag.sketches.items():
            out[row] = extract(
                self.to_accumulator(sketch, values[bounds[row] : bounds[row + 1]], None)
            )
        return out


class TopKKernel(_BagKernel):
    """``top_k``: exact counts per value until a group has more distinct values than the
    sketch's map holds exactly, then a frequent-items sketch fed with weighted updates."""

    counted = True

    def limit(self) -> int:
        return self.fn.exact_up_to  # type: ignore[attr-defined]

    def items(self, values: pa.Array | np.ndarray) -> list[str]:
        """What the sketch stores of each value: its canonical JSON text (``add_input``'s),
        made for a whole column at once."""
        if isinstance(values, pa.Array):
            return v.to_text(values).to_pylist()
        return [v.canonical_text(x) for x in values]

    def to_accumulator(self, sketch: bytes | None, values: Any, weights: list[int] | None) -> Any:
        """A sketch fed ``values`` as :meth:`items` gives them."""
        acc = (
            self.fn.create_accumulator()
            if not sketch
            else frequent_strings_sketch.deserialize(sketch)
        )
        deque(map(acc.update, values, weights or [1] * len(values)), maxlen=0)
        return acc

    def to_sketch(self, sketch: bytes | None, values: Any, weights: list[int] | None) -> bytes:
        return self.to_accumulator(sketch, values, weights).serialize()

    def merge_sketches(self, sketches: list[bytes]) -> bytes:
        merged = frequent_strings_sketch.deserialize(sketches[0])
        for data in sketches[1:]:
            merged.merge(frequent_strings_sketch.deserialize(data))
        return merged.serialize()

    def extract(self, state: State) -> list[Any]:
        """Rows held as exact counts are ranked directly, as the CombineFn ranks the sketch's
        items (count, then :func:`order_key`), and only over the values whose count reaches
        the row's k-th largest (the others cannot be among its k); rows holding a sketch are
        extracted by the CombineFn."""
        if not isinstance(state, Bag):
            return super().extract(state)
        k = self.fn.k  # type: ignore[attr-defined]
        bag = state.sorted()
        counts: np.ndarray = bag.counts  # type: ignore[assignment]
        bounds = bag.bounds()
        starts, ends = bounds[:-1], bounds[1:]
        ranked = counts[order_within(bag.owner, bag.rows, -counts)]  # largest count first
        kth = np.zeros(bag.rows, dtype=counts.dtype)
        held = ends > starts
        kth[held] = ranked[np.minimum(starts + k - 1, ends - 1)[held]]
        sketched = np.zeros(bag.rows, dtype=bool)
        sketched[list(bag.sketches)] = True
        index = np.flatnonzero((counts >= kth[bag.owner]) | sketched[bag.owner])
        candidates = Bag(bag.rows, bag.owner[index], _take(bag.values, index), counts[index])
        out: list[Any] = [None] * bag.rows  # a group of no value has no top values
        order = _natural_order(candidates)
        if order is not None:
            self._rank_held(candidates, order, sketched, out)
        items = v.python_values(candidates.values)
        kept = candidates.counts.tolist()  # type: ignore[union-attr]
        extract = self.fn.extract_output
        for row, (start, end) in enumerate(candidates.groups()):
            sketch = bag.sketches.get(row)
            if sketch is not None:
                texts = self.items(items[start:end])
                out[row] = extract(self.to_accumulator(sketch, texts, kept[start:end]))
            elif order is None and start < end:
                rows = sorted(
                    zip(items[start:end], kept[start:end], strict=True),
                    key=lambda row: (-row[1], c.order_key(row[0])),
                )
                out[row] = [[value, count] for value, count in rows[:k]]
        return out

    def _rank_held(
        self, candidates: Bag, order: np.ndarray, sketched: np.ndarray, out: list[Any]
    ) -> None:
        """``out[row]``: the top k ``[value, count]`` of each row held as counts, from the
        candidates ``order``ed by row, count (largest first) and value."""
        owner = candidates.owner[order]
        first = np.zeros(candidates.rows, dtype=np.int64)
        first[1:] = np.cumsum(np.bincount(owner, minlength=candidates.rows))[:-1]
        position = np.arange(len(order)) - first[owner]
        top = order[(position < self.fn.k) & ~sketched[owner]]  # type: ignore[attr-defined]
        values = v.python_values(_take(candidates.values, top))
        counts = candidates.counts[top].tolist()  # type: ignore[index]
        for row, value, count in zip(candidates.owner[top].tolist(), values, counts, strict=True):
            found = out[row]
            if found is None:
                out[row] = [[value, count]]
            else:
                found.append([value, count])


def _natural_order(bag: Bag) -> np.ndarray | None:
    """The bag's entries by row, count (largest first) and value, where the values are of
    one kind whose natural order is :func:`order_key`'s (strings by code point, which is
    UTF-8's byte order, as Arrow sorts them; ints; doubles), else None."""
    values = bag.values
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "if":
            return None
        values = pa.array(values)
    if values.type not in (v.STRING, pa.int64(), pa.float64()) or values.null_count:
        return None
    rank = np.asarray(pc.rank(values, sort_keys="ascending", tiebreaker="dense"))
    return np.lexsort((rank, -bag.counts, bag.owner))  # type: ignore[operator]


_KERNELS: dict[type, Callable[[LiveaggCombineFn], Kernel]] = {
    CountFn: CountKernel,
    SumFn: SumKernel,
    MeanFn: SumKernel,
    MinFn: ExtremeKernel,
    MaxFn: ExtremeKernel,
    VarianceFn: MomentsKernel,
    StddevFn: MomentsKernel,
    FirstFn: OrderedKernel,
    LastFn: OrderedKernel,
    HistogramFn: HistogramKernel,
    CountDistinctExactFn: ExactDistinctKernel,
    CollectSetFn: CollectSetKernel,
    CountDistinctFn: HllKernel,
    HllSketchFn: HllKernel,
    ApproxQuantilesFn: KllKernel,
    TopKFn: TopKKernel,
}


def vectorized(fn: LiveaggCombineFn) -> bool:
    """Whether ``fn`` has a vectorized kernel (a built-in); others run row by row."""
    return type(fn) in _KERNELS


def kernel(fn: LiveaggCombineFn) -> Kernel:
    """The kernel of ``fn``: its vectorized form for a built-in (exactly that class, not a
    subclass, whose methods may differ), else the row-wise one."""
    return _KERNELS.get(type(fn), Kernel)(fn)
