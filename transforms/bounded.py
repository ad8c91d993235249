"""The bounded path: files aggregated with the window folded into the key.

A bounded input behaves like a stream whose watermark reaches the end only after all input
is read, so every (key, window) gets exactly one ``ON_TIME`` pane and nothing is late. That
needs no per-element windowing: each bundle pre-aggregates its messages per
(view, granularity, grouping set, window, key) in a dict, and only encoded accumulators go
through the shuffle. They travel in batches: each flush sends one element per
(view, shard) holding the partial accumulators of every key that hashes to that shard, so
Beam's per-element cost is paid per batch, not per key; the shard's merge step then merges
each key's partials and writes its row. Session windows keep a per-key list of sessions that
merge like Beam's ``Sessions``.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from liveagg.runtime import collector_paused, thaw, tune_gc
from liveagg.spec import ViewSpec
from liveagg.transforms import envelope
from liveagg.transforms.combine import MergeSessions
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.deadletter import dead_letter
from liveagg.transforms.plan import (
    BLANK_LINES,
    LINES_READ,
    MESSAGES,
    Reject,
    Tally,
    ViewPlan,
    decode_line,
    encode_key,
    exact,
    long_digits,
    route,
    view_tag,
)
from liveagg.transforms.shuffle import pack, unpack
from liveagg.transforms.sources.files import LineBatch

#: Messages buffered per bundle before partial accumulators are flushed downstream.
MAX_BUFFERED = 200_000
#: Shards of each view's keys in the shuffle: the parallelism of the merge step.
SHARDS = 16

#: Keys with at most this many rows in a flush send the rows instead of an accumulator.
RAW_ROWS = 4

Piece = tuple[Any, Any]  # (key, encoded accumulator or session list, or a list of rows)


def shard_of(key: tuple) -> int:
    """A stable shard for a key (``hash()`` of bytes differs between worker processes)."""
    if len(key) == 4:  # (variant, start, end, group)
        return zlib.crc32(key[3], key[1] & 0xFFFFFFFF) % SHARDS
    return zlib.crc32(key[1]) % SHARDS  # (variant, group): sessions


def _encoded(key: tuple) -> tuple:
    """The buffer key with its group encoded (the batch path buffers raw value tuples)."""
    group = key[-1]
    if type(group) is tuple:
        return (*key[:-1], encode_key(group))
    return key


class _PreAggregate(beam.DoFn):
    """Decodes messages and pre-aggregates them per bundle, one tagged output per view."""

    def __init__(
        self, specs: list[ViewSpec], max_buffered: int = MAX_BUFFERED, partials: bool = False
    ) -> None:
        self._specs = specs
        self._max_buffered = max_buffered
        self._partials = partials  # level 1 of a two-level run: emit each key's Partial

    def setup(self) -> None:
        tune_gc()
        self._plans = [ViewPlan(s) for s in self._specs]
        self._shard = uuid.uuid4().hex[:16]  # this worker's flushes are level-1 shards
        self._flushes = 0
        self._tally = Tally(self._specs[0].source)

    def start_bundle(self) -> None:
        self._buffers: list[dict[Any, list]] = [{} for _ in self._plans]
        self._buffered = 0
        self._offsets: dict[str, list[int]] = {}

    def process(self, element: Any) -> Iterator[TaggedOutput]:
        with collector_paused():  # what a batch adds stays buffered until a flush
            if type(element) is LineBatch:  # a file's lines (``FileSource.read_batches``)
                yield from self._add_batch(element.lines, element.where, element.digit_runs)
                return
            if type(element) is list:  # a batch of payloads
                yield from self._add_batch(element, None, True)
                return
            if self._partials and type(element) is tuple and type(element[1]) is dict:
                self._cover(element[1])
            yield from self._add(element)

    def _cover(self, source: dict[str, Any]) -> None:
        """Record a Kafka message's offset in the offsets this flush covers."""
        where = f"{source['topic']}/{source['partition']}"
        offset = source["offset"]
        span = self._offsets.get(where)
        if span is None:
            self._offsets[where] = [offset, offset]
        else:
            span[0], span[1] = min(span[0], offset), max(span[1], offset)

    def _add_batch(
        self, payloads: list[Any], where: Any, digit_runs: bool
    ) -> Iterator[TaggedOutput]:
        """Pre-aggregate a batch column by column (:meth:`ViewPlan.extract_batch`).

        ``where(i)`` locates payload ``i`` for its dead letters (files), if known;
        ``digit_runs`` False says that no payload holds an integer beyond 64 bits.
        """
        tally = self._tally
        tally.add(LINES_READ, len(payloads))
        index: list[int] | None = None  # msgs[i] is payloads[index[i]]; None: the same i
        exact_ones: list[int] = []  # msgs decoded again for integers beyond 64 bits
        try:
            msgs = [orjson.loads(p) for p in payloads]
            decoded = all(type(m) is dict for m in msgs)
            if decoded and digit_runs:
                for i, payload in enumerate(payloads):
                    if long_digits(payload):
                        msgs[i] = exact(payload)
                        exact_ones.append(i)
        except (orjson.JSONDecodeError, Reject):
            decoded = False
        if not decoded:  # rare: split off what is not a JSON object, per message
            msgs, index, exact_ones = [], [], []
            for i, payload in enumerate(payloads):
                try:
                    msg, was_exact = decode_line(payload, digit_runs)
                except Reject as r:
                    source = None if where is None else where(i)
                    yield TaggedOutput(
                        DEAD_LETTER, dead_letter(payload, None, r.reason, r.detail, source)
                    )
                    continue
                if msg is None:
                    tally.add(BLANK_LINES)
                    continue
                if was_exact:
                    exact_ones.append(len(msgs))
                msgs.append(msg)
                index.append(i)
        tally.add(MESSAGES, len(msgs))
        shared: dict = {}
        for plan, buffer in zip(self._plans, self._buffers, strict=True):
            column, rows, groups, rejects = plan.extract_batch(msgs, shared, tally, exact_ones)
            tally.add(plan.used_counter, len(column))
            for i, r in rejects:
                j = i if index is None else index[i]
                source = None if where is None else where(j)
                yield TaggedOutput(
                    DEAD_LETTER, dead_letter(payloads[j], plan.name, r.reason, r.detail, source)
                )
            variants = plan.variants
            if len(variants) == 1 and variants[0].fixed_us and variants[0].grouping_set is None:
                size = variants[0].fixed_us
                for ts, row, group in zip(column, rows, groups, strict=True):
                    start = ts - ts % size
                    key = (0, start, start + size, group if type(group) is tuple else group[0])
                    entry = buffer.get(key)
                    if entry is None:
                        buffer[key] = [row]
                    else:
                        entry.append(row)
                continue
            for ts, row, group in zip(column, rows, groups, strict=True):
                for variant in variants:
                    if type(group) is tuple:
                        key = tuple(group[i] for i in variant.positions)
                    else:
                        key = group[variant.index]
                    if variant.session_gap_us is not None:
                        buffer.setdefault((variant.index, key), []).append((ts, row))
                        continue
                    for start, end in variant.assign(ts):
                        buffer.setdefault((variant.index, start, end, key), []).append(row)
        self._buffered += len(msgs)
        if self._buffered >= self._max_buffered:
            for tag, kv in self._flush():
                yield TaggedOutput(tag, kv)

    def _add(self, element: Any) -> Iterator[TaggedOutput]:
        for item in route(self._plans, element, self._tally):
            if isinstance(item, dict):
                yield TaggedOutput(DEAD_LETTER, item)
                continue
            index, (ts, row, group) = item
            plan = self._plans[index]
            self._tally.add(plan.used_counter)
            buffer = self._buffers[index]
            for variant, key in plan.keys(group):
                if variant.session_gap_us is not None:
                    buffer.setdefault((variant.index, key), []).append((ts, row))
                    continue
                for start, end in variant.assign(ts):
                    buffer.setdefault((variant.index, start, end, key), []).append(row)
        self._buffered += 1
        if self._buffered >= self._max_buffered:
            for tag, kv in self._flush():
                yield TaggedOutput(tag, kv)

    def finish_bundle(self) -> Iterator[TaggedOutput]:
        with collector_paused():
            for tag, kv in self._flush():
                yield TaggedOutput(tag, GlobalWindows.windowed_value(kv))
        self._tally.flush()
        thaw()

    def _flush(self) -> Iterator[tuple[str, Any]]:
        if self._partials:
            yield from self._flush_partials()
            return
        for plan, buffer in zip(self._plans, self._buffers, strict=True):
            shards: list[list[Piece]] = [[] for _ in range(SHARDS)]
            combine = plan.combine
            if plan.is_session:
                merger = MergeSessions(combine)
                gap = plan.spec.window.gap.micros  # type: ignore[union-attr]
                for key, items in buffer.items():
                    key = _encoded(key)
                    data = merger.encode(_sessions(combine, items, gap))
                    shards[shard_of(key)].append((key, data))
            else:
                create, add_inputs, encode = (
                    combine.create_accumulator,
                    combine.add_inputs,
                    combine.encode,
                )
                for key, rows in buffer.items():
                    key = _encoded(key)
                    # A key seen a few times travels as its rows: smaller and cheaper than an
                    # accumulator built, encoded and decoded for them (a sketch, say).
                    data = rows if len(rows) <= RAW_ROWS else encode(add_inputs(create(), rows))
                    shards[shard_of(key)].append((key, data))
            buffer.clear()
            tag = view_tag(plan.name)
            for shard, partials in enumerate(shards):
                if partials:
                    yield tag, (shard, pack(partials))
        self._buffered = 0

    def _flush_partials(self) -> Iterator[tuple[str, envelope.Partial]]:
        """Each buffered key as a level-1 partial: this flush is its shard, pane 0.

        A flush of Kafka messages is named by the offsets it covers, so a bundle that is
        retried after a failure sends its partials under the same shard again: level 2
        replaces them instead of counting them twice. Files have no offsets to name them by.
        """
        offsets = self._offsets
        if offsets:
            shard = ",".join(f"{k}:{lo}-{hi}" for k, (lo, hi) in sorted(offsets.items()))
        else:
            shard = f"{self._shard}-{self._flushes}"
            self._flushes += 1
        for plan, buffer in zip(self._plans, self._buffers, strict=True):
            combine, tag = plan.combine, view_tag(plan.name)
            for key, rows in buffer.items():
                variant, start, end, group = _encoded(key)
                acc = combine.encode(combine.add_inputs(combine.create_accumulator(), rows))
                yield tag, (plan.name, variant, start, end, group, shard, 0, acc, offsets)
            buffer.clear()
        self._buffered = 0
        self._offsets = {}


