"""Plain Beam and liveagg side by side on one TestStream, pane by pane.

:func:`run` sends one stream of actions (bundles of elements, watermark advances,
processing-time advances) through two branches of one pipeline:

* plain Beam: ``WindowInto(window_fn, trigger=AfterWatermark(early=AfterProcessingTime(e),
  late=AfterCount(1)), accumulation_mode=ACCUMULATING, allowed_lateness=L)``,
  ``CombinePerKey(sum)`` and a DoFn that records each pane's window and ``PaneInfo``;
* liveagg: :class:`~liveagg.transforms.streaming.StreamingAggregate` over views that sum the
  same values; its rows and dead letters are recorded.

Each element's value is ``2 ** ident``, ``ident`` its position among its key's elements, so
that a pane's sum is the exact set of elements it holds, in both branches.
:func:`compare` then names every difference by its cause.

Both branches run on Beam's Python DirectRunner, the only local runner that executes a
TestStream: ``SwitchingDirectRunner`` picks ``BundleBasedDirectRunner`` for it
(apache_beam/runners/direct/direct_runner.py: ``_PrismRunnerSupportVisitor.visit_transform``
and ``_FnApiRunnerSupportVisitor.visit_transform`` reject ``TestStream``). That runner reads
the stream's next event only once no work is left and no timer is due
(runners/direct/executor.py, ``_MonitorTask._add_work_if_necessary``), so a marker that
opens each step (the first element of a bundle, else an element of its own) is recorded
after every pane of the step before: each pane carries the step that caused it.

Processing time is the runner's ``TestClock``, which starts at 0 (runners/direct/clock.py)
and moves only with ``advance_processing_time``. liveagg reads processing time from the
``clock`` it is given: the markers set :class:`StreamClock` to the TestClock's time.

Beam's trigger driver passes a processing-time timer's own timestamp as the watermark to
``AfterWatermark.should_fire`` (transforms/trigger.py, ``GeneralTriggerDriver.process_timer``:
``self.trigger_fn.should_fire(time_domain, timestamp, window, context)``), so a processing
time past a window's end would read as the watermark having passed it. Generated streams keep
event times at :data:`BASE` seconds and more, far above any processing time they reach.
"""

from __future__ import annotations

import itertools
import json
import re
import traceback
from collections import defaultdict
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import trigger, window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from liveagg.loader import parse_view
from liveagg.spec import ViewSpec
from liveagg.transforms.streaming import StreamingAggregate

from .oracle import parse_instant

#: Event times of generated streams start here (seconds): far above any processing time.
BASE = 100_000
#: The watermark every stream ends at, before infinity, so that every window fires and
#: expires while the watermark is finite.
END = BASE + 100_000
#: Processing time added at the end, so that no processing-time timer is left: the
#: DirectRunner does not stop while one is (executor.py, ``_MonitorTask._should_shutdown``).
DRAIN_CLOCK = 10_000

Window = tuple[int, int]  # [start, end) in microseconds
Pair = tuple[str, Window]  # (key, window)
_NEVER = -(2**62)  # before any watermark or timer


@dataclass(frozen=True)
class Windowing:
    """One windowing and trigger setup, as a Beam ``WindowInto`` and as a liveagg view.

    Durations are whole seconds; ``early`` is the processing-time delay of EARLY panes.
    """

    name: str
    kind: str  # "fixed", "sliding" or "session"
    size: int = 0
    period: int = 0
    gap: int = 0
    lateness: int = 0
    early: int | None = None

    def window_fn(self) -> window.WindowFn:
        if self.kind == "fixed":
            return window.FixedWindows(self.size)
        if self.kind == "sliding":
            return window.SlidingWindows(self.size, self.period)
        return window.Sessions(self.gap)

    def trigger(self) -> trigger.AfterWatermark:
        early = None if self.early is None else trigger.AfterProcessingTime(self.early)
        return trigger.AfterWatermark(early=early, late=trigger.AfterCount(1))

    def view(self) -> ViewSpec:
        spec: dict[str, Any] = {"type": self.kind}
        if self.kind == "session":
            spec["gap"] = f"{self.gap}s"
        else:
            spec["size"] = f"{self.size}s"
        if self.kind == "sliding":
            spec["period"] = f"{self.period}s"
        obj: dict[str, Any] = {
            "name": self.name,
            "event_time": {"field": "t", "format": "epoch_ms"},
            "grouping_cols": ["k"],
            "window": spec,
            "allowed_lateness": f"{self.lateness}s",
            "aggregation_info": [
                {"aggregation": "count", "aggregated_col_name": "n"},
                {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "total"},
            ],
        }
        if self.early is not None:
            obj["emit"] = {"early": f"{self.early}s"}
        return parse_view(obj)

    def windows(self, t_us: int) -> list[Window]:
        """The windows Beam assigns an element to (for sessions, its proto-session)."""
        ctx = window.WindowFn.AssignContext(Timestamp(micros=t_us))
        return sorted((w.start.micros, w.end.micros) for w in self.window_fn().assign(ctx))


