"""The streaming window operator on the churn input: its live state with ``state_ttl`` and without.

    python -m benchmarks.streaming_churn --input churn.jsonl --view ttl_1h.json

The same drive measures where the streaming path's time goes, per stage, for several views
read from one Kafka topic (docs/performance.md, Flink, finding 19)::

    python -m benchmarks.streaming_churn --input events-300000.jsonl \
        --view benchmarks/views/basic --bundle 2500 --kafka --close

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
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.metrics.execution import MetricsEnvironment
from apache_beam.metrics.metricbase import MetricName
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from benchmarks.operator_state import CachedCell
from liveagg.loader import load_views
from liveagg.spec import ViewSpec
from liveagg.transforms import eventtime
from liveagg.transforms.deadletter import NAMESPACE
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.sources import KafkaRecords
from liveagg.transforms.streaming import MAX_BATCHED, _Route, window_operator
from tests.support.operator_state import Timers, step_metrics


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
    #: CPU seconds of this process per stage: route, wire, operator, timers.
    stages_cpu_s: dict[str, float] = field(default_factory=dict)
    #: Rounds of timer firings each watermark advance took (see ``_fire_watermark``).
    timer_rounds: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    #: The latest row of each (view, window start, *key), kept only when asked (a test's
    #: oracle compares them).
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
    return drive_views([view], lines, bundle=bundle, sample_every=sample_every, keep_rows=keep_rows)


def drive_views(
    views: Sequence[ViewSpec],
    lines: Iterable[bytes],
    *,
    bundle: int = MAX_BATCHED,
    sample_every: int = 20,
    keep_rows: bool = False,
    kafka: bool = False,
    close: bool = False,
) -> Report:
    """:func:`drive` for several views through one router, as a run reads them from one
    source. ``kafka``: a bundle's messages come as the Kafka read hands them on
    (``ReadPartitions``: one :class:`KafkaRecords` with their partition, offsets and the
    partition's watermark when they were read, here the watermark after the bundle before),
    so the router carries payloads only for messages that may be late; without, each message
    is an element of its own and any may be late, as from a source that stamps no
    watermark.
    ``keep_rows``: the latest row of each (view, window start, *grouping values), the
    window start None for a global window's rows, which carry none. ``close``: at
    the end the watermark passes every window, as a job's source reaches its end."""
    with step_metrics("window"):
        return _drive(list(views), lines, bundle, sample_every, keep_rows, kafka, close)


def _drive(
    views: list[ViewSpec],
    lines: Iterable[bytes],
    bundle: int,
    sample_every: int,
    keep_rows: bool,
    kafka: bool,
    close: bool,
) -> Report:
    router = _Route(views)
    # As StreamingAggregate builds it for an unbounded read on Flink: early and eager panes,
    # state_ttl, a watermark per bucket (no floor shared between instances).
    operators = {
        view.name: window_operator(
            view, time.time, view.early is not None, shared_floor=False, eager=True, ttl=True
        )
        for view in views
    }
    timed_early = {view.name for view in views if view.early is not None}
    grouping = {view.name: view.grouping_cols for view in views}
    router.setup()
    for operator in operators.values():
        operator.setup()
    wire = FastPrimitivesCoder()  # Beam's coder of elements without a type hint
    cells: dict[Any, CachedCell] = {}
    watermark: dict[Any, Timers] = {}
    early: dict[Any, Timers] = {}
    container = MetricsEnvironment.current_container()
    live_keys = [
        container.get_counter(MetricName(NAMESPACE, f"live_keys/{view.name}")) for view in views
    ]
    report = Report(
        ",".join(view.name for view in views),
        views[0].state_ttl.text if len(views) == 1 and views[0].state_ttl else None,
    )
    event_time = views[0].event_time
    parse = eventtime.parser(event_time.field, event_time.format)
    stages = report.stages_cpu_s
    clock = time.process_time

    def emit(outputs: Iterable[Any]) -> None:
        for out in outputs:
            if isinstance(out, TaggedOutput):
                continue
            report.rows += 1
            if keep_rows:
                view = out["view"]
                key = tuple(out[c] for c in grouping[view])
                report.last_rows[(view, out.get("window_start"), *key)] = out

    def sample(bundles: int, wm: int) -> None:
        held = sum(cell.held for cell in cells.values())
        live = sum(counter.get_cumulative() for counter in live_keys)
        report.samples.append(Sample(bundles, report.events, wm, live, held, _rss_mib()))

    def timed(stage: str, began: float) -> float:
        now = clock()
        stages[stage] = stages.get(stage, 0.0) + now - began
        return now

    wm = 0
    bundles = 0
    for chunk in _chunks(lines, bundle):
        began = clock()
        router.start_bundle()
        if kafka:
            first = report.events
            offsets = list(range(first, first + len(chunk)))
            stamps: list[int | None] = [None] * len(chunk)
            messages: list[Any] = [KafkaRecords("events", 0, offsets, stamps, chunk, wm)]
        else:
            messages = chunk
        routed = [o for message in messages for o in router.process(message)]
        routed += list(router.finish_bundle())
        began = timed("route", began)
        # The runner's data plane between the two stages: what the operator holds is what
        # a worker decodes, not the router's own objects (orjson's key bytes, say, which
        # keep a 4 KiB allocation each).
        crossed = [
            wire.decode(wire.encode(out.value.value)) for out in routed if out.tag != DEAD_LETTER
        ]
        began = timed("wire", began)
        for state_key, items in crossed:
            cell = cells.setdefault(state_key, CachedCell())
            operator = operators[state_key[0]]
            emit(
                operator._process(
                    (state_key, items),
                    cell,
                    watermark.setdefault(state_key, Timers()),
                    early.setdefault(state_key, Timers()) if state_key[0] in timed_early else None,
                )
            )
        began = timed("operator", began)
        report.events += len(chunk)
        bundles += 1
        # A Kafka partition's watermark is the largest event time it has read (the module
        # doc); one partition here.
        wm = max(wm, parse(orjson.loads(chunk[-1])[event_time.field]))
        _fire_watermark(operators, cells, watermark, wm, emit, report)
        now = int(time.time() * 1_000_000)
        for state_key, timers in early.items():
            for tag, due in list(timers.due.items()):
                if due <= now:
                    del timers.due[tag]
                    emit(
                        operators[state_key[0]]._on_early(state_key, tag, cells[state_key], timers)
                    )
        timed("timers", began)
        if bundles % sample_every == 0:
            sample(bundles, wm)
    if close:
        began = clock()
        wm = MAX_TIMESTAMP.micros
        _fire_watermark(operators, cells, watermark, wm, emit, report)
        timed("timers", began)
    sample(bundles, wm)
    return report


def _fire_watermark(
    operators: dict[str, Any],
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
            if not watermark[state_key].take(tag, at):
                continue  # set again, or cleared, by a firing of this round
            timers = watermark[state_key]
            report.timer_firings += 1
            emit(
                operators[state_key[0]]._on_watermark(
                    state_key, Timestamp(micros=at), tag, cells[state_key], timers
                )
            )
    report.timer_rounds.append(rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="JSON Lines, in order")
    parser.add_argument(
        "--view", type=Path, required=True, action="append", help="a view file or folder"
    )
    parser.add_argument("--events", type=int, help="the first lines only")
    parser.add_argument("--bundle", type=int, default=MAX_BATCHED, help="lines per bundle")
    parser.add_argument("--sample-every", type=int, default=20, help="bundles between samples")
    parser.add_argument(
        "--kafka", action="store_true", help="messages as the Kafka read hands them on"
    )
    parser.add_argument("--close", action="store_true", help="close every window at the end")
    args = parser.parse_args(argv)
    views = load_views(args.view)
    with args.input.open("rb") as f:
        lines = itertools.islice(f, args.events)
        report = drive_views(
            views,
            lines,
            bundle=args.bundle,
            sample_every=args.sample_every,
            kafka=args.kafka,
            close=args.close,
        )
    json.dump(report.summary(), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
