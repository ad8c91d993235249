"""The bounded path: files aggregated with the window folded into the key.

A bounded input behaves like a stream whose watermark reaches the end only after all input
is read, so every (key, window) gets exactly one ``ON_TIME`` pane and nothing is late. That
needs no per-element windowing: each bundle pre-aggregates its messages per
(view, granularity, grouping set, window, key) in a dict, and only encoded accumulators go
through the shuffle, where a lifted ``CombinePerKey`` merges them. Session windows keep a
per-key list of sessions that merge like Beam's ``Sessions``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from liveagg.spec import ViewSpec
from liveagg.transforms.combine import MergeEncoded, MergeSessions
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.plan import ViewPlan, route, view_tag

#: Messages buffered per bundle before partial accumulators are flushed downstream.
MAX_BUFFERED = 50_000


class _PreAggregate(beam.DoFn):
    """Decodes messages and pre-aggregates them per bundle, one tagged output per view."""

    def __init__(self, specs: list[ViewSpec], max_buffered: int = MAX_BUFFERED) -> None:
        self._specs = specs
        self._max_buffered = max_buffered

    def setup(self) -> None:
        self._plans = [ViewPlan(s) for s in self._specs]

    def start_bundle(self) -> None:
        self._buffers: list[dict[Any, list]] = [{} for _ in self._plans]
        self._buffered = 0

    def process(self, element: Any) -> Iterator[TaggedOutput]:
        for item in route(self._plans, element):
            if isinstance(item, dict):
                yield TaggedOutput(DEAD_LETTER, item)
                continue
            index, (ts, row, group) = item
            plan = self._plans[index]
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
        for tag, kv in self._flush():
            yield TaggedOutput(tag, GlobalWindows.windowed_value(kv))

    def _flush(self) -> Iterator[tuple[str, tuple[Any, bytes]]]:
        for plan, buffer in zip(self._plans, self._buffers, strict=True):
            combine = plan.combine
            if plan.is_session:
                merger = MergeSessions(combine)
                gap = plan.spec.window.gap.micros  # type: ignore[union-attr]
                for key, items in buffer.items():
                    yield view_tag(plan.name), (key, merger.encode(_sessions(combine, items, gap)))
            else:
                for key, rows in buffer.items():
                    acc = combine.add_inputs(combine.create_accumulator(), rows)
                    yield view_tag(plan.name), (key, combine.encode(acc))
            buffer.clear()
        self._buffered = 0


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


class _Rows(beam.DoFn):
    """Turns merged results into output rows (one ON_TIME pane each)."""

    def __init__(self, spec: ViewSpec) -> None:
        self._spec = spec

    def setup(self) -> None:
        self._plan = ViewPlan(self._spec)

    def process(self, element: tuple[Any, Any]) -> Iterable[dict[str, Any]]:
        key, result = element
        plan = self._plan
        if plan.is_session:
            variant_index, group = key
            variant = plan.variants[variant_index]
            for start, end, outputs in result:
                yield plan.row(variant, start, end, group, outputs, "ON_TIME", 0)
        else:
            variant_index, start, end, group = key
            yield plan.row(plan.variants[variant_index], start, end, group, result, "ON_TIME", 0)


class BoundedAggregate(beam.PTransform):
    """Aggregates a bounded PCollection of messages into every view it feeds.

    Returns ``{"views": {name: PCollection[row]}, "dead_letters": PCollection[dict]}``.

    Example::

        out = lines | BoundedAggregate(views)
        out["views"]["cdn"] | beam.Map(print)
    """

    def __init__(self, specs: list[ViewSpec]) -> None:
        super().__init__()
        self._specs = specs

    def expand(self, messages: beam.PCollection) -> dict[str, Any]:
        names = [s.name for s in self._specs]
        tagged = messages | "PreAggregate" >> beam.ParDo(_PreAggregate(self._specs)).with_outputs(
            DEAD_LETTER, *(view_tag(n) for n in names)
        )
        views = {}
        for spec in self._specs:
            plans = ViewPlan(spec)  # built once here to fail at construction, not on workers
            merge = (
                MergeSessions(plans.combine) if plans.is_session else MergeEncoded(plans.combine)
            )
            views[spec.name] = (
                tagged[view_tag(spec.name)]
                | f"{spec.name}/Merge" >> beam.CombinePerKey(merge)
                | f"{spec.name}/Rows" >> beam.ParDo(_Rows(spec))
            )
        return {"views": views, "dead_letters": tagged[DEAD_LETTER]}
