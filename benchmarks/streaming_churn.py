"""The streaming window operator on the churn input: its live state with ``state_ttl`` and without.

    python -m benchmarks.streaming_churn --input churn.jsonl --view ttl_1h.json

``liveagg run --streaming`` over files keeps every key to its final row whatever its TTL
(docs/semantics.md, "On the streaming path"): only an unbounded read evicts, and a Flink run
of millions of events takes far longer than the operator's own work. So this process drives
the streaming path's own code, as :mod:`benchmarks.operator_state` does: the router's batches
(bundles of ``--bundle`` lines; 10,000 is the router's ``MAX_BATCHED`` and the Flink runner's
``--max_bundle_size``) go into the window operator's ``_process``, each element encoded and
decoded as it crosses the runner; after each bundle its
event-time timers fire through ``_on_watermark``, in order, until none is due by the
watermark, and its processing-time (EARLY) timers through ``_on_early`` once the clock
passes them. The cells are kept as the SDK's state cache keeps them
(:class:`~benchmarks.operator_state.CachedCell`). The churn input is in event-time order and
a Kafka partition's watermark is the largest event time it has read
(``transforms/kafka/source.py``, ``PartitionWatermark``), so the watermark after a bundle is
its last event time. Left out: the runner's side (gRPC, Flink's state backend).

It prints one JSON object: the events, the rows, and samples every ``--sample-every`` bundles
and at the end of the operator's own ``live_keys/<view>`` counter (read from a metrics
container, as a runner reads it), the bytes the cells hold (the encoded snapshot and deltas
of each, what the runner's state backend would hold) and the resident memory. Its CPU time
and peak memory are measured by the caller (:func:`benchmarks.harness.measure`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from apache_beam.coders import FastPrimitivesCoder
from apache_beam.metrics.execution import MetricsContainer, MetricsEnvironment
from apache_beam.metrics.metricbase import MetricName
from apache_beam.pvalue import TaggedOutput
from apache_beam.runners.worker import statesampler
from apache_beam.utils.counters import CounterFactory
from apache_beam.utils.timestamp import Timestamp

from benchmarks.operator_state import CachedCell
from liveagg.loader import parse_view
from liveagg.spec import ViewSpec
from liveagg.transforms.deadletter import NAMESPACE
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.streaming import MAX_BATCHED, _Route, window_operator
from tests.support.operator_state import Timers


@dataclass
class Sample:
    bundles: int
    events: int
    watermark_us: int
    live_keys: int
    state_bytes: int
    rss_mib: float


@dataclass
class Report:
    view: str
    state_ttl: str | None
    events: int = 0
    rows: int = 0
    timer_firings: int = 0
    #: Rounds of timer firings each watermark advance took (see ``_fire_watermark``).
    timer_rounds: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    #: The latest row of each key, kept only when asked (a test's oracle compares them).
    last_rows: dict[Any, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        del out["last_rows"]
        rounds = out.pop("timer_rounds")
        out["timer_rounds_max"] = max(rounds, default=0)
        out["timer_rounds_mean"] = round(sum(rounds) / len(rounds), 1) if rounds else 0
        out["live_keys_peak"] = max((s.live_keys for s in self.samples), default=0)
        out["state_bytes_peak"] = max((s.state_bytes for s in self.samples), default=0)
        out["live_keys_end"] = self.samples[-1].live_keys if self.samples else 0
        out["state_bytes_end"] = self.samples[-1].state_bytes if self.samples else 0
        return out


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _chunks(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in lines:
        chunk.append(line.rstrip(b"\n"))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def drive(
    view: ViewSpec,
    lines: Iterable[bytes],
    *,
    bundle: int = MAX_BATCHED,
    sample_every: int = 20,
    keep_rows: bool = False,
) -> Report:
    """Run ``lines`` (in event-time order) through the view's router and window operator,
    firing its timers as a runner would (see the module doc)."""
    if view.event_time.format != "epoch_ms":  # the watermark is read from the last line
        raise ValueError(f"view {view.name!r}: event time must be epoch_ms, as churn's is")
    sampler = statesampler.StateSampler("", CounterFactory())
    statesampler.set_current_tracker(sampler)
    scope = sampler.scoped_state("window", "process", metrics_container=MetricsContainer("w"))
    sampler.start()
    try:
        with scope:
            return _drive(view, lines, bundle, sample_every, keep_rows)
    finally:
        sampler.stop()
        statesampler.set_current_tracker(None)


def _drive(
    view: ViewSpec, lines: Iterable[bytes], bundle: int, sample_every: int, keep_rows: bool
) -> Report:
    router = _Route([view])
    # As StreamingAggregate builds it for an unbounded read on Flink: early and eager panes,
    # state_ttl, a watermark per bucket (no floor shared between instances).
    operator = window_operator(
        view, time.time, view.early is not None, shared_floor=False, eager=True, ttl=True
    )
    router.setup()
    operator.setup()
    wire = FastPrimitivesCoder()  # Beam's coder of elements without a type hint
    cells: dict[Any, CachedCell] = {}
    watermark: dict[Any, Timers] = {}
    early: dict[Any, Timers] = {}
    live_keys = MetricsEnvironment.current_container().get_counter(
        MetricName(NAMESPACE, f"live_keys/{view.name}")
    )
    report = Report(view.name, view.state_ttl.text if view.state_ttl else None)
    field_name = view.event_time.field

    def emit(outputs: Iterable[Any]) -> None:
        for out in outputs:
            if isinstance(out, TaggedOutput):
                continue
            report.rows += 1
            if keep_rows:
                report.last_rows[tuple(out[c] for c in view.grouping_cols)] = out

    def sample(bundles: int, wm: int) -> None:
        held = sum(cell.held for cell in cells.values())
        report.samples.append(
            Sample(bundles, report.events, wm, live_keys.get_cumulative(), held, _rss_mib())
        )

    wm = 0
    bundles = 0
    for chunk in _chunks(lines, bundle):
        router.start_bundle()
        routed = [o for line in chunk for o in router.process(line)]
        routed += list(router.finish_bundle())
        for out in routed:
            if out.tag == DEAD_LETTER:
                continue
            # The runner's data plane between the two stages: what the operator holds is what
            # a worker decodes, not the router's own objects (orjson's key bytes, say, which
            # keep a 4 KiB allocation each).
            state_key, items = wire.decode(wire.encode(out.value.value))
            cell = cells.setdefault(state_key, CachedCell())
            emit(
                operator._process(
                    (state_key, items),
                    cell,
                    watermark.setdefault(state_key, Timers()),
                    early.setdefault(state_key, Timers()) if view.early is not None else None,
                )
            )
        report.events += len(chunk)
        bundles += 1
        wm = max(wm, int(json.loads(chunk[-1])[field_name]) * 1000)  # epoch ms -> us
        _fire_watermark(operator, cells, watermark, wm, emit, report)
        now = int(time.time() * 1_000_000)
        for state_key, timers in early.items():
            for tag, due in list(timers.due.items()):
                if due <= now:
                    del timers.due[tag]
                    emit(operator._on_early(state_key, tag, cells[state_key], timers))
        if bundles % sample_every == 0:
            sample(bundles, wm)
    sample(bundles, wm)
    return report


def _fire_watermark(
    operator: Any,
    cells: dict[Any, CachedCell],
    watermark: dict[Any, Timers],
    wm: int,
    emit: Any,
    report: Report,
) -> None:
    """Every event-time timer due by ``wm``, in rounds: a round fires each timer due, earliest
    first, and a timer a callback sets at or before ``wm`` fires in the next round. So does
    Beam's Flink runner: after a bundle that set a timer already due, it processes the same
    watermark again (``ExecutableStageDoFnOperator.finishBundleCallback``, lines 879-884 of
    the 2.62 source, read from the class's line table), one bundle per round."""
    rounds = 0
    while True:
        due = sorted(
            (at, state_key, tag)
            for state_key, timers in watermark.items()
            for tag, at in timers.due.items()
            if at <= wm
        )
        if not due:
            break
        rounds += 1
        for at, state_key, tag in due:
            timers = watermark[state_key]
            del timers.due[tag]
            report.timer_firings += 1
            emit(
                operator._on_watermark(
                    state_key, Timestamp(micros=at), tag, cells[state_key], timers
                )
            )
    report.timer_rounds.append(rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="churn JSON Lines, in order")
    parser.add_argument("--view", type=Path, required=True, help="the view file")
    parser.add_argument("--bundle", type=int, default=MAX_BATCHED, help="lines per bundle")
    parser.add_argument("--sample-every", type=int, default=20, help="bundles between samples")
    args = parser.parse_args(argv)
    view = parse_view(json.loads(args.view.read_text()))
    with args.input.open("rb") as lines:
        report = drive(view, lines, bundle=args.bundle, sample_every=args.sample_every)
    json.dump(report.summary(), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
