"""The same views as plain Beam: ``Map`` -> ``WindowInto`` -> ``CombinePerKey`` per view.

One branch per view over one read, Beam's own combiners (``CountCombineFn``,
``SumCombineFn``, ``MeanCombineFn``, ``ApproximateUniqueCombineFn`` for count_distinct) in a
``TupleCombineFn``, rows written as JSON Lines. No dead letters, no validation: the floor a
hand-written Beam job reaches on the DirectRunner.

    python -m benchmarks.systems.beam_plain VIEWS_DIR EVENTS.jsonl OUT_DIR
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import combiners, cy_combiners, window
from apache_beam.transforms.stats import ApproximateUniqueCombineFn

from benchmarks.harness import PYTHON, Result, measure
from benchmarks.systems import Context
from benchmarks.systems._views import PlainView, plain_only, plain_views

#: What this baseline can compute; the rich and cube sets need more (see ``supports``).
KINDS = {"count", "sum", "mean", "count_distinct"}


def _combine_fn(kind: str) -> beam.CombineFn:
    if kind == "count":
        return combiners.CountCombineFn()
    if kind == "sum":
        return cy_combiners.SumInt64Fn()
    if kind == "mean":
        return combiners.MeanCombineFn()
    if kind == "count_distinct":
        # Beam's estimator for a relative error of 2% (liveagg's lg_k=12 HLL is ~1.6%).
        return ApproximateUniqueCombineFn(2500, beam.coders.StrUtf8Coder())
    raise ValueError(f"no plain Beam combiner for {kind!r}")


def _timestamped(msg: dict) -> Any:
    ts = datetime.fromisoformat(msg["ts"]).timestamp()
    return window.TimestampedValue(msg, ts)


class _Format(beam.DoFn):
    def __init__(self, view: PlainView) -> None:
        self._view = view

    def process(self, kv: Any, w: Any = beam.DoFn.WindowParam) -> Any:
        key, values = kv
        row = {"window_start": w.start.to_utc_datetime().isoformat() + "Z"}
        row.update(zip(self._view.group, key, strict=True))
        row.update(zip((a.output for a in self._view.aggregations), values, strict=True))
        yield orjson.dumps(row).decode()


def _branch(messages: beam.PCollection, view: PlainView, out: Path) -> None:
    aggs = view.aggregations
    fn = combiners.TupleCombineFn(*(_combine_fn(a.kind) for a in aggs))
    group = view.group
    columns = [a.column for a in aggs]
    (
        messages
        | f"{view.name}/KV"
        >> beam.Map(
            lambda m: (
                tuple(m[g] for g in group),
                tuple(1 if c is None else m[c] for c in columns),
            )
        )
        | f"{view.name}/Window" >> beam.WindowInto(window.FixedWindows(view.window_s))
        | f"{view.name}/Combine" >> beam.CombinePerKey(fn)
        | f"{view.name}/Format" >> beam.ParDo(_Format(view))
        | f"{view.name}/Write" >> beam.io.WriteToText(str(out / view.name / "part"))
    )


def main(argv: list[str] | None = None) -> None:
    views_dir, dataset, out = (Path(a) for a in (argv or sys.argv[1:]))
    options = PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    with beam.Pipeline(options=options) as pipeline:
        messages = (
            pipeline
            | "Read" >> beam.io.ReadFromText(str(dataset))
            | "Parse" >> beam.Map(orjson.loads)
            | "Time" >> beam.Map(_timestamped)
        )
        for view in plain_views(views_dir):
            _branch(messages, view, out)


def supports(views: Path) -> str | None:
    """Why this baseline cannot compute ``views`` (``None`` when it can).

    Quantiles, top-k, histograms, exact distinct counts, grouping sets and granularities would
    each need a hand-written combiner or branch, and at about 4,000 events per CPU-second on
    the basic views a million events would take an hour: the rich and cube sets skip it.
    """
    return plain_only(views, KINDS)


def run(ctx: Context) -> Result:
    out = ctx.scratch("beam")
    m = measure(
        [PYTHON, "-m", "benchmarks.systems.beam_plain", str(ctx.views), str(ctx.dataset), str(out)]
    )
    rows = {
        v.name: sum(1 for f in out.glob(f"{v.name}/part*") for _ in f.open("rb"))
        for v in plain_views(ctx.views)
    }
    return Result("beam-plain", ctx.events, m.wall_s, m.cpu_s, m.peak_rss_mb, rows, output=str(out))


if __name__ == "__main__":
    main()
