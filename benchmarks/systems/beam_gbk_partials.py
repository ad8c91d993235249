"""The streaming path with Beam's windowed ``GroupByKey`` in place of liveagg's window operator.

An experiment for ``liveagg_flink --pipeline beam-gbk`` (docs/performance.md, "liveagg's
operator or Beam's GroupByKey"): the same Kafka read and the same router
(:class:`~liveagg.transforms.streaming._Route`), which decodes and pre-aggregates each bundle
with the engine; then each of its items, a key's partial accumulator for one window, becomes
the element ``((variant, grouping key), encoded accumulator)`` stamped with the window's
start, and Beam takes over: ``WindowInto(FixedWindows)`` with liveagg's trigger
(``AfterWatermark(early=AfterProcessingTime, late=AfterCount(1))``, accumulating, the view's
allowed lateness), ``CombinePerKey`` merging the partials, and the view's rows
(``ViewPlan.row``) from each pane's window and ``PaneInfo`` to the same sinks.

On Flink the ``GroupByKey`` runs in the JVM (``WindowDoFnOperator`` with
``SystemReduceFn.buffering``: every partial of a key and window is kept in Flink state until
the window is collected) and the combine runs in the SDK worker after it, once per pane. The
router's too-late candidates are dropped here: Beam drops data for an expired window itself,
counting it only in ``droppedDueToLateness``; that loss is the experiment's known defect.

Only fixed windows (any granularities and grouping sets): it is the benchmark's shape.

    python -m benchmarks.systems.beam_gbk_partials run --views ... (``liveagg run``'s options)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from liveagg.engine import windows as book
from liveagg.spec import ViewSpec
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.plan import ViewPlan, view_tag
from liveagg.transforms.streaming import _Route

METRICS = "beam_gbk_partials"
_TIMING = {
    PaneInfoTiming.EARLY: book.EARLY,
    PaneInfoTiming.ON_TIME: book.ON_TIME,
    PaneInfoTiming.LATE: book.LATE,
}


class _Partials(beam.DoFn):
    """A router element's items of some variants as ``((variant, key), accumulator)``,
    each at its window's start; the too-late candidates stay behind."""

    def __init__(self, variants: frozenset[int]) -> None:
        self._variants = variants

    def process(self, element: tuple[tuple, list]) -> Iterator[Any]:
        state_key, items = element
        variant = state_key[1]
        if variant not in self._variants:
            return
        for group, start, _end, data, _candidates in items:
            yield window.TimestampedValue(((variant, group), data), Timestamp(micros=start))


class _MergePartials(beam.CombineFn):
    """Merges encoded partial accumulators with the view's own combine."""

    def __init__(self, spec: ViewSpec) -> None:
        self._spec = spec
        self._combine: Any = None

    def setup(self) -> None:
        self._combine = ViewPlan(self._spec).combine

    def create_accumulator(self) -> Any:
        return None

    def add_input(self, accumulator: Any, data: bytes) -> Any:
        return self.add_inputs(accumulator, [data])

    def add_inputs(self, accumulator: Any, batch: Any) -> Any:
        accs = [self._combine.decode(data) for data in batch]
        return self.merge_accumulators([accumulator, *accs])

    def merge_accumulators(self, accumulators: Any) -> Any:
        accs = [acc for acc in accumulators if acc is not None]
        return self._combine.merge_accumulators(accs) if accs else None

    def extract_output(self, accumulator: Any) -> tuple[Any, ...] | None:
        """None for an empty pane, which has no row (see :class:`_Rows`)."""
        return None if accumulator is None else self._combine.extract_output(accumulator)


