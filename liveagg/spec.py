"""The frozen, typed view spec that sits between the JSON files and the Beam graph.

Transforms never read raw view dicts: the loader (:mod:`liveagg.loader`) validates and
normalizes JSON into these objects, and everything downstream works from them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")
#: Significant digits a duration may have: far beyond any length a view accepts, and cheap
#: for int(), which is slow on thousands of digits and refuses more than 4300.
_MAX_DIGITS = 18
_UNIT_MICROS = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}

EventTimeFormat = Literal["epoch_s", "epoch_ms", "epoch_us", "iso8601"]
WindowType = Literal["fixed", "sliding", "session", "cumulative", "global"]
FilterOp = Literal["eq", "ne", "in", "not_in", "exists", "gt", "ge", "lt", "le"]


@dataclass(frozen=True)
class Duration:
    """A duration as written in a view (``"10m"``) and its length in microseconds.

    Microseconds are Beam's timestamp resolution, so window arithmetic stays in integers.
    """

    text: str
    micros: int

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``"<integer><ms|s|m|h|d>"``; raise ``ValueError`` naming what is accepted."""
        match = _DURATION.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            shown = repr(text) if len(repr(text)) <= 80 else repr(text)[:77] + "..."
            raise ValueError(
                f"invalid duration {shown}; expected an integer and a unit "
                "(ms, s, m, h, d), e.g. '500ms', '90s', '10m', '1d'"
            )
        digits = match.group(1).lstrip("0")
        if len(digits) > _MAX_DIGITS:
            raise ValueError(
                f"duration of {len(digits):,} digits; at most {_MAX_DIGITS} are accepted"
            )
        return cls(text, int(digits or "0") * _UNIT_MICROS[match.group(2)])

    @property
    def seconds(self) -> float:
        return self.micros / 1_000_000


@dataclass(frozen=True)
class EventTime:
    """Where a message's event time is read from; ``format=None`` detects by value type."""

    field: str
    format: EventTimeFormat | None = None


@dataclass(frozen=True)
class Window:
    """Event-time windowing. ``sizes`` holds one entry per granularity (fixed, sliding,
    cumulative); ``period`` is a sliding window's, ``step`` a cumulative window's, ``gap`` a
    session's. A ``global`` window has none of them: one window per key for all time."""

    type: WindowType
    sizes: tuple[Duration, ...] = ()
    period: Duration | None = None
    gap: Duration | None = None
    multi_granularity: bool = False  # ``size`` was a list: rows carry ``granularity``
    step: Duration | None = None

    @property
    def is_global(self) -> bool:
        """Rows of a global window carry no ``window_start``/``window_end``."""
        return self.type == "global"


@dataclass(frozen=True)
class Predicate:
    field: str
    op: FilterOp
    value: Any = None


@dataclass(frozen=True)
class AllOf:
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Filter, ...]


Filter = Predicate | AllOf | AnyOf


@dataclass(frozen=True)
class Aggregation:
    """One output column: ``kind`` is the registry name (``sum``, ``custom``, ...)."""

    kind: str
    output: str  # aggregated_col_name
    column: str | None = None  # col_name; None only for count(*)
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Derived:
    name: str
    expr: str


#: The format of a file, s3 or gcs sink that names none.
DEFAULT_FILE_FORMAT = "jsonl"
#: The file of the dead letters no view could read (``OUTPUT/_dead_letter/input.jsonl``, SPEC
#: section 4); views write theirs to ``<view>.jsonl``, so no view may take this name.
INPUT_DEAD_LETTERS = "input"


@dataclass(frozen=True)
class Sink:
    """A ``sinks`` entry. ``origin`` and ``at`` place an entry that did not come from the
    view's file (``<command line>``, ``$.sink[0]``), for its errors; empty: the view's own."""

    type: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    origin: str = field(default="", compare=False)
    at: str = field(default="", compare=False)


@dataclass(frozen=True)
class Eager:
    """``emit.eager``: while a key's aggregated ``column`` is below ``below``, each message
    (or batch of messages for the key) updates its row at once."""

    column: str
    below: int | float


@dataclass(frozen=True)
class Milestone:
    """Thresholds of one aggregated column, ascending: each fires once per key and window
    when the column first reaches it (SPEC section 1b)."""

    column: str
    at: tuple[int | float, ...]


@dataclass(frozen=True)
class Rollup:
    """What level 2 of a two-level run rolls a view up to: fewer columns, a longer window.

    ``size`` is a whole multiple of the view's fixed window, so each level-1 window falls in
    exactly one level-2 window.
    """

    grouping_cols: tuple[str, ...]
    size: Duration


@dataclass(frozen=True)
class ViewSpec:
    """A validated, normalized view. ``origin`` is the file it came from, for messages."""

    name: str
    event_time: EventTime
    grouping_cols: tuple[str, ...]
    window: Window
    aggregations: tuple[Aggregation, ...]
    source: str = "events"
    description: str = ""
    grouping_sets: tuple[tuple[str, ...], ...] | None = None
    allowed_lateness: Duration = Duration("0s", 0)
    early: Duration | None = None
    eager: Eager | None = None
    milestones: tuple[Milestone, ...] = ()
    state_ttl: Duration | None = None
    filter: Filter | None = None
    derived: tuple[Derived, ...] = ()
    sinks: tuple[Sink, ...] = ()
    rollup: Rollup | None = None
    hot_key_fanout: int | None = None
    origin: str = "<memory>"
    #: The view's JSON path in its file: ``$``, or ``$.views[1]`` in a ``{"views": [...]}``.
    at: str = field(default="$", compare=False)

    def path(self, field_path: str = "") -> str:
        """The JSON path of one of the view's fields in its file, for messages:
        ``path(".source")`` is ``$.views[1].source`` for the second view of a list."""
        return self.at + field_path

    @property
    def output_columns(self) -> tuple[str, ...]:
        """Aggregated then derived column names, in declaration order."""
        return tuple(a.output for a in self.aggregations) + tuple(d.name for d in self.derived)

    def final(self) -> ViewSpec:
        """The view its rows are written at: the roll-up applied, if it declares one.

        A one-level run aggregates this directly; a two-level run aggregates the view as
        declared at level 1 and this at level 2, so both give the same rows.
        """
        if self.rollup is None:
            return self
        return replace(
            self,
            grouping_cols=self.rollup.grouping_cols,
            window=Window("fixed", sizes=(self.rollup.size,)),
            rollup=None,
        )

    def fingerprint(self) -> str:
        """A hash of everything that decides what a level-1 accumulator holds.

        Level 2 merges an envelope only when its fingerprint equals the view's: a changed
        aggregation, parameter, filter, key or window would otherwise be merged silently.
        Name, sinks, lateness, early and eager firing, milestones and ``state_ttl`` are left
        out: they do not change accumulators.
        """
        parts = {
            "event_time": [self.event_time.field, self.event_time.format],
            "grouping_cols": self.grouping_cols,
            "grouping_sets": self.grouping_sets,
            "window": [
                self.window.type,
                [d.micros for d in self.window.sizes],
                self.window.period and self.window.period.micros,
                self.window.gap and self.window.gap.micros,
                *([self.window.step.micros] if self.window.step is not None else []),
            ],
            "filter": repr(self.filter),
            "aggregations": [
                [a.kind, a.output, a.column, dict(a.params)] for a in self.aggregations
            ],
            "rollup": self.rollup and [self.rollup.grouping_cols, self.rollup.size.micros],
        }
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
