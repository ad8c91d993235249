"""Compile views into one Beam pipeline: each source is read once and fans out to its views."""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import apache_beam as beam

from liveagg.combiners.registry import is_builtin
from liveagg.engine.compiled import CompiledView, RunContext, as_compiled, compile_views
from liveagg.errors import COMMAND_LINE, ViewError
from liveagg.settings import Connections
from liveagg.spec import Sink, ViewSpec
from liveagg.transforms.bounded import BoundedAggregate
from liveagg.transforms.plan import MILESTONES
from liveagg.transforms.sinks import RowSink, build_sink
from liveagg.transforms.sinks.files import (
    FileSink,
    OutputFolder,
    WriteDeadLetters,
    WriteMilestones,
)
from liveagg.transforms.streaming import StreamingAggregate


class Source(Protocol):
    bounded: bool

    def read(self, pipeline: beam.Pipeline, label: str) -> beam.PCollection: ...

    def describe(self) -> str: ...


@dataclass
class Compiled:
    """What :func:`build` added to a pipeline: rows per view, all dead letters, and the
    milestone events of the views that declare milestones (None when none does)."""

    views: dict[str, beam.PCollection]
    dead_letters: beam.PCollection
    milestones: beam.PCollection | None = None
    #: Each view compiled once for this run, by name: the sinks read their columns.
    compiled: dict[str, CompiledView] = field(default_factory=dict)


def bind_sources(
    views: Sequence[ViewSpec], sources: Mapping[str, Source], default: Source | None = None
) -> dict[str, Source]:
    """Map each view source name to a Source; ``default`` serves names not bound explicitly."""
    bound = {}
    for view in views:
        source = sources.get(view.source, default)
        if source is None:
            raise ViewError(
                view.origin,
                view.path(".source"),
                f"view {view.name!r} reads source {view.source!r}, which this run does not "
                f"bind; bind it with --input {view.source}=PATH (bound: "
                f"{', '.join(sorted(sources)) or 'none'})",
            )
        bound[view.source] = source
    return bound


def build(
    pipeline: beam.Pipeline,
    views: Sequence[ViewSpec],
    sources: Mapping[str, Source],
    *,
    streaming: bool | None = None,
    partials: bool = False,
) -> Compiled:
    """Add the views to ``pipeline``.

    ``streaming=None`` picks the path from the sources: bounded sources use the bounded path
    (window folded into the key, one ON_TIME pane per window); unbounded sources, or
    ``streaming=True``, use the window operator with early, on-time and late panes.
    With ``partials`` (level 1 of a two-level run) each view gives
    :data:`~liveagg.transforms.envelope.Partial` tuples instead of rows.
    """
    by_source: dict[str, list[ViewSpec]] = defaultdict(list)
    for view in views:
        by_source[view.source].append(view)
    rows: dict[str, beam.PCollection] = {}
    dead: list[beam.PCollection] = []
    milestones: list[beam.PCollection] = []
    every: dict[str, CompiledView] = {}
    for source_name, source_views in by_source.items():
        source = sources[source_name]
        use_streaming = (not source.bounded) if streaming is None else streaming
        label = f"Read/{source_name}"
        if hasattr(source, "read_batches"):  # both paths take batches (sources' module doc)
            messages = source.read_batches(pipeline, label)
        else:
            messages = source.read(pipeline, label)
        how = None
        if use_streaming:
            how = "an unbounded Kafka read" if not source.bounded else "--streaming"
        compiled = compile_views(source_views, RunContext(how, level=1 if partials else 0))
        transform = (
            StreamingAggregate(compiled, early_panes=not source.bounded, partials=partials)
            if use_streaming
            else BoundedAggregate(compiled, partials=partials)
        )
        out = messages | f"Aggregate/{source_name}" >> transform
        every.update((view.name, view) for view in compiled)
        rows.update(out["views"])
        dead.append(out["dead_letters"])
        if MILESTONES in out:
            milestones.append(out[MILESTONES])
    dead_letters = tuple(dead) | "DeadLetters" >> beam.Flatten()
    events = tuple(milestones) | "Milestones" >> beam.Flatten() if milestones else None
    return Compiled(rows, dead_letters, events, every)


