"""Compile views into one Beam pipeline: each source is read once and fans out to its views."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import apache_beam as beam

from liveagg.errors import ViewError
from liveagg.spec import ViewSpec
from liveagg.transforms.bounded import BoundedAggregate
from liveagg.transforms.sinks.files import WriteDeadLetters, WriteViewFiles
from liveagg.transforms.streaming import StreamingAggregate


class Source(Protocol):
    bounded: bool

    def read(self, pipeline: beam.Pipeline, label: str) -> beam.PCollection: ...

    def describe(self) -> str: ...


@dataclass
class Compiled:
    """What :func:`build` added to a pipeline: rows per view and all dead letters."""

    views: dict[str, beam.PCollection]
    dead_letters: beam.PCollection


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
) -> Compiled:
    """Add the views to ``pipeline``.

    ``streaming=None`` picks the path from the sources: bounded sources use the bounded path
    (window folded into the key, one ON_TIME pane per window); unbounded sources, or
    ``streaming=True``, use the window operator with early, on-time and late panes.
    """
    by_source: dict[str, list[ViewSpec]] = defaultdict(list)
    for view in views:
        by_source[view.source].append(view)
    rows: dict[str, beam.PCollection] = {}
    dead: list[beam.PCollection] = []
    for source_name, source_views in by_source.items():
        source = sources[source_name]
        messages = source.read(pipeline, f"Read/{source_name}")
        use_streaming = (not source.bounded) if streaming is None else streaming
        transform = (
            StreamingAggregate(source_views, early_panes=not source.bounded)
            if use_streaming
            else BoundedAggregate(source_views)
        )
        try:
            out = messages | f"Aggregate/{source_name}" >> transform
        except Exception as e:  # a view that cannot be compiled names itself
            raise ViewError(source_views[0].origin, "$", f"source {source_name!r}: {e}") from e
        rows.update(out["views"])
        dead.append(out["dead_letters"])
    dead_letters = tuple(dead) | "DeadLetters" >> beam.Flatten()
    return Compiled(rows, dead_letters)


def write_local_output(compiled: Compiled, views: Sequence[ViewSpec], directory: str) -> None:
    """The default sink: JSON Lines under ``directory/<view>/`` and ``directory/_dead_letter/``."""
    for view in views:
        compiled.views[view.name] | f"{view.name}/WriteFiles" >> WriteViewFiles(
            directory, view.name, session=view.window.type == "session"
        )
    compiled.dead_letters | "DeadLetters/WriteFiles" >> WriteDeadLetters(directory)
