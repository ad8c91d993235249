"""The benchmark views as plain facts (grouping, windows, aggregations) for other systems."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from liveagg.loader import load_views


class PlainAggregation(NamedTuple):
    kind: str
    column: str | None
    output: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class PlainView:
    name: str
    group: tuple[str, ...]
    #: (seconds, size as written) per granularity; one entry unless ``size`` is a list.
    windows: tuple[tuple[int, str], ...]
    aggregations: tuple[PlainAggregation, ...]
    grouping_sets: tuple[tuple[str, ...], ...] | None = None
    multi_granularity: bool = False  # rows carry ``granularity``

    @property
    def window_s(self) -> int:
        """The window of a single-granularity view."""
        if len(self.windows) != 1:
            raise ValueError(f"{self.name}: {len(self.windows)} granularities, not one")
        return self.windows[0][0]

    @property
    def kinds(self) -> set[str]:
        return {a.kind for a in self.aggregations}


def plain_views(folder: Path) -> list[PlainView]:
    """The views of ``folder``, which must be fixed windows over ``ts`` (the benchmark's)."""
    out = []
    for spec in load_views([str(folder)]):
        if spec.window.type != "fixed" or spec.filter is not None or spec.derived:
            raise ValueError(f"{spec.name}: benchmark views are unfiltered fixed windows")
        out.append(
            PlainView(
                spec.name,
                tuple(spec.grouping_cols),
                tuple((d.micros // 1_000_000, d.text) for d in spec.window.sizes),
                tuple(
                    PlainAggregation(a.kind, a.column, a.output, dict(a.params))
                    for a in spec.aggregations
                ),
                spec.grouping_sets,
                spec.window.multi_granularity,
            )
        )
    return out


def plain_only(folder: Path, kinds: set[str]) -> str | None:
    """Why a baseline that knows only ``kinds``, one grouping and one window cannot run
    the views of ``folder``; ``None`` when it can."""
    for view in plain_views(folder):
        if view.grouping_sets is not None or len(view.windows) != 1:
            return f"{view.name}: no grouping sets or granularities in this baseline"
        if view.kinds - kinds:
            return f"{view.name}: no {', '.join(sorted(view.kinds - kinds))} in this baseline"
    return None