def attach_sinks(
    compiled: Compiled,
    views: Sequence[ViewSpec],
    sources: Mapping[str, Source],
    connections: Connections,
    *,
    output: str | None = None,
    dead_letter_topic: str | None = None,
    intermediate_topic: str | None = None,
    milestone_topic: str | None = None,
) -> list[OutputFolder]:
    """Deliver each view's rows to its sinks, the dead letters and the milestone events;
    returns the folders that file sinks write to, for the run to prepare and to mark
    complete (``_SUCCESS``).

    ``output`` adds the local default: JSON Lines under ``output/<view>/``,
    ``output/_dead_letter/`` and ``output/_milestones/``; ``milestone_topic`` sends the
    milestone events to Kafka too. Sink types are in :mod:`liveagg.transforms.sinks`.
    With ``intermediate_topic`` (level 1) the views' partials go there instead.
    """
    folders: dict[str, OutputFolder] = {}

    def folder(path: str) -> OutputFolder:
        key = path.rstrip("/") if "://" in path else os.path.abspath(path)
        return folders.setdefault(key, OutputFolder(path, set(), connections=connections))

    if output:
        folder(output).dead_letters = True
    letters = [compiled.dead_letters]  # and the rows a sink could not write
    # (view, bounded, label, sink, origin, path): applied once every sink is built and checked
    writes: list[tuple[str, bool, str, RowSink, str, str]] = []
    claims: dict[str, str] = {}  # an exclusive destination -> the view that writes there
    for view in views:
        if intermediate_topic:
            from liveagg.transforms.kafka.sink import WriteEnvelopes

            with _option("$.intermediate_topic"):
                compiled.views[view.name] | f"{view.name}/Partials" >> WriteEnvelopes(
                    intermediate_topic, connections, compiled.compiled[view.name]
                )
            continue
        sinks = list(view.sinks)
        if output:
            sinks.append(Sink("file", {"path": output}, COMMAND_LINE, "$.output"))
        for index, sink in enumerate(sinks):
            # A sink that cannot take the view's rows is an error of the entry that asked.
            own = (view.origin, view.path(f".sinks[{index}]"))
            origin, at = (sink.origin, sink.at) if sink.origin else own
            try:
                writer = build_sink(sink, connections)
                _claim(claims, writer, compiled.compiled[view.name])
            except ValueError as e:
                raise ViewError(origin, at, str(e)) from e
            if isinstance(writer, FileSink):
                folder(writer.path).views.add(view.name)
            label = f"{view.name}/Sink/{index}-{sink.type}"
            bounded = sources[view.source].bounded
            writes.append((view.name, bounded, label, writer, origin, at))
    for name, bounded, label, writer, origin, at in writes:  # applied after every check
        try:
            written = compiled.views[name] | label >> _Write(
                writer, compiled.compiled[name], bounded
            )
        except ValueError as e:
            raise ViewError(origin, at, str(e)) from e
        if getattr(writer, "gives_dead_letters", False):
            letters.append(written)
    all_bounded = all(source.bounded for source in sources.values())
    dead_letters = (
        tuple(letters) | "DeadLetters/WithSinks" >> beam.Flatten()
        if len(letters) > 1
        else compiled.dead_letters
    )
    if output:
        dead_letters | "DeadLetters/WriteFiles" >> WriteDeadLetters(
            output, bounded=all_bounded, connections=connections
        )
    if dead_letter_topic:
        from liveagg.transforms.kafka.sink import WriteDeadLettersToKafka

        with _option("$.dead_letter_topic"):
            dead_letters | "DeadLetters/Kafka" >> WriteDeadLettersToKafka(
                dead_letter_topic, connections
            )
    if compiled.milestones is not None:
        if output:
            folder(output).milestones = True
            compiled.milestones | "Milestones/WriteFiles" >> WriteMilestones(
                output, bounded=all_bounded, connections=connections
            )
        if milestone_topic:
            from liveagg.transforms.kafka.sink import WriteMilestonesToKafka

            with _option("$.milestone_topic"):
                compiled.milestones | "Milestones/Kafka" >> WriteMilestonesToKafka(
                    milestone_topic, connections
                )
    return list(folders.values())


def check_own_sinks(views: Sequence[ViewSpec]) -> list[ViewError]:
    """What a run would refuse of the views' own sinks before it starts, found from the view
    files alone, so that ``liveagg validate`` (what CI runs on view files) fails on it: a
    sink that cannot take its view's rows (two columns that map to one Cassandra column) and
    a destination that two views would share (a Cassandra table). Views with custom
    aggregations are left to the run: their columns' types come from the classes, which
    validation never calls."""
    errors: list[ViewError] = []
    claims: dict[str, str] = {}
    for view in views:
        if not all(is_builtin(a.kind) for a in view.aggregations):
            continue
        for index, sink in enumerate(view.sinks):
            try:
                writer = build_sink(sink, Connections())
            except (ValueError, ImportError):  # the run's settings or machine decide these
                continue  # (Kafka's bootstrap servers, an object store's client)
            try:
                _claim(claims, writer, as_compiled(view))
            except ValueError as e:
                errors.append(ViewError(view.origin, view.path(f".sinks[{index}]"), str(e)))
    return errors


def _claim(claims: dict[str, str], writer: RowSink, view: CompiledView) -> None:
    """Refuse a second view on a destination that holds one view's rows (a Cassandra table),
    before any sink is applied: applying creates tables."""
    exclusive = getattr(writer, "exclusive", None)
    if exclusive is None:
        return
    place = exclusive(view)
    owner = claims.setdefault(place.place, view.name)
    if owner != view.name:
        raise ValueError(
            f"views {owner!r} and {view.name!r} both write to {place.place}, where each would "
            f"overwrite the other's rows: {place.advice}"
        )


@contextlib.contextmanager
def _option(at: str) -> Iterator[None]:
    """A writer a command-line option asks for that cannot be built (no Kafka bootstrap
    servers, say) is an error of that option, as a sink's is of its entry."""
    try:
        yield
    except ValueError as e:
        raise ViewError(COMMAND_LINE, at, str(e)) from e


class _Write(beam.PTransform):
    """Applies one sink under a stable label."""

    def __init__(self, writer: Any, view: CompiledView, bounded: bool) -> None:
        super().__init__()
        self._writer = writer
        self._view = view
        self._bounded = bounded

    def expand(self, rows: beam.PCollection) -> Any:
        return self._writer.write(rows, self._view, bounded=self._bounded)