# What a stream does: ("elements", [(key, seconds), ...]) sends one bundle,
# ("watermark", seconds) advances the watermark, ("clock", seconds) processing time.
Action = tuple[str, Any]


@dataclass(frozen=True)
class Element:
    key: str
    ident: int  # its value is 2 ** ident; unique per key
    time_us: int
    step: int  # the step that sent it
    watermark_us: int  # the watermark when it was sent
    clock: float  # processing time when it was sent

    def __str__(self) -> str:
        return f"{self.key}#{self.ident} at {_secs(self.time_us)} (step {self.step})"


@dataclass(frozen=True)
class Stream:
    """A stream's steps (the actions, then the end: :func:`_with_end`) and what they send."""

    steps: list[Action]
    elements: list[Element]
    clocks: list[float]  # processing time after each step
    watermarks: list[int]  # the watermark (µs) after each step


def plan(actions: Iterable[Action]) -> Stream:
    steps = list(_with_end(actions))
    elements: list[Element] = []
    clocks: list[float] = []
    watermarks: list[int] = []
    idents: dict[str, int] = defaultdict(int)
    wm, now = _NEVER, 0.0
    for step, (kind, arg) in enumerate(steps):
        if kind == "elements":
            for key, seconds in arg:
                elements.append(Element(key, idents[key], _us(seconds), step, wm, now))
                idents[key] += 1
        elif kind == "watermark":
            if _us(arg) <= wm:
                raise ValueError(f"step {step}: the watermark must advance, to {arg}")
            wm = _us(arg)
        elif kind == "clock":
            now += arg
        elif kind != "infinity":
            raise ValueError(f"step {step}: unknown action {kind!r}")
        clocks.append(now)
        watermarks.append(wm)
    return Stream(steps, elements, clocks, watermarks)


def _with_end(actions: Iterable[Action]) -> Iterator[Action]:
    """The actions, then: every window fires and expires, no processing-time timer is left."""
    yield from actions
    yield ("watermark", END)
    yield ("clock", DRAIN_CLOCK)
    yield ("infinity", None)


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _secs(us: int) -> str:
    return f"{us / 1e6 - BASE:g}" if us > BASE * 500_000 else f"{us / 1e6:g}"


@dataclass(frozen=True)
class Pane:
    key: str
    window: Window
    timing: str  # EARLY, ON_TIME or LATE
    index: int
    value: int  # the sum of 2 ** ident over the pane's elements
    step: int  # the step that caused it

    @property
    def idents(self) -> frozenset[int]:
        return frozenset(i for i in range(self.value.bit_length()) if self.value >> i & 1)


@dataclass
class Outcome:
    """One view's panes from both branches, and liveagg's dead letters."""

    beam: list[Pane] = field(default_factory=list)
    liveagg: list[Pane] = field(default_factory=list)
    too_late: set[tuple[str, int]] = field(default_factory=set)  # (key, ident)
    other_dead: list[dict] = field(default_factory=list)


@dataclass
class Run:
    stream: Stream
    views: dict[str, Outcome]


# What the recording DoFns write, per run: the pipeline runs in this process, so they share
# these with the caller. Keyed by run id, so that runs never see each other's records.
_LOG: dict[str, list[tuple]] = defaultdict(list)
_NOW: dict[str, float] = {}
_RUNS = itertools.count()


class StreamClock:
    """Processing time as the TestStream set it: the runner's TestClock, as of the last
    marker (see the module doc)."""

    def __init__(self, run_id: str) -> None:
        self._run = run_id

    def __call__(self) -> float:
        return _NOW.get(self._run, 0.0)


