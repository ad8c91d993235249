"""The engine's view of a compiled view: its variants' windows and its aggregator."""

from __future__ import annotations

from liveagg.engine.partials import VariantSpec, ViewAggregator
from liveagg.engine.windows import WindowFn
from liveagg.spec import ViewSpec


def window_fns(spec: ViewSpec) -> list[WindowFn]:
    """One window function per granularity (``window.size`` entries; one for sessions)."""
    w = spec.window
    if w.type == "session":
        if w.gap is None:
            raise ValueError(f"view {spec.name!r}: session window without gap")
        return [WindowFn.session(w.gap.micros)]
    if w.type == "sliding":
        if w.period is None:
            raise ValueError(f"view {spec.name!r}: sliding window without period")
        return [WindowFn.sliding(size.micros, w.period.micros) for size in w.sizes]
    return [WindowFn.fixed(size.micros) for size in w.sizes]


def variants(spec: ViewSpec) -> list[VariantSpec]:
    """Granularities crossed with grouping sets, in the order rows carry their index."""
    cols = spec.grouping_cols
    if spec.grouping_sets is None:
        sets: list[tuple[int | None, tuple[int, ...]]] = [(None, tuple(range(len(cols))))]
    else:
        sets = [(i, tuple(cols.index(c) for c in s)) for i, s in enumerate(spec.grouping_sets)]
    sizes = spec.window.sizes if spec.window.type != "session" else (None,)
    out: list[VariantSpec] = []
    for size, fn in zip(sizes, window_fns(spec), strict=True):
        granularity = size.text if size is not None and spec.window.multi_granularity else None
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
