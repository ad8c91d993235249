"""Every line is accounted for by the counters, on the streaming path with late data too.

A sliding window with two grouping sets: a message too late for one of its windows is used
(the missed window is counted), one too late for all is a ``too_late`` dead letter once,
whatever the number of variants it travelled in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import apache_beam as beam
import orjson
from apache_beam.metrics.execution import MetricsContainer
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.worker import statesampler
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.counters import CounterFactory
from apache_beam.utils.timestamp import Timestamp

from liveagg.loader import parse_view
from liveagg.pipelines.run import RunReport
from liveagg.transforms import envelope
from liveagg.transforms.plan import ViewPlan, encode_key
from liveagg.transforms.rekey import RekeyAggregate
from liveagg.transforms.streaming import StreamingAggregate, _Route, window_operator
from tests.support.operator_state import Cell, Timers

VIEW = parse_view(
    {
        "name": "s",
        "event_time": {"field": "t", "format": "epoch_s"},
        "grouping_cols": ["k", "g"],
        "grouping_sets": [["k"], ["g"]],
        "window": {"type": "sliding", "size": "2m", "period": "1m"},
        "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "n"}],
    }
)
END = 10_000
W = {0: "1970-01-01T00:00:00Z", 60: "1970-01-01T00:01:00Z"}


def msg(t: int) -> TimestampedValue:
    return TimestampedValue(orjson.dumps({"k": "a", "g": "x", "t": t}).decode(), t)


def _pane(row: dict) -> tuple:
    return (row["k"], row["g"], row["window_start"], row["pane_timing"], row["n"])


def test_late_data_on_the_streaming_path() -> None:
    """Rows and dead letters, through the runner: the message too late for both its windows
    is one dead letter, although it travelled in two variants."""
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([msg(70), TimestampedValue("", 1), TimestampedValue("{", 1)])
        .advance_watermark_to(130)  # [0s, 120s) fires and closes (no allowed lateness)
        .add_elements([msg(100)])  # too late for [0s, 120s) only: used by [60s, 180s)
        .advance_watermark_to(200)  # [60s, 180s) closes
        .add_elements([msg(110)])  # too late for both its windows: a dead letter, once
        .advance_watermark_to(END)
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | stream | StreamingAggregate([VIEW], clock=lambda: 0.0)
        panes = out["views"]["s"] | "Panes" >> beam.Map(_pane)
        letters = out["dead_letters"] | "Letters" >> beam.Map(lambda d: (d["view"], d["reason"]))
        expected = []
        for k, g in (("a", None), (None, "x")):  # one row per grouping set
            expected += [(k, g, W[0], "ON_TIME", 1), (k, g, W[60], "ON_TIME", 2)]
        assert_that(panes, equal_to(expected), label="panes")
        assert_that(letters, equal_to([(None, "not_json"), ("s", "too_late")]), label="letters")


@contextmanager
def counters() -> Iterator[dict[str, int]]:
    """The ``liveagg`` counters incremented inside the block.

    Counted here rather than read from a streaming DirectRunner's result: that runner keeps
    a step's first ``MetricsContainer`` for good (``StateSampler.scoped_state`` caches the
    ``ScopedState`` by name, apache_beam/runners/worker/statesampler.py:158, while
    apache_beam/runners/direct/executor.py:314 makes a container per bundle), so counters of
    a step's later bundles are lost.
    """
    sampler = statesampler.StateSampler("", CounterFactory())
    previous = statesampler.get_current_tracker()
    statesampler.set_current_tracker(sampler)
    container = MetricsContainer("test")
    found: dict[str, int] = {}
    try:
        with sampler.scoped_state("test", "process", metrics_container=container):
            yield found
    finally:
        statesampler.set_current_tracker(previous)
    found.update(
        (key.metric.name, value)
        for key, value in container.get_cumulative().counters.items()
        if key.metric.namespace == "liveagg"
    )


def test_streaming_counters_reconcile_with_late_data() -> None:
    """The same stream, through the router and the operator's methods: every line counted."""
    router = _Route([VIEW])
    router.setup()
    operator = window_operator(VIEW, clock=lambda: 0.0)
    operator.setup()
    cells: dict[tuple, tuple[Cell, Timers]] = {}
    letters: list[tuple[str | None, str]] = []

    def send(*lines: str) -> None:
        router.start_bundle()
        out = [o for line in lines for o in router.process(line)]
        out += list(router.finish_bundle())
        for o in out:
            if o.tag == "dead_letter":  # the router's outputs are windowed values
                letters.append((o.value.value["view"], o.value.value["reason"]))
                continue
            state_key, items = o.value.value
            cell, timers = cells.setdefault(state_key, (Cell(), Timers()))
            for d in operator._process((state_key, items), cell, timers, None):
                letters.append((d.value["view"], d.value["reason"]))

    def advance(seconds: int) -> None:
        for state_key, (cell, timers) in cells.items():
            for tag, due in sorted(timers.due.items(), key=lambda item: item[1]):
                if due <= seconds * 1_000_000 and timers.take(tag, due):
                    now = Timestamp(micros=seconds * 1_000_000)
                    list(operator._on_watermark(state_key, now, tag, cell, timers))

    with counters() as counted:
        send(msg(70).value, "", "{")
        advance(130)
        send(msg(100).value)
        advance(200)
        send(msg(110).value)
    assert letters == [(None, "not_json"), ("s", "too_late")]
    report = RunReport(None)
    for name, value in counted.items():
        parts = name.split("/")
        if len(parts) == 1:
            setattr(report, name, value)
        elif parts[0] in ("used", "late_windows", "filtered"):
            getattr(report, parts[0])[parts[1]] = value
        elif parts[0] == "dead_letter" and len(parts) == 3:
            report.message_dead_letters.setdefault(parts[1], {})[parts[2]] = value
    assert (report.lines_read, report.blank_lines, report.messages) == (5, 1, 3)
    assert report.used == {"s": 2}
    assert report.late_windows == {"s": 4}  # 1 in each variant, then 2 in the second
    assert report.message_dead_letters == {"_input": {"not_json": 1}, "s": {"too_late": 1}}
    assert report.reconcile() == []


