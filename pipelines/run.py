"""Run views end to end: load, bind sources, build the pipeline, attach sinks, run, report.

Around the pipeline, a run keeps its file outputs honest: every output folder is checked
writable and loses its ``_SUCCESS`` before anything is computed, a bounded run replaces the
files of the folders it writes, and ``_SUCCESS`` is written last, only when the pipeline has
finished (:class:`~liveagg.transforms.sinks.files.OutputFolder`). A failed or interrupted run
removes its in-progress files and leaves no ``_SUCCESS``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from liveagg.engine.compiled import RunContext, check_run, compile_views
from liveagg.errors import COMMAND_LINE, PathError, ViewError
from liveagg.loader import is_source_name, load_views, output_problem, parse_sinks
from liveagg.pipelines.compile import (
    Compiled,
    Source,
    attach_sinks,
    bind_sources,
    build,
)
from liveagg.runners import direct, prism, spark
from liveagg.runners.flink import FlinkProfile, Outcome, supervise
from liveagg.runners.flink_rest import counter_values
from liveagg.settings import Connections
from liveagg.spec import ViewSpec
from liveagg.transforms.deadletter import INPUT
from liveagg.transforms.plan import MILESTONES
from liveagg.transforms.sinks.files import OutputFolder, written_by_liveagg
from liveagg.transforms.sources import FileSource
from liveagg.transforms.sources.progress import PROGRESS, Snapshot

_LOGGER = logging.getLogger(__name__)


@dataclass
class KafkaInput:
    """``--kafka-topic`` and the options that shape how it is read."""

    topics: Sequence[str] = ()  # "[SOURCE=]TOPIC"
    group_id: str | None = None
    start: str = "committed"
    unbounded: bool = False
    max_records: int | None = None
    idle_timeout: timedelta = timedelta(seconds=10)


@dataclass
class RunConfig:
    views: Sequence[str]
    inputs: Sequence[str] = ()
    kafka: KafkaInput = field(default_factory=KafkaInput)
    output: str | None = None
    sinks: Sequence[str] = ()  # JSON sink objects added to every view
    view_sinks: bool = True  # False: ignore the sinks written in view files
    dead_letter_topic: str | None = None
    milestone_topic: str | None = None  # milestone events, besides OUTPUT/_milestones/
    connections: Connections = field(default_factory=Connections)
    runner: str = "direct"  # direct | prism | flink | spark
    streaming: bool = False
    direct_num_workers: int = 1
    flink: FlinkProfile = field(default_factory=FlinkProfile)
    prism: prism.PrismProfile = field(default_factory=prism.PrismProfile)
    spark: spark.SparkProfile = field(default_factory=spark.SparkProfile)
    report_every_s: float = 30.0  # metrics printed while a Flink job runs; 0: never
    beam_args: Sequence[str] = ()
    # Two-level runs: level 1 (``run``) writes partials here; level 2 (``rekey``) reads them.
    intermediate_topic: str | None = None
    rekey: bool = False
    # A progress line on stderr while the pipeline runs (the command line sets it on a tty).
    progress: bool = False


class UsageError(Exception):
    """The command line asks for a run that cannot do what it should (it would write its
    results nowhere, say): the command line's exit 2, as for an unknown option."""


class Interrupted(Exception):
    """SIGINT (Ctrl-C) or SIGTERM stopped the run; ``partial`` are the folders it had begun
    to write, which hold no ``_SUCCESS``."""

    def __init__(self, signum: int, partial: Sequence[str]) -> None:
        self.signum = signum
        self.partial = list(partial)
        if self.partial:
            what = f"output under {', '.join(self.partial)} is partial (no _SUCCESS)"
        else:
            what = "the sinks may hold part of the results"
        super().__init__(f"interrupted: {what}")


