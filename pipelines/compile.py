"""Compile views into one Beam pipeline: each source is read once and fans out to its views."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import apache_beam as beam

from liveagg.errors import ViewError, ViewErrors
from liveagg.spec import Sink, ViewSpec
from liveagg.transforms.bounded import BoundedAggregate
from liveagg.transforms.plan import MILESTONES
from liveagg.transforms.sinks import Connections, build_sink
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
                "$.source",
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
    for source_name, source_views in by_source.items():
        source = sources[source_name]
        use_streaming = (not source.bounded) if streaming is None else streaming
        label = f"Read/{source_name}"
        if not use_streaming and hasattr(source, "read_batches"):
            messages = source.read_batches(pipeline, label)
        else:
            messages = source.read(pipeline, label)
        if use_streaming:
            how = "an unbounded Kafka read" if not source.bounded else "--streaming"
            check_streaming(source_views, how, two_level=partials)
        transform = (
            StreamingAggregate(source_views, early_panes=not source.bounded, partials=partials)
            if use_streaming
            else BoundedAggregate(source_views, partials=partials)
        )
        try:
            out = messages | f"Aggregate/{source_name}" >> transform
        except Exception as e:  # a view that cannot be compiled names itself
            raise ViewError(source_views[0].origin, "$", f"source {source_name!r}: {e}") from e
        rows.update(out["views"])
        dead.append(out["dead_letters"])
        if MILESTONES in out:
            milestones.append(out[MILESTONES])
    dead_letters = tuple(dead) | "DeadLetters" >> beam.Flatten()
    events = tuple(milestones) | "Milestones" >> beam.Flatten() if milestones else None
    return Compiled(rows, dead_letters, events)


def check_streaming(views: Sequence[ViewSpec], how: str, *, two_level: bool = False) -> None:
    """Refuse, naming each file and field, what the streaming window operator of this build
    does not do yet: a global window in shards, at either level of a two-level run
    (``two_level``) or with ``hot_key_fanout``. The operator that merges shards knows no
    event time of the messages, which ``state_ttl`` counts from, so it would keep every key
    for ever; such a view runs one-level, or on the bounded path."""
    errors = []
    for view in views:
        if not view.window.is_global:
            continue
        if two_level:
            path, what, instead = "$.window.type", "in a two-level run", "run it in one level"
        elif view.hot_key_fanout is not None:
            path, what, instead = "$.hot_key_fanout", "with hot_key_fanout", "remove hot_key_fanout"
        else:
            continue
        errors.append(
            ViewError(
                view.origin,
                path,
                f"view {view.name!r}: the streaming window operator ({how}) does not keep "
                f"global windows {what} yet; run the view on the bounded path (files, or a "
                f"Kafka read without --unbounded; no --streaming), or {instead}",
            )
        )
    if errors:
        raise ViewErrors(errors)


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
    for view in views:
        if intermediate_topic:
            from liveagg.transforms.sinks.kafka import WriteEnvelopes

            compiled.views[view.name] | f"{view.name}/Partials" >> WriteEnvelopes(
                intermediate_topic, connections, view
            )
            continue
        bounded = sources[view.source].bounded
        rows = compiled.views[view.name]
        sinks = list(view.sinks)
        if output:
            sinks.append(Sink("file", {"path": output, "format": "jsonl"}))
        for index, sink in enumerate(sinks):
            try:
                writer = build_sink(sink, connections)
            except ValueError as e:
                raise ViewError(view.origin, f"$.sinks[{index}]", str(e)) from e
            if isinstance(writer, FileSink):
                folder(writer.path).views.add(view.name)
            label = f"{view.name}/Sink/{index}-{sink.type}"
            rows | label >> _Write(writer, view, bounded)
    all_bounded = all(source.bounded for source in sources.values())
    if output:
        compiled.dead_letters | "DeadLetters/WriteFiles" >> WriteDeadLetters(
            output, bounded=all_bounded, connections=connections
        )
    if dead_letter_topic:
        from liveagg.transforms.sinks.kafka import WriteDeadLettersToKafka

        compiled.dead_letters | "DeadLetters/Kafka" >> WriteDeadLettersToKafka(
            dead_letter_topic, connections
        )
    if compiled.milestones is not None:
        if output:
            folder(output).milestones = True
            compiled.milestones | "Milestones/WriteFiles" >> WriteMilestones(
                output, bounded=all_bounded, connections=connections
            )
        if milestone_topic:
            from liveagg.transforms.sinks.kafka import WriteMilestonesToKafka

            compiled.milestones | "Milestones/Kafka" >> WriteMilestonesToKafka(
                milestone_topic, connections
            )
    return list(folders.values())


class _Write(beam.PTransform):
    """Applies one sink under a stable label."""

    def __init__(self, writer: Any, view: ViewSpec, bounded: bool) -> None:
        super().__init__()
        self._writer = writer
        self._view = view
        self._bounded = bounded

    def expand(self, rows: beam.PCollection) -> Any:
        return self._writer.write(rows, self._view, bounded=self._bounded)
