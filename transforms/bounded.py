"""The bounded path: batches of messages aggregated as columns, the window folded into the key.

A bounded input behaves like a stream whose watermark reaches the end only after all input
is read, so every (key, window) gets exactly one ``ON_TIME`` pane and nothing is late. That
needs no per-element windowing: each batch of lines is decoded once into the columns its views
need (:mod:`liveagg.engine.columns`) and pre-aggregated per (view, variant, window, key) by the
engine (:mod:`liveagg.engine.partials`); a bundle's partials are merged at each flush and only
they cross the shuffle, one element per (view, shard) holding every key that hashes to that
shard. The shard's merge step merges them again, extracts the results and writes the rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from liveagg.engine import partials as engine
from liveagg.engine import values as v
from liveagg.engine.columns import Decoder
from liveagg.engine.compiled import CompiledView, RunContext, as_compiled
from liveagg.runtime import tune_gc
from liveagg.spec import ViewSpec
from liveagg.transforms import envelope
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.deadletter import dead_letter
from liveagg.transforms.plan import (
    BLANK_LINES,
    LINES_READ,
    MESSAGES,
    MILESTONES,
    Tally,
    ViewOutputs,
    ViewPlan,
    encode_key,
    split,
    view_tag,
)
from liveagg.transforms.sources import KafkaRecords
from liveagg.transforms.sources.files import LineBatch

#: Messages buffered per bundle before partial accumulators are flushed downstream.
MAX_BUFFERED = 200_000
#: Shards of each view's keys in the shuffle: the parallelism of the merge step.
SHARDS = 16
#: Single messages (a bounded Kafka read) are decoded in batches of this many.
BATCH = 5_000


class _PreAggregate(beam.DoFn):
    """Decodes batches of messages and pre-aggregates them per bundle, one output per view."""

    def __init__(
        self, views: list[CompiledView], max_buffered: int = MAX_BUFFERED, partials: bool = False
    ) -> None:
        self._views = views
        self._max_buffered = max_buffered
        self._partials = partials  # level 1 of a two-level run: emit each key's Partial

    def setup(self) -> None:
        tune_gc()
        self._plans = [ViewPlan(view) for view in self._views]
        self._aggregators = [view.aggregator() for view in self._views]
        self._decoder = Decoder(self._plans)
        self._shard = uuid.uuid4().hex[:16]  # this worker's flushes are level-1 shards
        self._flushes = 0
        self._tally = Tally(self._views[0].spec.source)

    def start_bundle(self) -> None:
        # Each view's inputs since the last flush, aggregated together at the flush.
        self._parts: list[list[engine.Inputs]] = [[] for _ in self._plans]
        self._buffered = 0
        self._pending: list[Any] = []  # single messages waiting for a batch
        self._offsets: dict[str, list[int]] = {}

    def process(self, element: Any) -> Iterator[TaggedOutput]:
        if type(element) is LineBatch:  # a file's lines (``FileSource.read_batches``)
            yield from self._add(element.payloads(), element.where)
        elif type(element) is KafkaRecords:  # a Kafka read's batch of one partition
            if self._partials and element.offsets:
                self._cover(element.origin, element.offsets[0], element.offsets[-1])
            yield from self._add(element.lines, element.where)
        elif type(element) is list:  # a batch of payloads
            yield from self._add(element, None)
        else:
            self._pending.append(element)
            if len(self._pending) >= BATCH:
                yield from self._add_pending()

    def _add_pending(self) -> Iterator[TaggedOutput]:
        """Single ``payload`` or ``(payload, source)`` elements, decoded as one batch."""
        pairs = [split(element) for element in self._pending]
        self._pending = []
        if self._partials:
            for _, source in pairs:
                if type(source) is dict:
                    where = f"{source['topic']}/{source['partition']}"
                    self._cover(where, source["offset"], source["offset"])
        sources = [source for _, source in pairs]
        yield from self._add([payload for payload, _ in pairs], sources.__getitem__)

    def _cover(self, where: str, first: int, last: int) -> None:
        """Record Kafka offsets ``first..last`` of partition ``where`` in the offsets this
        flush covers."""
        span = self._offsets.get(where)
        if span is None:
            self._offsets[where] = [first, last]
        else:
            span[0], span[1] = min(span[0], first), max(span[1], last)

    def _add(self, payloads: list[Any], where: Any) -> Iterator[TaggedOutput]:
        """Decode a batch once for all views and pre-aggregate each view's columns.

        ``where(i)`` locates payload ``i`` for its dead letters (a file line, a Kafka offset).
        """
        decoded = self._decoder.decode(payloads, where)
        tally = self._tally
        tally.add(LINES_READ, decoded.lines)
        tally.add(BLANK_LINES, decoded.blank)
        tally.add(MESSAGES, decoded.messages)
        for payload, view, reason, detail, source in decoded.dead_letters:
            yield TaggedOutput(DEAD_LETTER, dead_letter(payload, view, reason, detail, source))
        for plan, batch, parts in zip(self._plans, decoded.views, self._parts, strict=True):
            tally.add(plan.used_counter, batch.used)
            tally.add(plan.filtered_counter, batch.filtered)
            parts.extend(batch.inputs)
        self._buffered += decoded.messages
        if self._buffered >= self._max_buffered:
            for tag, kv in self._flush():
                yield TaggedOutput(tag, kv)

    def finish_bundle(self) -> Iterator[TaggedOutput]:
        if self._pending:
            for out in self._add_pending():
                yield TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
        for tag, kv in self._flush():
            yield TaggedOutput(tag, GlobalWindows.windowed_value(kv))
        self._tally.flush()

    def _merged(self) -> Iterator[tuple[ViewPlan, Any, engine.Partial]]:
        """Each view's inputs since the last flush, pre-aggregated at once
        (:func:`liveagg.engine.partials.preaggregate_views`)."""
        views = [
            (plan, aggregator, parts)
            for plan, aggregator, parts in zip(
                self._plans, self._aggregators, self._parts, strict=True
            )
            if parts
        ]
        merged = engine.preaggregate_views([(aggregator, parts) for _, aggregator, parts in views])
        for (plan, aggregator, parts), partial in zip(views, merged, strict=True):
            parts.clear()
            yield plan, aggregator, partial
        self._buffered = 0

    def _flush(self) -> Iterator[tuple[str, Any]]:
        if self._partials:
            yield from self._flush_partials()
            return
        for plan, aggregator, merged in self._merged():
            tag = view_tag(plan.name)
            for shard, part in aggregator.shard(merged, SHARDS):
                yield tag, (shard, aggregator.dumps(part))

    def _flush_partials(self) -> Iterator[tuple[str, envelope.Partial]]:
        """Each merged key as a level-1 partial: this flush is its shard, pane 0.

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
        for plan, aggregator, merged in self._merged():
            tag = view_tag(plan.name)
            accumulators = aggregator.accumulators(merged)
            keys = [v.python_values(k) for k in merged.keys]
            encode = plan.combine.encode
            for r, acc in enumerate(accumulators):
                variant = plan.variants[int(merged.variant[r])]
                group = encode_key(tuple(keys[i][r] for i in variant.positions))
                start, end = int(merged.start[r]), int(merged.end[r])
                yield (
                    tag,
                    (plan.name, variant.index, start, end, group, shard, 0, encode(acc), offsets),
                )
        self._offsets = {}