@dataclass
class RunReport:
    """Counters read back from the finished pipeline.

    The message accounting (docs/semantics.md, "Accounting") is read from the counters
    alone: every line read is blank, a message or an input dead letter, and every message
    of a view's source is used by the view, filtered out or one of its dead letters.
    """

    output: str | None
    rows: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)  # by reason, all of them
    partials: dict[str, int] = field(default_factory=dict)  # level 1: to --intermediate-topic
    milestones: dict[str, int] = field(default_factory=dict)  # view -> milestone events fired
    milestone_topic: str | None = None
    intermediate_topic: str | None = None
    lines_read: int = 0  # lines or records the sources gave
    blank_lines: int = 0  # skipped: they carry no message
    messages: int = 0  # lines that are JSON objects
    messages_by_source: dict[str, int] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)  # view -> messages it aggregated
    filtered: dict[str, int] = field(default_factory=dict)  # view -> rejected by its filter
    late_windows: dict[str, int] = field(default_factory=dict)  # view -> windows missed
    #: Message dead letters: view (``_input`` for those no view could read) -> reason -> n.
    message_dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Result dead letters (``overflow``): view -> reason -> n; no message is behind them.
    result_dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)
    view_sources: dict[str, str] = field(default_factory=dict)  # view -> its source's name
    rekey: bool = False  # a level-2 run reads envelopes, not messages: no accounting
    #: Whose figures these are when not the runner's result (a Flink job liveagg stopped).
    figures: str = ""

    def summary(self) -> str:
        """What the run did, in lines that add up: ``lines read = messages + blank + not
        messages``, and per view ``messages = used + filtered out + dead letters``, then the
        rows per view and the dead letters by reason (SPEC section 5)."""
        lines = [f"{self.figures}:"] if self.figures else []
        numbers = self.accounting()
        # Level 2 reads envelopes, not messages; a runner that gave no metrics counted none.
        accounted = not self.rekey and bool(self.lines_read or self.messages)
        if accounted:
            input_letters = sum(numbers["input_dead_letters"].values())
            lines.append(
                f"read {self.lines_read} lines = {self.messages} messages + "
                f"{self.blank_lines} blank + {input_letters} not messages (dead letters)"
            )
        for view, n in numbers["views"].items():
            if self.intermediate_topic:
                what = f"{self.partials.get(view, 0)} partials -> topic {self.intermediate_topic}"
            else:
                rows = self.rows.get(view, 0)
                where = f" -> {_under(self.output, view)}/" if self.output and rows else ""
                what = f"{rows} rows{where}"
            lines.append(f"view {view}: {what}")
            if view in self.milestones:
                places = []
                if self.output and self.milestones[view]:
                    places.append(f"{_under(self.output, '_milestones', view)}.jsonl")
                if self.milestone_topic:
                    places.append(f"topic {self.milestone_topic}")
                where = f" -> {', '.join(places)}" if places else ""
                lines.append(f"  {self.milestones[view]} milestones{where}")
            if accounted:
                letters = sum(n["dead_letters"].values())
                lines.append(
                    f"  {n['messages']} messages = {n['used']} used + {n['filtered']} "
                    f"filtered out + {letters} dead letters"
                )
        total = sum(self.dead_letters.values())
        where = f" -> {_under(self.output, '_dead_letter')}/" if self.output and total else ""
        lines.append(f"dead letters: {total}{where}")
        for reason, count in sorted(self.dead_letters.items()):
            lines.append(f"  {reason}: {count}")
        return "\n".join(lines)

    def view_messages(self, view: str) -> int:
        """The messages the view's source gave (all messages when the counter per source is
        missing, as from a run of one source)."""
        source = self.view_sources.get(view)
        return self.messages_by_source.get(source, self.messages) if source else self.messages

    def accounting(self) -> dict[str, Any]:
        """The numbers that account for every line, for printing: ``lines_read``,
        ``blank_lines``, ``messages``, ``input_dead_letters`` (reason -> n) and ``views``:
        view -> ``messages`` (of its source), ``used``, ``filtered``, ``dead_letters``
        (reason -> n), ``late_windows``, ``result_dead_letters`` (reason -> n)."""
        views = sorted({*self.rows, *self.used, *self.filtered, *self.view_sources})
        return {
            "lines_read": self.lines_read,
            "blank_lines": self.blank_lines,
            "messages": self.messages,
            "input_dead_letters": dict(self.message_dead_letters.get(INPUT, {})),
            "views": {
                view: {
                    "messages": self.view_messages(view),
                    "used": self.used.get(view, 0),
                    "filtered": self.filtered.get(view, 0),
                    "dead_letters": dict(self.message_dead_letters.get(view, {})),
                    "late_windows": self.late_windows.get(view, 0),
                    "result_dead_letters": dict(self.result_dead_letters.get(view, {})),
                }
                for view in views
            },
        }

    def reconcile(self) -> list[str]:
        """The accounting invariants that do not hold, each as a sentence; empty when every
        line is accounted for:

        * ``lines_read = blank_lines + messages + dead_letter/_input/*``;
        * per view, ``messages of its source = used + filtered + dead_letter/<view>/*``
          (``result_dead_letter/<view>/*``, about rows, are not messages).

        A level-2 run (``rekey``) reads envelopes, which these counters do not cover.
        """
        if self.rekey:
            return []
        problems = []
        numbers = self.accounting()
        input_letters = sum(numbers["input_dead_letters"].values())
        if self.lines_read != self.blank_lines + self.messages + input_letters:
            problems.append(
                f"lines_read {self.lines_read} != blank_lines {self.blank_lines} + messages "
                f"{self.messages} + input dead letters {input_letters}"
            )
        for view, n in numbers["views"].items():
            letters = sum(n["dead_letters"].values())
            if n["messages"] != n["used"] + n["filtered"] + letters:
                problems.append(
                    f"view {view}: messages {n['messages']} != used {n['used']} + filtered "
                    f"{n['filtered']} + dead letters {letters}"
                )
        return problems


