"""Milestones: which thresholds a key's aggregated column has reached, as events with a stable
id. Free of Beam, so that the bounded path and the streaming operator fire the same events.

A view's ``milestones`` give ascending thresholds per aggregated column. A threshold ``t``
*fires* when the column's value in a pane of a (key, window) is ``>= t`` for the first time:
one event per (view, key, window, column, threshold), never two. As the thresholds ascend,
the ones a value reaches are a prefix of them, and so are the ones fired so far: the whole
state of a (key, window, column) is one count, :func:`fire`'s ``fired``, which the streaming
operator keeps with the window's state (so that a restore from a checkpoint does not fire
again). The windows of one cumulative period share that state: "100 today" fires once per
day, with the day's bounds (:meth:`~liveagg.engine.windows.WindowFn.milestone_window`).

A value that is null, not a number or not finite (a sum beyond the range of a double, whose
row holds null) reaches nothing.

An event is ``{"view", <grouping columns>, ["grouping_set"], ["granularity"], "window_start",
"window_end", "column", "threshold", "value", "milestone_id"}``: ``grouping_set`` and
``granularity`` only where the view's rows carry them, no window bounds for the global window.
``milestone_id`` is :func:`milestone_id`, a consumer's key to deduplicate by.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from liveagg.engine.compiled import variants
from liveagg.engine.partials import Variant
from liveagg.spec import ViewSpec
from liveagg.transforms.eventtime import WindowText

#: Hex digits of a ``milestone_id``: 128 bits of SHA-256.
ID_LENGTH = 32

Threshold = int | float


def reached(at: Sequence[Threshold], value: Any) -> int:
    """How many of the ascending thresholds ``at`` the value reaches (``value >= t``)."""
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            return 0
    elif kind is not int:  # None, bool, text, lists: nothing to compare
        return 0
    return bisect.bisect_right(at, value)


def fire(at: Sequence[Threshold], fired: int, value: Any) -> tuple[int, Sequence[Threshold]]:
    """A pane's value seen after ``fired`` thresholds had fired: the new count and the
    thresholds that fire now (empty when none; never one that had fired)."""
    now = reached(at, value)
    if now <= fired:
        return fired, ()
    return now, at[fired:now]


def milestone_id(
    view: str,
    grouping_set: int | None,
    granularity: str | None,
    key: Sequence[Any],
    window_start: str | None,
    window_end: str | None,
    column: str,
    threshold: Threshold,
) -> str:
    """The first :data:`ID_LENGTH` hex digits of the SHA-256 of the UTF-8 JSON array
    ``[view, grouping_set, granularity, [grouping values...], window_start, window_end,
    column, threshold]``, written compactly as Python's ``json.dumps(...,
    separators=(",", ":"), ensure_ascii=False)`` writes it.

    Every part is in the event itself, as it is there: ``null`` for what the event leaves
    out, grouping values in the order of ``grouping_cols`` (null where the grouping set
    leaves a column out), window bounds as RFC 3339 text, the threshold in the canonical form
    of numbers (``100``, not ``100.0``). The pane and the value are not part of it: a
    milestone that reaches a sink twice (a retried bundle, a replay) has one id.
    """
    parts = [
        view,
        grouping_set,
        granularity,
        list(key),
        window_start,
        window_end,
        column,
        threshold,
    ]
    text = json.dumps(parts, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:ID_LENGTH]


@dataclass(frozen=True)
class Watch:
    """One column's thresholds: ``index`` is its aggregation's position in the view."""

    column: str
    index: int
    at: tuple[Threshold, ...]


class ViewMilestones:
    """The milestones of one view: its watches, and the events of panes or final rows.

    Variants are numbered as the view's rows number them (granularities crossed with
    grouping sets, :func:`liveagg.engine.compiled.variants`). A view without ``milestones``
    is falsy and gives no events.

    Example::

        milestones = ViewMilestones(spec)
        fired = milestones.start()                  # kept with the window's state
        fired, events = milestones.pane(0, start, end, ["p1"], outputs, fired)
    """

    def __init__(self, spec: ViewSpec) -> None:
        self.view = spec.name
        self.grouping_cols = spec.grouping_cols
        outputs = [a.output for a in spec.aggregations]
        self.watches = tuple(
            Watch(m.column, outputs.index(m.column), m.at) for m in spec.milestones
        )
        self._variants = variants(spec)
        self._global = spec.window.is_global
        self._window_text = WindowText(10_000)

    def __bool__(self) -> bool:
        return bool(self.watches)

    def start(self) -> list[int]:
        """The state of a (key, milestone window) that has fired nothing: a count per watch."""
        return [0] * len(self.watches)

    def window(self, variant: int, start: int, end: int) -> tuple[int, int]:
        """The window whose milestones a pane of ``[start, end)`` fires: the cumulative
        period for a cumulative window, else the window itself. Panes of windows that map
        to one milestone window share one state (:meth:`start`)."""
        return self._variants[variant].window.milestone_window(start, end)

    def pane(
        self,
        variant: int,
        start: int,
        end: int,
        key: Sequence[Any],
        outputs: Sequence[Any],
        fired: list[int] | None,
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """The events a pane fires: ``key`` holds the grouping set's values (as a
        ``GroupKey`` decodes), ``outputs`` one value per aggregation, ``fired`` the state of
        the pane's milestone window (None: nothing fired yet). Returns the new state (keep
        it with the window's) and the events, in order of column and threshold."""
        state = list(fired) if fired is not None else self.start()
        events: list[dict[str, Any]] = []
        spec = self._variants[variant]
        full = self._full_key(spec, key)
        bounds = self.window(variant, start, end)
        for i, watch in enumerate(self.watches):
            value = outputs[watch.index]
            state[i], thresholds = fire(watch.at, state[i], value)
            for threshold in thresholds:
                events.append(self.event(spec, full, bounds, watch.column, threshold, value))
        return state, events

    def final(
        self,
        variants: Sequence[int],
        starts: Sequence[int],
        ends: Sequence[int],
        keys: Sequence[Sequence[Any]],
        outputs: Sequence[Sequence[Any]],
    ) -> list[dict[str, Any]]:
        """The events of final rows (a bounded run's one pane per key and window): every
        threshold each final value reaches. ``keys`` hold every grouping column (null where
        the set leaves one out), ``outputs`` one list per aggregation.

        The windows of one cumulative period share their milestones: each threshold fires
        once per (key, period), from the first window of the period (in order of end) whose
        value reaches it, with that window's value, as a stream would fire it.
        """
        events: list[dict[str, Any]] = []
        for watch in self.watches:
            values = outputs[watch.index]
            low = watch.at[0]
            # Most rows reach no threshold: one pass finds the few that do.
            rows = [
                r
                for r, value in enumerate(values)
                if type(value) in _NUMBERS and value >= low and reached(watch.at, value)
            ]
            shared: dict[tuple[Any, ...], tuple[int, list[tuple[int, int]]]] = {}
            for r in rows:
                spec = self._variants[variants[r]]
                if spec.window.kind != "cumulative":
                    bounds = (starts[r], ends[r])
                    for threshold in watch.at[: reached(watch.at, values[r])]:
                        events.append(
                            self.event(spec, keys[r], bounds, watch.column, threshold, values[r])
                        )
                    continue
                identity = (variants[r], starts[r], *(_typed(k) for k in keys[r]))
                shared.setdefault(identity, (r, []))[1].append((ends[r], r))
            for first, windows in shared.values():
                spec = self._variants[variants[first]]
                bounds = self.window(variants[first], starts[first], ends[first])
                fired = 0
                for _, r in sorted(windows):
                    fired, thresholds = fire(watch.at, fired, values[r])
                    for threshold in thresholds:
                        events.append(
                            self.event(spec, keys[r], bounds, watch.column, threshold, values[r])
                        )
        return events

    def event(
        self,
        variant: Variant,
        key: Sequence[Any],
        bounds: tuple[int, int],
        column: str,
        threshold: Threshold,
        value: Any,
    ) -> dict[str, Any]:
        """One milestone event; ``key`` holds every grouping column's value."""
        event: dict[str, Any] = {"view": self.view}
        event.update(zip(self.grouping_cols, key, strict=True))
        if variant.grouping_set is not None:
            event["grouping_set"] = variant.grouping_set
        if variant.granularity is not None:
            event["granularity"] = variant.granularity
        start = end = None
        if not self._global:
            start, end = self._window_text(bounds)
            event["window_start"], event["window_end"] = start, end
        event["column"] = column
        event["threshold"] = threshold
        event["value"] = value
        event["milestone_id"] = milestone_id(
            self.view,
            variant.grouping_set,
            variant.granularity,
            key,
            start,
            end,
            column,
            threshold,
        )
        return event

    def _full_key(self, variant: Variant, values: Sequence[Any]) -> list[Any]:
        """A grouping set's values as every grouping column's (null where it leaves one out)."""
        if len(values) == len(self.grouping_cols):
            return list(values)
        full: list[Any] = [None] * len(self.grouping_cols)
        for position, value in zip(variant.positions, values, strict=True):
            full[position] = value
        return full


_NUMBERS = (int, float)


def _typed(value: Any) -> tuple[str, Any]:
    """A grouping value that is not equal to one of another JSON type (``True`` is not 1)."""
    return type(value).__name__, value
