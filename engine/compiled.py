"""The engine's view of a compiled view: its variants' windows and its aggregator."""

from __future__ import annotations

from liveagg.engine.partials import VariantSpec, ViewAggregator
from liveagg.engine.windows import WindowFn
from liveagg.spec import ViewSpec


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


def variants(spec: ViewSpec) -> list[VariantSpec]:
    """Granularities crossed with grouping sets, in the order rows carry their index."""
    cols = spec.grouping_cols
    if spec.grouping_sets is None:
        sets: list[tuple[int | None, tuple[int, ...]]] = [(None, tuple(range(len(cols))))]
    else:
        sets = [(i, tuple(cols.index(c) for c in s)) for i, s in enumerate(spec.grouping_sets)]
    out: list[VariantSpec] = []
    for granularity, fn in zip(granularities(spec), window_fns(spec), strict=True):
        for set_index, positions in sets:
            out.append(VariantSpec(len(out), fn, positions, granularity, set_index))
    return out


def aggregator_of(plan: object) -> ViewAggregator:
    """The aggregator of a :class:`~liveagg.transforms.plan.ViewPlan`."""
    spec: ViewSpec = plan.spec  # type: ignore[attr-defined]
    fns = plan.fns  # type: ignore[attr-defined]
    return ViewAggregator(
        fns, variants(spec), len(spec.grouping_cols), [fn.needs_event_time for fn in fns]
    )