def _split_binding(item: str) -> tuple[str | None, str]:
    """``SOURCE=VALUE`` as (source, value) where ``SOURCE`` is a source name as views spell
    it (:func:`~liveagg.loader.is_source_name`); anything else is a bare value
    (``in/date=2024-01-01/*.jsonl``)."""
    name, sep, value = item.partition("=")
    if sep and is_source_name(name):
        return name, value
    return None, item


def _sources(
    config: RunConfig, views: Sequence[ViewSpec]
) -> tuple[dict[str, Source], Source | None]:
    given: dict[str | None, str] = {}  # source name (None: every other) -> the option given

    def claim(name: str | None, option: str) -> None:
        """One input per source: a second one replaced the first, which was never read."""
        if name in given:
            whom = f"source {name!r}" if name else "every source not bound by name"
            raise UsageError(
                f"{option}: {given[name]} already feeds {whom}; a source reads one file, glob "
                "or topic: give one glob that matches every file (e.g. --input 'in/*.jsonl')"
            )
        given[name] = option

    bound: dict[str | None, Source] = {}
    for item in config.inputs:
        name, pattern = _split_binding(item)
        if not pattern.strip():
            raise UsageError(
                f"--input {item!r}: give a file or glob, e.g. --input events=in/*.jsonl"
            )
        claim(name or None, f"--input {item}")
        # Absolute, because workers (a Flink TaskManager's, say) do not share our directory.
        bound[name or None] = FileSource(_absolute(pattern))
    for item in config.kafka.topics:
        name, topic = _split_binding(item)
        if not topic.strip():
            raise UsageError(
                f"--kafka-topic {item!r}: give a topic, e.g. --kafka-topic events=clicks"
            )
        claim(name or None, f"--kafka-topic {item}")  # before connecting to Kafka
        readers = [v for v in views if name in (None, v.source)]
        bound[name or None] = _kafka_source(config, topic, readers)
    named = {name: source for name, source in bound.items() if name}
    return named, bound.get(None)


