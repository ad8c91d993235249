"""``first`` and ``last``: the value of the message with the smallest / largest event time.

These need the event time: the runtime calls ``coerce`` on the bare value and then feeds
``(event_time_us, value)`` pairs (``needs_event_time``). Messages with equal event times are
ordered by value (numbers, then strings, then booleans; ``first`` takes the smallest,
``last`` the largest), so the result never depends on arrival or merge order.

The accumulator is ``None`` or ``[event_time_us, value]``: constant size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from liveagg.combiners import _common as c
from liveagg.combiners.base import LiveaggCombineFn
from liveagg.combiners.registry import register

Entry = list[Any] | None


class _OrderedFn(c.ScalarInput, LiveaggCombineFn):
    """Shared body: keep the entry that ``_wins`` over every other.

    ``coerce`` checks the bare value (any JSON scalar), not the pair.
    """

    name = "ordered"
    needs_event_time = True
    _pick: Any = staticmethod(min)  # min for first, max for last

    def _wins(self, time_us: int, value: Any, entry: list[Any]) -> bool:
        raise NotImplementedError

    def create_accumulator(self) -> Entry:
        return None

    def add_input(self, accumulator: Entry, element: tuple[int, Any]) -> Entry:
        time_us, value = element
        if accumulator is None or self._wins(time_us, value, accumulator):
            return [time_us, value]
        return accumulator

    def add_inputs(self, accumulator: Entry, elements: Iterable[tuple[int, Any]]) -> Entry:
        # Find the winning time with C-level min/max, then break ties among its few entries.
        pairs = elements if isinstance(elements, list) else list(elements)
        if not pairs:
            return accumulator
        time_us = self._pick([pair[0] for pair in pairs])
        tied = [pair[1] for pair in pairs if pair[0] == time_us]
        value = tied[0] if len(tied) == 1 else self._pick(tied, key=c.order_key)
        if accumulator is None or self._wins(time_us, value, accumulator):
            return [time_us, value]
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Entry]) -> Entry:
        best = None
        for entry in accumulators:
            if entry is not None and (best is None or self._wins(entry[0], entry[1], best)):
                best = entry
        return best

    def extract_output(self, accumulator: Entry) -> Any:
        return None if accumulator is None else accumulator[1]

    def output_type(self) -> str:
        return "json"

    def encode_accumulator(self, accumulator: Entry) -> bytes:
        return c.dump_json(accumulator)

    def decode_accumulator(self, data: bytes) -> Entry:
        entry = c.load_json(data, self.name)
        if entry is not None and not (
            type(entry) is list
            and len(entry) == 2
            and type(entry[0]) is int
            and c.is_scalar(entry[1])
        ):
            raise c.corrupt(
                self.name,
                "expected null or [time, value] (an int and a string, finite number or "
                f"boolean), got {c.brief(entry)}",
            )
        return entry


@register("first")
class FirstFn(_OrderedFn):
    """Value of the message with the smallest event time; ``None`` for an empty group.

    Example:
        ``{"aggregation": "first", "col_name": "page", "aggregated_col_name": "landing_page"}``
    """

    name = "first"
    _pick = staticmethod(min)

    def _wins(self, time_us: int, value: Any, entry: list[Any]) -> bool:
        current = entry[0]
        if time_us != current:
            return time_us < current
        return c.order_key(value) < c.order_key(entry[1])


@register("last")
class LastFn(_OrderedFn):
    """Value of the message with the largest event time; ``None`` for an empty group."""

    name = "last"
    _pick = staticmethod(max)

    def _wins(self, time_us: int, value: Any, entry: list[Any]) -> bool:
        current = entry[0]
        if time_us != current:
            return time_us > current
        return c.order_key(value) > c.order_key(entry[1])
