"""The compiled view: what a validated :class:`~liveagg.spec.ViewSpec` becomes once, before
any graph is built.

:func:`compile_view` resolves the view's combiners, its variants (granularities crossed with
grouping sets), the typed columns of its rows (the one schema every sink reads) and its
definition fingerprint, and runs the checks that depend on the run (:class:`RunContext`).
The result is frozen; the
pipeline's transforms carry it to the workers, which build their runtime form
(:class:`~liveagg.transforms.plan.ViewPlan`) from it without planning again. A problem is a
:class:`~liveagg.errors.ViewError` naming the view's own file and field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from liveagg import combiners
from liveagg.combiners.base import LiveaggCombineFn
from liveagg.engine.partials import Variant, ViewAggregator
from liveagg.engine.windows import WindowFn
from liveagg.errors import ViewError, ViewErrors
from liveagg.spec import ViewSpec

#: Column types beyond the aggregation output types: grouping values and window bounds.
KEY, TIMESTAMP = "key", "timestamp"

T = TypeVar("T")


@dataclass(frozen=True)
class Column:
    """One column of a view's rows: its name and type (an aggregation output type, ``key``
    for a grouping column or ``timestamp`` for a window bound)."""

    name: str
    type: str


@dataclass(frozen=True)
class RunContext:
    """What a run adds to the checks of its views: how they are aggregated.

    ``streaming`` names the reason the window operator runs (``"--streaming"``, ``"an
    unbounded Kafka read"``), None on the bounded path; ``level`` is 0 for a one-level run,
    1 or 2 for the levels of a two-level run (docs/two-level.md).
    """

    streaming: str | None = None
    level: int = 0


@dataclass(frozen=True)
class CompiledView:
    """A view ready to run: built by :func:`compile_view`, read by every path and sink."""

    spec: ViewSpec
    fns: tuple[LiveaggCombineFn, ...]
    variants: tuple[Variant, ...]
    columns: tuple[Column, ...]
    fingerprint: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def origin(self) -> str:
        return self.spec.origin

    @property
    def output_types(self) -> tuple[str, ...]:
        """The type of each aggregation's column, in the order of ``spec.aggregations``."""
        by_name = {column.name: column.type for column in self.columns}
        return tuple(by_name[a.output] for a in self.spec.aggregations)

    @property
    def value_columns(self) -> frozenset[str]:
        """The aggregated and derived columns of its rows: what a result dead letter's payload
        leaves out, keeping the row's key, window and pane."""
        spec = self.spec
        return frozenset([*(a.output for a in spec.aggregations), *(d.name for d in spec.derived)])

    def aggregator(self) -> ViewAggregator:
        """The engine's aggregator of the view's messages."""
        return ViewAggregator(
            self.fns,
            self.variants,
            len(self.spec.grouping_cols),
            [fn.needs_event_time for fn in self.fns],
        )


def compile_view(spec: ViewSpec, context: RunContext | None = None) -> CompiledView:
    """Compile one view, checked against ``context`` (default: a one-level bounded run)."""
    fns = []
    for i, aggregation in enumerate(spec.aggregations):
        try:
            fns.append(combiners.create(aggregation.kind, aggregation.params))
        except ValueError as e:
            raise ViewError(spec.origin, spec.path(f".aggregation_info[{i}]"), str(e)) from e
    _check_run(spec, context or RunContext())
    return CompiledView(
        spec,
        tuple(fns),
        tuple(variants(spec)),
        _columns(spec, fns),
        spec.fingerprint(),
    )


def compile_views(
    specs: Sequence[ViewSpec], context: RunContext | None = None
) -> list[CompiledView]:
    """:func:`compile_view` of each view; the problems of all of them at once."""
    return _each(specs, lambda spec: compile_view(spec, context))


def check_run(specs: Sequence[ViewSpec], context: RunContext) -> None:
    """The checks of ``context`` alone, for every view at once: what a run refuses before
    it reads anything (:func:`compile_view` runs them too)."""
    _each(specs, lambda spec: _check_run(spec, context))


def _each(specs: Sequence[ViewSpec], step: Callable[[ViewSpec], T]) -> list[T]:
    """``step`` of every view; one :class:`ViewErrors` with the problem of each view that
    has one, so a run names them all, not only the first."""
    results: list[T] = []
    errors: list[ViewError] = []
    for spec in specs:
        try:
            results.append(step(spec))
        except ViewError as e:
            errors.append(e)
    if errors:
        raise ViewErrors(errors)
    return results


def as_compiled(view: CompiledView | ViewSpec, context: RunContext | None = None) -> CompiledView:
    """A compiled view as it is; a spec compiled for ``context`` (library use and tests:
    the pipeline compiles each view once, for its run, before building the graph)."""
    return view if isinstance(view, CompiledView) else compile_view(view, context)


def _check_run(spec: ViewSpec, context: RunContext) -> None:
    """Refuse, naming the file and field, what a view cannot do in this run.

    Sessions are not aggregated in shards (level 1 of a two-level run, or ``hot_key_fanout``
    on the streaming path): a shard's session changes shape as it merges. The streaming
    window operator keeps no global window in shards either: the operator that merges them
    knows no event time of the messages, which ``state_ttl`` counts from, so it would keep
    every key for ever; such a view runs one-level, or on the bounded path.
    """
    fanout = context.streaming is not None and spec.hot_key_fanout is not None
    if spec.window.type == "session" and (context.level == 1 or fanout):
        why = "level 1 of a two-level run" if context.level == 1 else "hot_key_fanout"
        raise ViewError(
            spec.origin,
            spec.path(".window.type" if context.level == 1 else ".hot_key_fanout"),
            f"view {spec.name!r}: session windows cannot be aggregated in shards ({why}): "
            "a shard's session changes shape as it merges; use fixed or sliding windows",
        )
    if context.streaming is None or not spec.window.is_global:
        return
    if context.level:
        path, what, instead = ".window.type", "in a two-level run", "run it in one level"
    elif fanout:
        path, what, instead = ".hot_key_fanout", "with hot_key_fanout", "remove hot_key_fanout"
    else:
        return
    raise ViewError(
        spec.origin,
        spec.path(path),
        f"view {spec.name!r}: the streaming window operator ({context.streaming}) does not "
        f"keep global windows {what} yet; run the view on the bounded path (files, or a "
        f"Kafka read without --unbounded; no --streaming), or {instead}",
    )


def _columns(spec: ViewSpec, fns: Sequence[LiveaggCombineFn]) -> tuple[Column, ...]:
    """The columns of the view's rows, in row order (SPEC section 3)."""
    columns = [Column("view", "text")]
    if not spec.window.is_global:  # rows of the global window carry no bounds
        columns += [Column("window_start", TIMESTAMP), Column("window_end", TIMESTAMP)]
    columns += [Column(c, KEY) for c in spec.grouping_cols]
    if spec.grouping_sets is not None:
        columns.append(Column("grouping_set", "bigint"))
    if spec.window.multi_granularity:
        columns.append(Column("granularity", "text"))
    columns += [
        Column(a.output, fn.output_type()) for a, fn in zip(spec.aggregations, fns, strict=True)
    ]
    # Arithmetic over the aggregates: "/" gives floats, so a derived column is a double.
    columns += [Column(d.name, "double") for d in spec.derived]
    columns += [Column("pane_timing", "text"), Column("pane_index", "bigint")]
    return tuple(columns)


def window_fns(spec: ViewSpec) -> list[WindowFn]:
    """One window function per granularity (``window.size`` entries; one for sessions and
    the global window)."""
    w = spec.window
    if w.type == "session":
        if w.gap is None:
            raise ValueError(f"view {spec.name!r}: session window without gap")
        return [WindowFn.session(w.gap.micros)]
    if w.type == "global":
        return [WindowFn.global_window()]
    if w.type == "sliding":
        if w.period is None:
            raise ValueError(f"view {spec.name!r}: sliding window without period")
        return [WindowFn.sliding(size.micros, w.period.micros) for size in w.sizes]
    if w.type == "cumulative":
        if w.step is None:
            raise ValueError(f"view {spec.name!r}: cumulative window without step")
        return [WindowFn.cumulative(size.micros, w.step.micros) for size in w.sizes]
    return [WindowFn.fixed(size.micros) for size in w.sizes]


def granularities(spec: ViewSpec) -> list[str | None]:
    """The ``granularity`` of each of :func:`window_fns`: the size as written when
    ``window.size`` is a list, else None."""
    w = spec.window
    if w.type in ("session", "global"):
        return [None]
    return [size.text if w.multi_granularity else None for size in w.sizes]


def variants(spec: ViewSpec) -> list[Variant]:
    """Granularities crossed with grouping sets, in the order rows carry their index."""
    cols = spec.grouping_cols
    if spec.grouping_sets is None:
        sets: list[tuple[int | None, tuple[int, ...]]] = [(None, tuple(range(len(cols))))]
    else:
        sets = [(i, tuple(cols.index(c) for c in s)) for i, s in enumerate(spec.grouping_sets)]
    out: list[Variant] = []
    for granularity, fn in zip(granularities(spec), window_fns(spec), strict=True):
        for set_index, positions in sets:
            out.append(Variant(len(out), fn, positions, granularity, set_index))
    return out