def _check_bindings(
    config: RunConfig, views: Sequence[ViewSpec], named: Mapping[str, Source]
) -> None:
    """Refuse an input no view reads, as an unknown option is refused (SPEC section 5: never
    a run that silently ignores what it was given): a binding whose name no view has as its
    source, most likely a typo, and an unnamed input when every view's source is bound by
    name."""
    read = {view.source for view in views}
    given = [("--input", item) for item in config.inputs]
    given += [("--kafka-topic", item) for item in config.kafka.topics]
    for option, item in given:
        name = _split_binding(item)[0]
        if name is None and read <= named.keys():
            why = f"every view's source is bound by name ({', '.join(sorted(read))})"
        elif name is not None and name not in read:
            why = f"no view reads source {name!r} (the views read: {', '.join(sorted(read))})"
        else:
            continue
        raise UsageError(f"{option} {item}: nothing would read it: {why}")


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _kafka_source(
    config: RunConfig,
    topic: str,
    views: Sequence[ViewSpec],
    timestamp_fn: Any = None,
    option: str = "--kafka-topic",
) -> Source:
    from liveagg.transforms.kafka.source import KafkaSource, event_time_of

    if not config.connections.kafka_bootstrap:
        raise ViewError(
            COMMAND_LINE,
            "$",
            f"{option} {topic}: no Kafka bootstrap servers; give --kafka-bootstrap "
            "HOST:PORT or set LIVEAGG_KAFKA_BOOTSTRAP",
        )
    options: dict[str, Any] = {
        "group_id": config.kafka.group_id,
        "start": config.kafka.start,
        "bounded": not config.kafka.unbounded,
        "max_records": config.kafka.max_records,
        "idle_timeout": config.kafka.idle_timeout,
        # Prism runs every partition's read in this process (LOOPBACK): see KafkaSource.
        "one_process": config.runner == "prism",
    }
    if timestamp_fn is not None:
        options["timestamp_fn"] = timestamp_fn
    elif views:  # the watermark follows the event times of the views on this source
        options["timestamp_fn"] = event_time_of(views)
    return KafkaSource.from_connections(topic, config.connections, **options)


def _paths(config: RunConfig, views: Sequence[ViewSpec]) -> list[str]:
    """Every file path of the run (inputs, output, sink paths): S3 settings go where used."""
    paths = [_split_binding(item)[1] for item in config.inputs]
    paths += [config.output] if config.output else []
    paths += [s.options["path"] for v in views for s in v.sinks if "path" in s.options]
    return paths


def pipeline_options(config: RunConfig, paths: Sequence[str] = ()) -> PipelineOptions:
    args: list[str] = []
    if config.runner == "direct":
        args += direct.beam_args(config.direct_num_workers)
    elif config.runner == "prism":
        args += config.prism.beam_args()
    elif config.runner == "flink":
        args += config.flink.beam_args(streaming=config.kafka.unbounded)
    elif config.runner == "spark":
        args += config.spark.beam_args()
    if config.kafka.unbounded:
        args.append("--streaming")
    try:
        from liveagg.transforms.sinks.objectstores import beam_args
    except ImportError:  # object-store extras not installed
        pass
    else:
        args += beam_args(config.connections, paths)
    # The user's Beam arguments come last: of a flag given twice the last counts, so they
    # override liveagg's defaults (say --max_bundle_size) instead of being overridden.
    return PipelineOptions([*args, *config.beam_args])


def _check_runner(config: RunConfig, views: Sequence[ViewSpec]) -> None:
    if config.runner == "flink":
        config.flink.check()
    if config.runner == "prism":
        config.prism.check()
    if config.runner == "spark":
        config.spark.check()
    if config.kafka.unbounded:  # before the runner's limits: what no runner does comes first
        level = 0 if not config.intermediate_topic else 2 if config.rekey else 1
        check_run(views, RunContext("an unbounded Kafka read", level=level))
    if config.kafka.unbounded and config.runner == "direct":
        raise ViewError(
            COMMAND_LINE,
            "$.unbounded",
            "--unbounded needs a streaming runner: the direct runner's Python engine closes "
            "a window before the watermark passes its end on a live stream, so later "
            "messages of the window restart it from nothing (docs/runners.md); run with "
            "--runner prism (Beam downloads Prism, or python -m integration.services.prism "
            "builds it for --prism-location) or --runner flink, or read the topic bounded "
            "(without --unbounded)",
        )


