"""Level 2 of a two-level run: envelopes from the intermediate topic merged into rows.

Envelopes are decoded and checked against the views (:mod:`liveagg.transforms.envelope`);
an envelope that does not fit a view (another definition, an unknown view, a damaged
accumulator) becomes a dead letter and is never merged. The rest are re-keyed by the final
(rolled-up) window and grouping key and merged: on a bounded read by one shuffle per view,
on an unbounded read by the window operator, with the same panes as a one-level run.
Milestones fire here, at level 2, from the merged rows: level 1 holds partials only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from liveagg.engine.compiled import CompiledView, RunContext, as_compiled, compile_view
from liveagg.engine.partials import keep_latest
from liveagg.runtime import tune_gc
from liveagg.spec import ViewSpec
from liveagg.transforms import envelope
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.deadletter import dead_letter
from liveagg.transforms.plan import (
    MILESTONES,
    Reject,
    ViewOutputs,
    ViewPlan,
    decode_key,
    view_tag,
)
from liveagg.transforms.sources import KafkaRecords
from liveagg.transforms.streaming import keyed_partial, one_watermark_per_stage, window_operator


class _Decode(beam.DoFn):
    """Envelopes, decoded and keyed for the merge operator (:func:`.streaming.keyed_partial`)."""

    def __init__(self, views: list[tuple[CompiledView, CompiledView]]) -> None:
        self._compiled = views  # (as declared, as written)

    def setup(self) -> None:
        tune_gc()
        self._views = {
            declared.name: envelope.Level2(declared, final) for declared, final in self._compiled
        }

    def process(self, element: Any) -> Iterator[Any]:
        if type(element) is KafkaRecords:  # a Kafka read's batch: each record is one partial
            for payload, source in element.messages():
                yield from self._decode(payload, source)
            return
        yield from self._decode(*(element if isinstance(element, tuple) else (element, None)))

    def _decode(self, payload: Any, source: Any) -> Iterator[Any]:
        try:
            name, partial = envelope.decode(payload, self._views)  # raises Reject only
        except Reject as r:
            view = getattr(r, "view", None)
            yield TaggedOutput(DEAD_LETTER, dead_letter(payload, view, r.reason, r.detail, source))
            return
        yield TaggedOutput(view_tag(name), keyed_partial(partial, payload, source))


class _MergeWindow(beam.DoFn):
    """Bounded: all partials of one (variant, window start, key), latest pane per shard and
    window, as a row per window, followed by its ``overflow`` dead letters if a result is
    beyond a double, then the milestones the rows fire.

    A window start is one window, but for cumulative windows, whose period's windows share
    it: they meet here so that they share their milestones, as one level does.
    """

    def __init__(self, view: CompiledView) -> None:
        self._view = view

    def setup(self) -> None:
        tune_gc()
        self._plan = ViewPlan(self._view)

    def process(self, element: tuple[tuple, Iterable[tuple]]) -> Iterator[Any]:
        (variant, start, key), partials = element
        latest: dict[tuple[int, str], tuple[int, bytes]] = {}
        for end, shard, pane, data in partials:
            keep_latest(latest, (end, shard), pane, data)
        by_end: dict[int, list[bytes]] = {}
        for (end, _), (_, data) in latest.items():
            by_end.setdefault(end, []).append(data)
        plan = self._plan
        combine = plan.combine
        variant_ = plan.variants[variant]
        letters: list[dict[str, Any]] = []
        ends = sorted(by_end)
        columns: list[list[Any]] = [[] for _ in plan.spec.aggregations]
        for end in ends:
            acc = combine.merge_accumulators([combine.decode(d) for d in by_end[end]])
            outputs = combine.extract_output(acc)
            for column, value in zip(columns, outputs, strict=True):
                column.append(value)
            yield plan.row(variant_, start, end, key, outputs, "ON_TIME", 0, letters=letters)
        for letter in letters:
            yield TaggedOutput(DEAD_LETTER, letter)
        if plan.milestones:
            values = decode_key(key)
            full = [None] * len(plan.spec.grouping_cols)
            for position, value in zip(variant_.positions, values, strict=True):
                full[position] = value
            events = plan.milestones.final(
                [variant] * len(ends),
                [start] * len(ends),
                ends,
                [full] * len(ends),
                plan.written(columns),
            )
            plan.count_milestones(len(events))
            for event in events:
                yield TaggedOutput(MILESTONES, event)


def _by_window(element: tuple) -> tuple:
    """A keyed partial (:func:`.streaming.keyed_partial`) keyed by its window's start and key:
    a cumulative period's windows share a start and merge together (their milestones)."""
    (_, variant, _), [(key, start, end, (shard, pane, data), _)] = element
    return (variant, start, key), (end, shard, pane, data)


class RekeyAggregate(beam.PTransform):
    """Merges a PCollection of envelopes into each view's final rows.

    ``views`` are the views as declared (their roll-up applied here). Returns
    ``{"views": {name: PCollection[row]}, "dead_letters": PCollection[dict]}``, and
    ``"milestones"`` when a view declares milestones, like the one-level transforms: bounded,
    from the final rows; streaming, from each pane of the merge operator.
    """

    def __init__(
        self,
        views: Sequence[CompiledView | ViewSpec],
        streaming: bool,
        clock: Callable[[], float] = time.time,
        early_panes: bool = True,
    ) -> None:
        super().__init__()
        context = RunContext("--streaming" if streaming else None, level=2)
        declared = [as_compiled(view, context) for view in views]
        #: Each view compiled as declared (level 1's accumulators) and as written (its rows).
        self.views = [(v, compile_view(v.spec.final(), context)) for v in declared]
        self._streaming = streaming
        self._clock = clock
        self._early_panes = early_panes

    def expand(self, envelopes: beam.PCollection) -> dict[str, Any]:
        tags = [view_tag(declared.name) for declared, _ in self.views]
        decoded = envelopes | "Decode" >> beam.ParDo(_Decode(self.views)).with_outputs(
            DEAD_LETTER, *tags
        )
        out = ViewOutputs(decoded[DEAD_LETTER])
        for (declared, compiled), tag in zip(self.views, tags, strict=True):
            spec, final = declared.spec, compiled.spec
            if not self._streaming:
                merged = (
                    decoded[tag]
                    | f"{spec.name}/ByWindow" >> beam.Map(_by_window)
                    | f"{spec.name}/Shuffle" >> beam.GroupByKey()
                    | f"{spec.name}/Merge"
                    >> beam.ParDo(_MergeWindow(compiled)).with_outputs(
                        DEAD_LETTER, MILESTONES, main="rows"
                    )
                )
                out.add(spec.name, merged, bool(final.milestones))
                continue
            early = self._early_panes and final.early is not None
            operator = window_operator(
                compiled,
                self._clock,
                early,
                partials_in=True,
                shared_floor=one_watermark_per_stage(decoded[tag].pipeline),
                eager=self._early_panes,
            )
            merged = decoded[tag] | f"{spec.name}/Merge" >> beam.ParDo(operator).with_outputs(
                DEAD_LETTER, MILESTONES, main="rows"
            )
            out.add(spec.name, merged, bool(final.milestones))
        return out.result()