class _MergeShard(beam.DoFn):
    """Merges every partial of one shard's keys and writes each key's row.

    A result beyond the range of a double leaves an ``overflow`` dead letter
    (:meth:`ViewPlan.rows`) on the ``dead_letter`` output. The rows are final, so the
    milestones of the view fire from them: every threshold a final value reaches, once
    (:meth:`~liveagg.engine.milestones.ViewMilestones.final`), on the ``milestones`` output.
    A cumulative period's windows meet on one shard (shards go by window start), so that
    they share their milestones.
    """

    def __init__(self, view: CompiledView) -> None:
        self._view = view

    def setup(self) -> None:
        tune_gc()
        self._plan = ViewPlan(self._view)
        self._aggregator = self._view.aggregator()

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator[Any]:
        letters: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        yield from self._rows(element, letters, events)
        for letter in letters:
            yield TaggedOutput(DEAD_LETTER, letter)
        for event in events:
            yield TaggedOutput(MILESTONES, event)

    def _rows(
        self,
        element: tuple[int, Iterable[bytes]],
        letters: list[dict[str, Any]],
        events: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        aggregator, plan = self._aggregator, self._plan
        parts = [aggregator.loads(data) for data in element[1]]
        merged = aggregator.merge(engine.concat(parts, aggregator))
        variants, starts, ends = merged.variant.tolist(), merged.start.tolist(), merged.end.tolist()
        keys = (
            list(zip(*(v.python_values(k) for k in merged.keys), strict=True))
            if merged.keys
            else [()] * merged.rows
        )
        outputs = aggregator.extract(merged)
        rows = plan.rows(variants, starts, ends, keys, outputs, "ON_TIME", 0, letters)
        plan.count_rows(len(rows))
        if plan.milestones:
            written = plan.written(outputs)  # a value its row holds as null fires nothing
            events.extend(plan.milestones.final(variants, starts, ends, keys, written))
            plan.count_milestones(len(events))
        return rows


class BoundedAggregate(beam.PTransform):
    """Aggregates a bounded PCollection of messages into every view it feeds.

    Returns ``{"views": {name: PCollection[row]}, "dead_letters": PCollection[dict],
    "milestones": PCollection[dict]}``; with ``partials``, level 1 of a two-level run, each
    view's PCollection holds :data:`~liveagg.transforms.envelope.Partial` tuples instead of
    rows, and no milestone fires (they fire at level 2, from the rows).

    Example::

        out = lines | BoundedAggregate(views)
        out["views"]["cdn"] | beam.Map(print)
    """

    def __init__(self, views: Sequence[CompiledView | ViewSpec], partials: bool = False) -> None:
        super().__init__()
        context = RunContext(level=1 if partials else 0)
        self._views = [as_compiled(view, context) for view in views]
        self._partials = partials

    def expand(self, messages: beam.PCollection) -> dict[str, Any]:
        names = [view.name for view in self._views]
        aggregate = _PreAggregate(self._views, partials=self._partials)
        tagged = messages | "PreAggregate" >> beam.ParDo(aggregate).with_outputs(
            DEAD_LETTER, *(view_tag(n) for n in names)
        )
        out = ViewOutputs(tagged[DEAD_LETTER])
        for view in self._views:
            spec = view.spec
            if self._partials:  # level 1: partials leave as they are, without a shuffle
                out.views[spec.name] = tagged[view_tag(spec.name)]
                continue
            merged = (
                tagged[view_tag(spec.name)]
                | f"{spec.name}/Shuffle" >> beam.GroupByKey()
                | f"{spec.name}/Merge"
                >> beam.ParDo(_MergeShard(view)).with_outputs(DEAD_LETTER, MILESTONES, main="rows")
            )
            out.add(spec.name, merged, bool(spec.milestones))
        return out.result()