def run(config: RunConfig) -> RunReport:
    """Run ``config``: one level, level 1 (``intermediate_topic``) or level 2 (``rekey``).

    Raises :class:`~liveagg.errors.ViewError` for views and options, :class:`UsageError`
    for a run that would write nowhere, :class:`~liveagg.errors.PathError` for an input or
    output the run cannot read or write, and :class:`Interrupted` on SIGINT or SIGTERM.
    """
    views = load_views(config.views)
    level1 = bool(config.intermediate_topic) and not config.rekey
    _check_runner(config, views)
    if config.rekey:
        intermediate = _intermediate(config, views)
        sources = {v.source: intermediate for v in views}
    else:
        named, default = _sources(config, views)
        if not named and default is None:
            raise ViewError(
                COMMAND_LINE, "$", "no input: give --input FILE_OR_GLOB or --kafka-topic TOPIC"
            )
        sources = bind_sources(views, named, default)
        _check_bindings(config, views, named)
    # Rows are written at the roll-up's grain; level 1 aggregates the views as declared.
    # --sink entries are parsed as a view file's sinks are, named as the command line's.
    added = parse_sinks(config.sinks)
    written = [
        replace(v.final(), sinks=(*(v.sinks if config.view_sinks else ()), *added)) for v in views
    ]
    _check_milestone_topic(config, written, level1)
    _check_destinations(config, written, level1)
    typed_output = config.output  # reported as the user wrote it
    if config.output and (problem := output_problem(config.output)):
        raise PathError(config.output, problem)
    if config.output:
        config = replace(config, output=_absolute(config.output))
    PROGRESS.reset()
    pipeline = beam.Pipeline(options=pipeline_options(config, _paths(config, written)))
    if config.rekey:
        compiled = _rekey(pipeline, config, views, sources)
    else:  # file patterns are matched here, once the pipeline has set up the file systems
        compiled = build(
            pipeline,
            views if level1 else written,
            sources,
            streaming=config.streaming or None,
            partials=level1,
        )
    folders = attach_sinks(
        compiled,
        views if level1 else written,
        sources,
        config.connections,
        output=config.output,
        dead_letter_topic=config.dead_letter_topic,
        intermediate_topic=config.intermediate_topic if level1 else None,
        milestone_topic=None if level1 else config.milestone_topic,
    )
    # Bounded input gives a complete result: it replaces the previous one. Unbounded input
    # adds part files, which a job restored from a checkpoint or savepoint continues.
    bounded = all(source.bounded for source in sources.values())
    if bounded:
        _check_inputs_are_kept(sources.values(), folders)
    names = [v.name for v in views]
    state, result, outcome = _execute(
        pipeline, config, folders, replace_files=bounded, views=names, sources=sources.values()
    )
    if state == PipelineState.DONE:
        for folder in folders:  # last: every row and dead letter is written
            folder.finish()
    if outcome is not None and outcome.counters is not None:  # a Flink job liveagg stopped
        report = _report(outcome.counters, typed_output, names)
        report.figures = outcome.figures
    else:
        report = _report(_counters(result), typed_output, names)
    report.view_sources = {v.name: v.source for v in views}
    report.rekey = config.rekey
    if level1:
        report.intermediate_topic = config.intermediate_topic
    else:  # level 1 fires no milestones: level 2 does, from its rows
        for view in written:
            if view.milestones:
                report.milestones.setdefault(view.name, 0)
        report.milestone_topic = config.milestone_topic
    return report