class _Rows(beam.DoFn):
    """A pane's output as the view's row: window and pane from Beam's windowed value.

    Panes are counted in ``panes/<view>/<timing>/<last|more>/<row|empty>``. A pane with no
    partials gives no row: Beam
    fires an ON_TIME pane and a window's last pane even when empty, as Python's
    ``WindowInto`` asks (``OnTimeBehavior.FIRE_ALWAYS``, ``ClosingBehavior.EMIT_ALWAYS``;
    ``ReduceFnRunner.needToEmit``).
    """

    def __init__(self, spec: ViewSpec) -> None:
        self._spec = spec

    def setup(self) -> None:
        self._plan = ViewPlan(self._spec)

    def process(
        self,
        element: tuple[tuple[int, bytes], tuple[Any, ...]],
        win: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> Iterator[Any]:
        (variant, group), outputs = element
        timing = _TIMING[pane.timing]
        last = "last" if pane.is_last else "more"
        kind = "empty" if outputs is None else "row"
        Metrics.counter(METRICS, f"panes/{self._spec.name}/{timing}/{last}/{kind}").inc()
        if outputs is None:
            return
        plan = self._plan
        letters: list[dict[str, Any]] = []
        start, end = win.start.micros, win.end.micros
        yield plan.row(
            plan.variants[variant], start, end, group, outputs, timing, pane.index, True, letters
        )
        for letter in letters:
            yield TaggedOutput(DEAD_LETTER, letter)


class GbkAggregate(beam.PTransform):
    """:class:`~liveagg.transforms.streaming.StreamingAggregate`'s interface, aggregated by
    Beam's windowed ``GroupByKey``: ``{"views": {name: rows}, "dead_letters": ...}``."""

    def __init__(
        self,
        specs: list[ViewSpec],
        early_panes: bool = True,
        partials: bool = False,
        **_: Any,
    ) -> None:
        super().__init__()
        if partials:
            raise ValueError("two-level runs are not part of this experiment")
        self._specs = specs
        self._early_panes = early_panes

    def expand(self, messages: beam.PCollection) -> dict[str, Any]:
        names = [view_tag(s.name) for s in self._specs]
        routed = messages | "Route" >> beam.ParDo(_Route(self._specs)).with_outputs(
            DEAD_LETTER, *names
        )
        views, dead = {}, [routed[DEAD_LETTER]]
        everywhere = window.GlobalWindows()
        for spec in self._specs:
            plan = ViewPlan(spec)  # read here for its variants; the DoFns build their own
            if spec.window.type != "fixed" or spec.hot_key_fanout is not None:
                raise ValueError(f"{spec.name}: only fixed windows without hot_key_fanout")
            late = trigger.AfterCount(1)
            early = (
                trigger.AfterProcessingTime(spec.early.micros / 1e6)
                if self._early_panes and spec.early is not None
                else None
            )
            by_size: dict[int, set[int]] = {}
            for variant in plan.variants:
                by_size.setdefault(variant.fixed_us, set()).add(variant.index)
            parts = []
            for size_us, variants in sorted(by_size.items()):
                label = f"{spec.name}/{size_us // 1_000_000}s"
                rows = (
                    routed[view_tag(spec.name)]
                    | f"{label}/Partials" >> beam.ParDo(_Partials(frozenset(variants)))
                    | f"{label}/Window"
                    >> beam.WindowInto(
                        window.FixedWindows(Duration(micros=size_us)),
                        trigger=trigger.AfterWatermark(early=early, late=late),
                        accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                        allowed_lateness=Duration(micros=spec.allowed_lateness.micros),
                    )
                    | f"{label}/Combine" >> beam.CombinePerKey(_MergePartials(spec))
                    | f"{label}/Rows"
                    >> beam.ParDo(_Rows(spec)).with_outputs(DEAD_LETTER, main="rows")
                )
                # liveagg's operator gives its rows in the global window, as the sinks expect.
                parts.append(
                    rows.rows | f"{label}/Global" >> beam.WindowInto(window.GlobalWindows())
                )
                dead.append(rows[DEAD_LETTER] | f"{label}/Letters" >> beam.WindowInto(everywhere))
            if len(parts) > 1:
                parts = [tuple(parts) | f"{spec.name}/Rows" >> beam.Flatten()]
            views[spec.name] = parts[0]
        dead_letters = tuple(dead) | "DeadLetters" >> beam.Flatten()
        return {"views": views, "dead_letters": dead_letters}


def main(argv: Sequence[str] | None = None) -> int:
    """``liveagg`` with :class:`GbkAggregate` as the streaming path of every source."""
    from liveagg import cli
    from liveagg.pipelines import compile as compiler

    compiler.StreamingAggregate = GbkAggregate  # type: ignore[misc]
    return cli.main(argv)


if __name__ == "__main__":
    # Imported by its module name, so that the pipeline pickles this module's classes by
    # reference (SDK workers import them) rather than as __main__'s.
    from benchmarks.systems import beam_gbk_partials

    sys.exit(beam_gbk_partials.main())