def _sessions(combine: Any, items: list[tuple[int, tuple]], gap_us: int) -> list:
    """Split one key's (ts, row) items into sessions: a gap of ``gap_us`` or more starts anew."""
    items.sort(key=lambda item: item[0])
    sessions, rows, start, last = [], [], None, None
    for ts, row in items:
        if start is not None and ts >= last + gap_us:
            sessions.append(
                (start, last + gap_us, combine.add_inputs(combine.create_accumulator(), rows))
            )
            rows, start = [], None
        if start is None:
            start = ts
        last = ts
        rows.append(row)
    if rows:
        sessions.append(
            (start, last + gap_us, combine.add_inputs(combine.create_accumulator(), rows))
        )
    return sessions


class _MergeShard(beam.DoFn):
    """Merges every partial of one shard's keys and turns each key's result into its row.

    Each key's partials are decoded and merged once, together: merging a sketch pairwise per
    partial would build a union per partial. A result beyond the range of a double leaves
    an ``overflow`` dead letter (:meth:`ViewPlan.row`) on the ``dead_letter`` output.
    """

    def __init__(self, spec: ViewSpec) -> None:
        self._spec = spec

    def setup(self) -> None:
        tune_gc()
        self._plan = ViewPlan(self._spec)
        combine = self._plan.combine
        self._codec = MergeSessions(combine) if self._plan.is_session else combine

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator[Any]:
        with collector_paused():  # a shard's keys, and the rows the file sink keeps
            letters: list[dict[str, Any]] = []
            yield from self._rows(element, letters)
            for letter in letters:
                yield TaggedOutput(DEAD_LETTER, letter)

    def finish_bundle(self) -> None:
        thaw()

    def _rows(
        self, element: tuple[int, Iterable[bytes]], letters: list[dict[str, Any]]
    ) -> Iterator[dict[str, Any]]:
        parts: dict[Any, list[Any]] = {}
        for packed in element[1]:
            for key, data in unpack(packed):
                seen = parts.get(key)
                if seen is None:
                    parts[key] = [data]
                else:
                    seen.append(data)
        plan, codec = self._plan, self._codec
        if plan.is_session:
            decode, merge, extract = codec.decode, codec.merge_accumulators, codec.extract_output
            rows = 0
            for (variant_index, group), data in parts.items():
                sessions = merge([decode(d) for d in data]) if len(data) > 1 else decode(data[0])
                variant = plan.variants[variant_index]
                for start, end, outputs in extract(sessions):
                    rows += 1
                    yield plan.row(
                        variant, start, end, group, outputs, "ON_TIME", 0, False, letters
                    )
            plan.count_rows(rows)
            return
        variants, row, extract = plan.variants, plan.row, codec.extract_output
        for (variant_index, start, end, group), data in parts.items():
            outputs = extract(self._merge(data))
            variant = variants[variant_index]
            yield row(variant, start, end, group, outputs, "ON_TIME", 0, False, letters)
        plan.count_rows(len(parts))

    def _merge(self, partials: list[Any]) -> Any:
        """One key's partials (encoded accumulators and lists of rows) as one accumulator."""
        combine = self._codec
        accumulators, rows = [], []
        for data in partials:
            if type(data) is bytes:
                accumulators.append(combine.decode(data))
            else:
                rows.extend(data)
        if not accumulators:
            acc = combine.create_accumulator()
        elif len(accumulators) == 1:
            acc = accumulators[0]
        else:
            acc = combine.merge_accumulators(accumulators)
        return combine.add_inputs(acc, rows) if rows else acc