class _Split(beam.DoFn):
    """Messages to the main output; markers recorded, and the stream clock set."""

    def __init__(self, run_id: str) -> None:
        self._run = run_id

    def process(self, line: str) -> Iterator[str]:
        kind, *rest = json.loads(line)
        if kind == "msg":
            yield rest[0]
        else:
            step, now = rest
            _NOW[self._run] = now
            _LOG[self._run].append(("step", step))


class _RecordBeam(beam.DoFn):
    def __init__(self, run_id: str, view: str) -> None:
        self._run, self._view = run_id, view

    def process(
        self,
        kv: tuple[str, int],
        w: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> None:
        timing = PaneInfoTiming.to_string(pane.timing)
        bounds = (w.start.micros, w.end.micros)
        _LOG[self._run].append(("beam", self._view, kv[0], bounds, timing, pane.index, kv[1]))


class _RecordRow(beam.DoFn):
    def __init__(self, run_id: str, view: str) -> None:
        self._run, self._view = run_id, view

    def process(self, row: dict) -> None:
        bounds = (parse_instant(row["window_start"]), parse_instant(row["window_end"]))
        if row["n"] != row["total"].bit_count():
            raise AssertionError(f"count and sum disagree: {row}")
        entry = (row["k"], bounds, row["pane_timing"], row["pane_index"], row["total"])
        _LOG[self._run].append(("liveagg", self._view, *entry))


class _RecordDead(beam.DoFn):
    def __init__(self, run_id: str) -> None:
        self._run = run_id

    def process(self, letter: dict) -> None:
        _LOG[self._run].append(("dead", letter))


def _to_beam(line: str) -> TimestampedValue:
    msg = json.loads(line)
    return TimestampedValue((msg["k"], msg["v"]), Timestamp(micros=msg["t"] * 1000))


def run(
    actions: Iterable[Action],
    windowings: Sequence[Windowing],
    branches: Container[str] = ("beam", "liveagg"),
) -> Run:
    """Run the stream through plain Beam and liveagg in one pipeline; return what each did.

    ``branches`` leaves one out, to see which of them a problem comes from.
    """
    run_id = f"run{next(_RUNS)}"
    stream = plan(actions)
    test_stream = TestStream(coder=StrUtf8Coder()).with_output_types(str)
    sent = iter(stream.elements)
    for step, (kind, arg) in enumerate(stream.steps):
        before = stream.clocks[step - 1] if step else 0.0
        marker = json.dumps(["step", step, before])
        if kind == "elements":  # the marker opens the bundle
            bundle = [marker]
            for e in itertools.islice(sent, len(arg)):
                msg = json.dumps({"k": e.key, "t": e.time_us // 1000, "v": 2**e.ident})
                value = json.dumps(["msg", msg])
                bundle.append(TimestampedValue(value, Timestamp(micros=e.time_us)))
            test_stream.add_elements(bundle)
            continue
        test_stream.add_elements([marker])
        if kind == "watermark":
            test_stream.advance_watermark_to(Timestamp(micros=stream.watermarks[step]))
        elif kind == "clock":
            test_stream.advance_processing_time(arg)
        else:
            test_stream.advance_watermark_to_infinity()

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(options=options)
    messages = p | test_stream | "Split" >> beam.ParDo(_Split(run_id))
    keyed = messages | "ToBeam" >> beam.Map(_to_beam)
    for w in windowings if "beam" in branches else ():
        _ = (
            keyed
            | f"{w.name}/Window"
            >> beam.WindowInto(
                w.window_fn(),
                trigger=w.trigger(),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=w.lateness,
            )
            | f"{w.name}/Sum" >> beam.CombinePerKey(sum)
            | f"{w.name}/Record" >> beam.ParDo(_RecordBeam(run_id, w.name))
        )
    if "liveagg" in branches:
        views = [w.view() for w in windowings]
        out = messages | StreamingAggregate(views, StreamClock(run_id))
        for w in windowings:
            rows = out["views"][w.name]
            _ = rows | f"{w.name}/Rows" >> beam.ParDo(_RecordRow(run_id, w.name))
        _ = out["dead_letters"] | "Dead" >> beam.ParDo(_RecordDead(run_id))
    try:
        try:
            p.run().wait_until_finish()
        except TypeError as e:
            if not _stalled(e):
                raise
            if "beam" in branches and "liveagg" in branches:
                run(actions, windowings, branches=("liveagg",))  # raises if liveagg stalls
                raise BeamStalled("Beam's branch stalls on this stream") from e
            raise AssertionError(f"the pipeline stalls with only {list(branches)}") from e
        log = list(_LOG[run_id])
    finally:
        _LOG.pop(run_id, None)
        _NOW.pop(run_id, None)
    return Run(stream, _outcomes(log, windowings))


class BeamStalled(Exception):
    """Beam's DirectRunner stopped with watermark holds left (liveagg alone finishes).

    Beam's Python trigger driver leaks watermark holds around merged sessions:
    ``GeneralTriggerDriver._output`` keeps a window's hold while ``output_watermark <
    window.end and self.trigger_fn.has_ontime_pane()`` (transforms/trigger.py), a late
    session (a merge that took in a session the watermark had passed, or a new session
    while the output watermark is held below its end) has no end-of-window timer to release
    it (``AfterWatermark.on_element`` and ``on_merge`` set none when ``is_late``), and the
    executor then finds no work with the watermark incomplete.
    """


def _stalled(error: TypeError) -> bool:
    """Whether ``wait_until_finish`` failed on the executor's stall report.

    The executor reports a stall as a tuple, ``(Exception('Monitor task detected a pipeline
    stall.'), None, None)`` (runners/direct/executor.py, ``_MonitorTask._should_shutdown``),
    and ``_ExecutorServiceParallelExecutor.await_completion`` raises it as is: Python refuses
    to raise a tuple, with this TypeError.
    """
    frames = traceback.extract_tb(error.__traceback__)
    return "must derive from BaseException" in str(error) and any(
        f.name == "await_completion" and f.filename.endswith("executor.py") for f in frames
    )


def _outcomes(log: list[tuple], windowings: Sequence[Windowing]) -> dict[str, Outcome]:
    views = {w.name: Outcome() for w in windowings}
    step = 0
    for record in log:
        kind = record[0]
        if kind == "step":
            step = record[1]
        elif kind in ("beam", "liveagg"):
            _, view, key, bounds, timing, index, value = record
            getattr(views[view], kind).append(Pane(key, bounds, timing, index, value, step))
        else:
            letter = record[1]
            msg = json.loads(letter["payload"])
            if letter["reason"] == "too_late":
                views[letter["view"]].too_late.add((msg["k"], msg["v"].bit_length() - 1))
            else:
                views[letter["view"]].other_dead.append(letter)
    return views


# ---------------------------------------------------------------------------------------
# Sessions as Beam's Python trigger driver keeps them.


@dataclass(frozen=True)
class _Merge:
    key: str
    step: int
    window: Window  # the session that resulted
    stale: bool  # it took in a session whose end + allowed lateness the watermark had passed
    fresh: bool  # it took in a new element


def _session_merges(stream: Stream, w: Windowing) -> Iterator[_Merge]:
    """Replays how Beam's Python trigger driver merges sessions, bundle by bundle.

    It drops an element whose own proto-session has expired
    (``GeneralTriggerDriver.process_elements``: ``input_watermark > window.end +
    self.allowed_lateness``), merges the others with every session it knows, and never
    forgets a session: ``_output`` clears a window's state only when its trigger finishes,
    which ``AfterWatermark(late=...)`` never does (transforms/trigger.py, "TODO(robertwb):
    allowed lateness"), where Beam's Java ReduceFnRunner clears it at end + allowed lateness.
    """
    lateness = w.lateness * 1_000_000
    sessions: dict[str, list[Window]] = defaultdict(list)
    bundles: dict[tuple[int, str], list[Element]] = defaultdict(list)
    for e in stream.elements:
        bundles[(e.step, e.key)].append(e)
    for (step, key), batch in sorted(bundles.items()):
        wm = batch[0].watermark_us
        new = [x for e in batch for x in w.windows(e.time_us) if not wm > x[1] + lateness]
        spans = [(x, x[1] + lateness < wm, False) for x in sessions[key]]
        spans += [(x, False, True) for x in new]
        merged: list[list] = []
        for x, stale, fresh in sorted(spans):
            if merged and x[0] < merged[-1][0][1]:  # overlapping, as Sessions.merge
                last = merged[-1]
                last[:] = [(last[0][0], max(last[0][1], x[1])), last[1] or stale, last[2] or fresh]
            else:
                merged.append([x, stale, fresh])
        for x, stale, fresh in merged:
            yield _Merge(key, step, x, stale, fresh)
        sessions[key] = [m[0] for m in merged]


# ---------------------------------------------------------------------------------------
# Comparison: every difference between the two branches, named by its cause.

#: A defect: liveagg gives a late message's window ON_TIME#0 where Beam gives LATE#0 (the
#: message opened a (key, window) after the watermark had passed the window's end), though
#: the operator's watermark floor (:func:`floors`) already showed the end passed.
LATE_FIRST_PANE = "late_first_pane"
#: A defect: liveagg uses a message that Beam drops as too late (the watermark had passed its
#: window's end + allowed lateness), though the operator's floor already showed it.
TOO_LATE_ACCEPTED = "too_late_accepted"
#: liveagg's documented deviation (docs/semantics.md, "Too late"): one of the two above while
#: the operator's watermark floor, the latest timer it fired, had not yet shown the window's
#: end (for a late first pane) or end + allowed lateness (for a too-late message) passed.
#: The floor lags the watermark until the next timer fires.
WATERMARK_FLOOR_LAG = "watermark_floor_lag"
#: Beam's, not liveagg's: Beam's Python trigger driver merges a new session into one whose
#: end + allowed lateness the watermark had passed, because it never drops a session
#: (:func:`_session_merges`); Beam's Java ReduceFnRunner clears a window's state at end +
#: allowed lateness, as liveagg does (runners/core-java ReduceFnRunner.java, ``onTimers``: a
#: garbage-collection timer calls ``clearAllState``).
BEAM_STALE_SESSION = "beam_stale_session"
#: Beam's, not liveagg's: a session merged from windows that each had an early
#: processing-time timer pending fires one EARLY pane per timer, the same pane twice or more
#: (``AfterProcessingTime.on_merge`` keeps every timer, "timers will be kept through merging",
#: transforms/trigger.py, and each fires the merged window).
BEAM_EARLY_TWICE = "beam_early_twice"
#: Anything else: a new deviation.
UNEXPLAINED = "unexplained"


@dataclass(frozen=True)
class Mismatch:
    kind: str
    view: str
    key: str
    window: Window | None
    detail: str

    def __str__(self) -> str:
        where = ""
        if self.window is not None:
            where = f" [{_secs(self.window[0])}, {_secs(self.window[1])})"
        return f"{self.kind}: {self.view} {self.key!r}{where}: {self.detail}"


Summary = list[tuple[str, frozenset[int], int]]  # (timing, elements, step) per pane


def _fmt(panes: Summary) -> str:
    return " ".join(f"{t}@{s}{sorted(v)}" for t, v, s in panes) or "-"


def floors(result: Run, w: Windowing) -> list[int]:
    """Per step, the latest watermark timer that liveagg's output shows its operator fired
    before the step's messages came: the watermark was past it, and the operator's floor is
    at least that (docs/semantics.md, "Too late"; transforms/streaming.py, ``_on_watermark``
    raises it to each timer it fires).

    The operator sets a window's timer at its end - 1 us while a key has not fired it, then
    at end - 1 us + allowed lateness (transforms/windowstate.py, ``Bucket.due``). The output
    shows these fired:

    * an ``ON_TIME`` pane's timer, at its window's end - 1 us, in the pane's step;
    * a window's expiry timer, in the first step from the one it was held in whose watermark
      has passed it. A fixed or sliding window is held from its first message until it
      expires; a session from its first pane, if no session of its key contains it (else it
      may have been merged away).

    A lower bound, so it excuses no more than the operator could know.
    """
    lateness = w.lateness * 1_000_000
    live = _by_pair(result.views[w.name].liveagg)
    sent = {(e.key, e.ident): e for e in result.stream.elements}
    marks = result.stream.watermarks
    fired: dict[int, int] = defaultdict(lambda: _NEVER)  # step -> latest timer fired in it
    for (key, x), panes in live.items():
        for p in panes:
            if p.timing == "ON_TIME":
                fired[p.step] = max(fired[p.step], x[1] - 1)
        if w.kind == "session":
            if any(k == key and y != x and y[0] <= x[0] and x[1] <= y[1] for k, y in live):
                continue
            held = panes[0].step
        else:
            held = min(sent[(key, i)].step for i in panes[-1].idents)
        expiry = x[1] - 1 + lateness
        step = next((s for s in range(held, len(marks)) if marks[s] > expiry), None)
        if step is not None:
            fired[step] = max(fired[step], expiry)
    out, floor = [], _NEVER
    for step in range(len(marks)):
        out.append(floor)
        floor = max(floor, fired[step])
    return out


def compare(result: Run, w: Windowing) -> list[Mismatch]:
    """Every difference between Beam's and liveagg's output for the view of ``w``, named.

    Compared, per (key, window): the panes ``(timing, elements, step)`` in order and the
    first ``pane_index`` (indices must run on by one, and timings go EARLY, ON_TIME, LATE, on
    both sides); per element: dropped by Beam if and only if a ``too_late`` dead letter in
    liveagg, and used by liveagg otherwise. Beam's ``AfterCount(1)`` fires one LATE pane per
    bundle of late elements and liveagg one per message; SPEC allows both, so the LATE panes
    of one (key, window) at one step count as one, the last.

    A late first pane that liveagg gives ``ON_TIME`` and an element Beam dropped that liveagg
    used are :data:`WATERMARK_FLOOR_LAG` where the operator's floor could not know better
    (:func:`floors`), else defects (:data:`LATE_FIRST_PANE`, :data:`TOO_LATE_ACCEPTED`).

    A (key, window) that holds an element Beam dropped, or that Beam merged into a stale
    session (:data:`BEAM_STALE_SESSION`), is not compared further, nor are the sessions of its
    key that overlap it on the other side: the two sides' windows no longer correspond there.
    The first is checked as far as it can be: for fixed and sliding windows liveagg's final
    pane must be Beam's plus the too-late elements.
    """
    stream = result.stream
    out = result.views[w.name]
    lateness = w.lateness * 1_000_000
    sent = {(e.key, e.ident): e for e in stream.elements}
    found: list[Mismatch] = []

    def report(kind: str, key: str, window: Window | None, detail: str) -> None:
        found.append(Mismatch(kind, w.name, key, window, detail))

    def expired(e: Element, x: Window) -> bool:
        """Beam's rule (transforms/trigger.py, GeneralTriggerDriver.process_elements)."""
        return e.watermark_us > x[1] + lateness

    for letter in out.other_dead:
        report(UNEXPLAINED, "?", None, f"dead letter {letter['reason']}: {letter['detail']}")
    beam, live = _by_pair(out.beam), _by_pair(out.liveagg)
    for side, pairs in (("beam", beam), ("liveagg", live)):
        for (key, x), panes in pairs.items():
            problem = _malformed(panes)
            if problem:
                report(UNEXPLAINED, key, x, f"{side}: {problem}")
            for i in sorted(panes[-1].idents):
                if (key, i) not in sent:
                    report(UNEXPLAINED, key, x, f"{side} holds element {i}, which was never sent")
                    return found
    known = floors(result, w)
    beam_final = {pair: panes[-1].idents for pair, panes in beam.items()}
    live_final = {pair: panes[-1].idents for pair, panes in live.items()}
    beam_used = {(k, i) for (k, _), ids in beam_final.items() for i in ids}
    live_used = {(k, i) for (k, _), ids in live_final.items() for i in ids}

    for ke, e in sent.items():
        dead = ke in out.too_late
        if dead and ke in live_used:
            report(UNEXPLAINED, e.key, None, f"{e} is both used and too_late")
        elif not dead and ke not in live_used:
            report(UNEXPLAINED, e.key, None, f"{e} is neither used nor a dead letter")
        if dead and ke in beam_used:
            report(UNEXPLAINED, e.key, None, f"{e} is too_late, but Beam used it")
        if ke not in beam_used and not all(expired(e, x) for x in w.windows(e.time_us)):
            report(UNEXPLAINED, e.key, None, f"{e} was dropped by Beam, but not too late")

    # (key, window)s that hold an element Beam dropped as too late for that window.
    skip: set[Pair] = set()
    for (key, x), ids in sorted(live_final.items()):
        held = beam_final.get((key, x), frozenset())
        late, lag = [], []
        for i in sorted(ids - held):
            e = sent[(key, i)]
            assigned = w.windows(e.time_us) if w.kind == "session" else [x]
            if all(expired(e, a) for a in assigned):
                late.append(i)
                if not all(known[e.step] >= a[1] - 1 + lateness for a in assigned):
                    lag.append(i)
        if not late:
            continue
        skip.add((key, x))
        for kind, which in ((WATERMARK_FLOOR_LAG, lag), (TOO_LATE_ACCEPTED, set(late) - set(lag))):
            if which:
                listed = ", ".join(str(sent[(key, i)]) for i in sorted(which))
                report(kind, key, x, f"used, too late for Beam: {listed}")
        if w.kind != "session" and ids - set(late) != held:  # else sessions differ as well
            report(UNEXPLAINED, key, x, f"Beam's final {sorted(held)}, liveagg's {sorted(ids)}")
    for key, x in list(skip):
        skip |= _overlapping(beam, key, x)
    if w.kind == "session":
        for m in _session_merges(stream, w):
            if m.stale and m.fresh:
                region = _overlapping(beam, m.key, m.window) | _overlapping(live, m.key, m.window)
                if any(beam.get(p) != live.get(p) for p in region - skip):
                    report(BEAM_STALE_SESSION, m.key, m.window, f"Beam's merge at step {m.step}")
                skip |= region

    for pair in sorted(set(beam) | set(live)):
        if pair not in skip:
            _compare_pair(w, pair, beam.get(pair, []), live.get(pair, []), known, report)
    return found


def _compare_pair(
    w: Windowing, pair: Pair, b: list[Pane], lv: list[Pane], known: list[int], report: Any
) -> None:
    """One (key, window)'s panes: Beam's ``b``, liveagg's ``lv``; ``known`` is :func:`floors`."""
    key, x = pair
    bn, ln = _collapse(b), _collapse(lv)
    kinds = []
    twice = [i for i in range(1, len(bn)) if bn[i][0] == "EARLY" and bn[i] == bn[i - 1]]
    if twice and w.kind == "session":
        kinds.append(BEAM_EARLY_TWICE)
        bn = [p for i, p in enumerate(bn) if i not in twice]
    if b and lv and b[0].index != lv[0].index:
        report(UNEXPLAINED, key, x, f"first pane_index {b[0].index} vs {lv[0].index}")
        return
    if bn and ln and bn[0][0] == "LATE" and ln[0][0] == "ON_TIME" and bn[0][1:] == ln[0][1:]:
        # The pane's step is the step of the data that opened the window.
        kinds.append(LATE_FIRST_PANE if known[ln[0][2]] >= x[1] - 1 else WATERMARK_FLOOR_LAG)
        ln[0] = ("LATE", *ln[0][1:])
    if bn != ln:
        report(UNEXPLAINED, key, x, f"beam {_fmt(bn)} | liveagg {_fmt(ln)}")
        return
    for kind in kinds:
        report(kind, key, x, f"beam {_fmt(bn)} | liveagg {_fmt(_collapse(lv))}")


def _overlapping(pairs: Iterable[Pair], key: str, x: Window) -> set[Pair]:
    return {(k, y) for k, y in pairs if k == key and y[0] < x[1] and x[0] < y[1]}


def _by_pair(panes: list[Pane]) -> dict[Pair, list[Pane]]:
    pairs: dict[Pair, list[Pane]] = defaultdict(list)
    for p in panes:
        pairs[(p.key, p.window)].append(p)
    return pairs


def _malformed(panes: list[Pane]) -> str | None:
    """Panes of one (key, window) are numbered on by one, accumulate, and go EARLY, ON_TIME,
    LATE."""
    first = panes[0].index
    if [p.index for p in panes] != list(range(first, first + len(panes))):
        return f"pane indices {[p.index for p in panes]}"
    for a, b in itertools.pairwise(panes):
        if not a.idents <= b.idents:
            return f"pane {b.index} lost elements of pane {a.index}"
    if not re.fullmatch("E*O?L*", "".join(p.timing[0] for p in panes)):
        return f"timings out of order: {[p.timing for p in panes]}"
    return None


def _collapse(panes: list[Pane]) -> Summary:
    """``(timing, elements, step)`` per pane, the LATE panes of one step as the last."""
    out: Summary = []
    for p in panes:
        if out and p.timing == "LATE" and out[-1][0] == "LATE" and out[-1][2] == p.step:
            out.pop()
        out.append((p.timing, p.idents, p.step))
    return out