def _check_milestone_topic(config: RunConfig, written: Sequence[ViewSpec], level1: bool) -> None:
    """Refuse a ``--milestone-topic`` that would get nothing, as an unknown option is: no view
    declares milestones, or the run is level 1 of two, whose partials fire none (level 2,
    ``liveagg rekey``, does)."""
    if not config.milestone_topic:
        return
    if level1:
        why = "level 1 fires no milestones; give it to liveagg rekey, which merges the partials"
    elif not any(v.milestones for v in written):
        why = "no view declares milestones"
    else:
        return
    raise UsageError(f"--milestone-topic {config.milestone_topic}: {why}")


def _under(folder: str, *names: str) -> str:
    """``folder/names...`` as the run names it: ``Path`` would fold ``s3://`` to ``s3:/``."""
    if "://" in folder:
        return posixpath.join(folder, *names)
    return str(Path(folder, *names))


def _check_destinations(config: RunConfig, written: Sequence[ViewSpec], level1: bool) -> None:
    """Refuse a run whose results would go nowhere (SPEC section 5): rows, milestone events
    (they go to ``--output`` or ``--milestone-topic``, not to a view's sinks) and dead
    letters (SPEC section 2: bad input is never lost), level 1's included; its rows are
    the partials it writes to the intermediate topic."""
    if config.output:
        return
    if not level1:
        counters = [v.name for v in written if v.milestones]
        if counters and not config.milestone_topic:
            raise UsageError(
                f"no output for the milestones of view {', '.join(counters)}: give --output "
                "DIR or --milestone-topic TOPIC"
            )
        nowhere = [v.name for v in written if not v.sinks]
        if nowhere:
            views = ", ".join(nowhere)
            ignored = " (--no-view-sinks ignores the views' own)" if not config.view_sinks else ""
            raise UsageError(
                f"no output for view {views}: give --output DIR, --sink JSON, or a 'sinks' "
                f"entry in the view{ignored}"
            )
    if not config.dead_letter_topic:
        raise UsageError(
            "no output for dead letters: give --output DIR (they go to DIR/_dead_letter/) or "
            "--dead-letter-topic TOPIC"
        )


def _check_inputs_are_kept(sources: Iterable[Source], folders: Sequence[OutputFolder]) -> None:
    """Refuse a bounded run that would remove its own input: an ``--input`` file that is
    one of those it replaces in its output folders (``OUT/<view>/*.jsonl``, say)."""
    from liveagg.transforms.sources.files import match

    owned = {_absolute(path).rstrip("/") for folder in folders for path in folder.owned()}
    for source in sources:
        if not isinstance(source, FileSource):
            continue
        for path, _ in match(source.pattern):
            folder, name = posixpath.split(path) if "://" in path else os.path.split(path)
            if folder in owned and written_by_liveagg(name):
                raise PathError(
                    folder,
                    f"holds input files of this run ({path}), and a run replaces the files in "
                    "the folders it writes; give another --output or sink path",
                )


def _execute(
    pipeline: beam.Pipeline,
    config: RunConfig,
    folders: Sequence[OutputFolder],
    *,
    replace_files: bool,
    views: Sequence[str] = (),
    sources: Iterable[Source] = (),
) -> tuple[str, Any, Outcome | None]:
    """Prepare the output folders, run the pipeline and wait for it: its final state, its
    result and, on Flink, how the job ended. A failure or an interrupt removes the
    in-progress files first."""
    prepared: list[OutputFolder] = []
    outcome = None
    with _remember_signals() as caught:
        try:
            for folder in folders:  # before computing: an unwritable output fails fast
                prepared.append(folder)  # from here on it may be partial
                folder.prepare(replace=replace_files)
            # Prism runs for this pipeline alone; a Flink job's progress is its metrics,
            # which supervise() prints.
            serve = prism.serve if config.runner == "prism" else _nothing_to_serve
            with (
                _progress_line(config.progress and config.runner != "flink"),
                serve(pipeline.options),
            ):
                result = pipeline.run()
                if config.runner == "flink":
                    outcome = supervise(
                        result,
                        config.flink,
                        config.report_every_s,
                        views=views,
                        partitions=_partitions(sources),
                    )
                    state = outcome.state
                elif config.runner == "prism":
                    state = prism.supervise(result)
                elif config.runner == "spark":
                    state = spark.supervise(result)
                else:
                    state = result.wait_until_finish()
        except BaseException as e:
            for folder in prepared:
                folder.abort()
            if caught:
                raise Interrupted(caught[0], [f.path for f in prepared]) from None
            error = _path_error(e)
            if error is not None:
                raise error from None
            raise
    return str(getattr(state, "name", state)).upper(), result, outcome