class BoundedAggregate(beam.PTransform):
    """Aggregates a bounded PCollection of messages into every view it feeds.

    Returns ``{"views": {name: PCollection[row]}, "dead_letters": PCollection[dict]}``;
    with ``partials``, level 1 of a two-level run, each view's PCollection holds
    :data:`~liveagg.transforms.envelope.Partial` tuples instead of rows.

    Example::

        out = lines | BoundedAggregate(views)
        out["views"]["cdn"] | beam.Map(print)
    """

    def __init__(self, specs: list[ViewSpec], partials: bool = False) -> None:
        super().__init__()
        self._specs = specs
        self._partials = partials

    def expand(self, messages: beam.PCollection) -> dict[str, Any]:
        names = [s.name for s in self._specs]
        aggregate = _PreAggregate(self._specs, partials=self._partials)
        tagged = messages | "PreAggregate" >> beam.ParDo(aggregate).with_outputs(
            DEAD_LETTER, *(view_tag(n) for n in names)
        )
        views = {}
        dead = [tagged[DEAD_LETTER]]
        for spec in self._specs:
            ViewPlan(spec)  # built once here to fail at construction, not on workers
            if self._partials:  # level 1: partials leave as they are, without a shuffle
                envelope.check_sharded(spec, level1=True)
                views[spec.name] = tagged[view_tag(spec.name)]
                continue
            merged = (
                tagged[view_tag(spec.name)]
                | f"{spec.name}/Shuffle" >> beam.GroupByKey()
                | f"{spec.name}/Merge"
                >> beam.ParDo(_MergeShard(spec)).with_outputs(DEAD_LETTER, main="rows")
            )
            views[spec.name] = merged.rows
            dead.append(merged[DEAD_LETTER])
        dead_letters = tuple(dead) | "DeadLetters" >> beam.Flatten()
        return {"views": views, "dead_letters": dead_letters}