def test_reconcile_names_what_does_not_add_up() -> None:
    report = RunReport(
        None,
        lines_read=10,
        blank_lines=1,
        messages=7,
        messages_by_source={"events": 7, "other": 3},
        used={"a": 5, "b": 2},
        filtered={"a": 1},
        message_dead_letters={"_input": {"not_json": 1}, "a": {"too_late": 1}},
        result_dead_letters={"a": {"overflow": 4}},  # rows, not messages: not counted
        view_sources={"a": "events", "b": "other"},
    )
    assert report.reconcile() == [
        "lines_read 10 != blank_lines 1 + messages 7 + input dead letters 1",
        "view b: messages 3 != used 2 + filtered 0 + dead letters 0",
    ]
    assert report.accounting()["views"]["a"] == {
        "messages": 7,
        "used": 5,
        "filtered": 1,
        "dead_letters": {"too_late": 1},
        "late_windows": 0,
        "result_dead_letters": {"overflow": 4},
    }
    assert RunReport(None, lines_read=3, rekey=True).reconcile() == []


def test_level_2_writes_an_overflowed_sum_as_null_with_its_dead_letter() -> None:
    """Two level-1 shards whose sums fit a double each, merged at level 2: the row holds null
    and an ``overflow`` dead letter says so, on the bounded path as on the streaming one."""
    spec = parse_view(
        {
            "name": "totals",
            "event_time": {"field": "ts", "format": "epoch_s"},
            "grouping_cols": ["k"],
            "window": {"size": "1m"},
            "aggregation_info": [
                {"aggregation": "sum", "col_name": "x", "aggregated_col_name": "s"},
                {"aggregation": "count", "aggregated_col_name": "n"},
            ],
        }
    )
    plan = ViewPlan(spec)
    payloads = []
    for shard in ("t/0", "t/1"):
        acc = plan.combine.add_input(plan.combine.create_accumulator(), (1.7e308, 1))
        partial = ("totals", 0, 0, 60_000_000, encode_key(("a",)), shard, 0,
                   plan.combine.encode(acc), {shard: [0, 0]})  # fmt: skip
        payloads.append(orjson.dumps(envelope.envelope(plan, spec.fingerprint(), partial)))
    with TestPipeline() as p:
        out = p | beam.Create(payloads) | RekeyAggregate([spec], streaming=False)
        rows = out["views"]["totals"] | "Rows" >> beam.Map(lambda r: (r["k"], r["s"], r["n"]))
        letters = out["dead_letters"] | "Letters" >> beam.Map(
            lambda d: (d["view"], d["reason"], orjson.loads(d["payload"])["k"])
        )
        assert_that(rows, equal_to([("a", None, 2)]), label="rows")
        assert_that(letters, equal_to([("totals", "overflow", "a")]), label="letters")