def _partitions(sources: Iterable[Source]) -> list[str]:
    """``topic/partition`` of each unbounded Kafka source, for the Flink job's reports;
    none of a topic whose partitions cannot be listed now (the job's read says why)."""
    from liveagg.transforms.kafka.source import KafkaSource, partitions

    found: dict[str, None] = {}  # several views may read one topic
    for source in sources:
        if isinstance(source, KafkaSource) and not source.bounded:
            try:
                found |= {f"{source.topic}/{p}": None for p in partitions(source)}
            except Exception as e:  # a report without this topic's partitions, not a failure
                _LOGGER.info("partitions of Kafka topic %s: %s", source.topic, e)
    return list(found)


def _nothing_to_serve(options: PipelineOptions) -> contextlib.nullcontext[None]:
    """The job server of runners that need none started by liveagg."""
    return contextlib.nullcontext()


def _path_error(error: BaseException) -> PathError | None:
    """The :class:`PathError` a worker raised: the exception itself on the in-process
    DirectRunner, else (a portable runner's job failure) found in the error's text."""
    if isinstance(error, PathError):
        return error
    found = re.search(r"PathError: (.+)$", str(error), re.MULTILINE)
    return PathError(found[1]) if found else None


@contextlib.contextmanager
def _remember_signals() -> Iterator[list[int]]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` and are remembered in the list given.

    The exception alone cannot tell: Beam's DirectRunner re-raises an exception from inside a
    DoFn as ``type(exn)(exn.args[0] + step_annotation, ...)`` and, when that fails, as a
    ``RuntimeError`` (``apache_beam/runners/common.py``, ``_reraise_augmented``); a
    ``KeyboardInterrupt`` has no ``args[0]``, so Ctrl-C reaches the caller as a
    ``RuntimeError``.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)
        raise KeyboardInterrupt

    thread_hook = threading.excepthook

    def quiet_after_signal(args: Any) -> None:
        """Once interrupted, the runner's threads fail for that reason (a multi-process
        direct run's workers have exited): their tracebacks would bury the one line."""
        if not caught:
            thread_hook(args)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    threading.excepthook = quiet_after_signal
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        if not caught:  # else the runner's threads may still end after this returns
            threading.excepthook = thread_hook


def progress_text(read: Snapshot, elapsed_s: float) -> str:
    """The progress line: lines read, the share of the input's bytes, the rate."""
    if not read.bytes_read:
        return f"running, {elapsed_s:.0f} s"
    rate = f"{read.lines_read / max(elapsed_s, 1e-3):,.0f} lines/s"
    if read.bytes_total and read.bytes_read >= read.bytes_total:
        return (
            f"input read: {read.lines_read:,} lines ({rate}); aggregating and writing, "
            f"{elapsed_s:.0f} s"
        )
    share = f", {100 * read.bytes_read / read.bytes_total:.0f}%" if read.bytes_total else ""
    size = f" of {read.bytes_total / 2**20:,.1f} MiB" if read.bytes_total else ""
    return f"reading: {read.lines_read:,} lines{share}{size}, {rate}, {elapsed_s:.0f} s"


@contextlib.contextmanager
def _progress_line(
    enabled: bool, stream: TextIO | None = None, every_s: float = 1.0
) -> Iterator[None]:
    """With ``enabled``, rewrite one line of ``stream`` (stderr) every ``every_s`` while the
    block runs, and clear it at the end. Only this process's readers count
    (:mod:`liveagg.transforms.sources.progress`)."""
    if not enabled:
        yield
        return
    out = stream or sys.stderr
    stop = threading.Event()
    start = time.monotonic()

    def show() -> None:
        while not stop.wait(every_s):
            text = progress_text(PROGRESS.snapshot(), time.monotonic() - start)
            out.write(f"\r\x1b[K{text}")
            out.flush()

    thread = threading.Thread(target=show, name="liveagg-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        out.write("\r\x1b[K")
        out.flush()


def _intermediate(config: RunConfig, views: Sequence[ViewSpec]) -> Source:
    """Level 2's source: the intermediate topic, its watermark read from the envelopes."""
    from liveagg.transforms.envelope import EnvelopeTime

    if not config.intermediate_topic:
        raise ViewError(
            COMMAND_LINE,
            "$.intermediate_topic",
            "rekey needs --intermediate-topic TOPIC: the topic level 1 "
            "(liveagg run --intermediate-topic TOPIC) writes its partials to",
        )
    return _kafka_source(
        config, config.intermediate_topic, views, EnvelopeTime(views), "--intermediate-topic"
    )


def _rekey(
    pipeline: beam.Pipeline,
    config: RunConfig,
    views: Sequence[ViewSpec],
    sources: dict[str, Source],
) -> Compiled:
    from liveagg.transforms.rekey import RekeyAggregate

    source = next(iter(sources.values()))
    streaming = config.streaming or not source.bounded
    how = None
    if streaming:
        how = "--streaming" if source.bounded else "an unbounded read of --intermediate-topic"
    context = RunContext(how, level=2)
    declared = compile_views(views, context)
    envelopes = source.read(pipeline, "Read/intermediate")
    rekey = RekeyAggregate(declared, streaming=streaming, early_panes=not source.bounded)
    out = envelopes | "Rekey" >> rekey
    compiled = {written.name: written for _, written in rekey.views}
    return Compiled(out["views"], out["dead_letters"], out.get(MILESTONES), compiled)


def _counters(result: Any) -> list[tuple[str, int]]:
    """liveagg's counters from the runner's result; none when it has none to give."""
    try:
        return counter_values(result.metrics())
    except Exception as e:  # a cancelled portable job may have no metrics to give
        _LOGGER.warning("no metrics from the runner: %s", e)
        return []


def _report(counters: Iterable[tuple[str, int]], output: str | None, names: list[str]) -> RunReport:
    """The run's report from its counters, ``(name, value)`` per step that has them."""
    report = RunReport(output, rows=dict.fromkeys(names, 0))
    per_view = {
        "rows": report.rows,
        "partials": report.partials,
        "milestones": report.milestones,
        "used": report.used,
        "filtered": report.filtered,
        "late_windows": report.late_windows,
        "messages": report.messages_by_source,
    }
    for name, value in counters:
        parts = name.split("/")
        if len(parts) == 1 and name in ("lines_read", "blank_lines", "messages"):
            setattr(report, name, getattr(report, name) + value)
        elif len(parts) == 2 and parts[0] in per_view:
            into = per_view[parts[0]]
            into[parts[1]] = into.get(parts[1], 0) + value
        elif len(parts) == 2 and parts[0] == "dead_letter":
            report.dead_letters[parts[1]] = report.dead_letters.get(parts[1], 0) + value
        elif len(parts) == 3 and parts[0] in ("dead_letter", "result_dead_letter"):
            family = (
                report.message_dead_letters
                if parts[0] == "dead_letter"
                else report.result_dead_letters
            )
            reasons = family.setdefault(parts[1], {})
            reasons[parts[2]] = reasons.get(parts[2], 0) + value
    return report
