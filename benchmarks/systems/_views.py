"""The benchmark views as plain facts (grouping, window, aggregations) for other systems."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from liveagg.loader import load_views


@dataclass(frozen=True)
class PlainView:
    name: str
    group: tuple[str, ...]
    window_s: int
    aggregations: tuple[tuple[str, str | None, str], ...]  # (kind, column, output)


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
                spec.window.sizes[0].micros // 1_000_000,
                tuple((a.kind, a.column, a.output) for a in spec.aggregations),
            )
        )
    return out
