"""A complete custom aggregation: ``RangeFn``, the spread ``max - min`` of a numeric column.

Copy this module into your own package and adapt it. Use it from a view either by its dotted
path::

    {"aggregation": "custom", "col_name": "price", "aggregated_col_name": "price_range",
     "params": {"combine_fn": "examples.custom_combiners:RangeFn"}}

or, once registered under the entry-point group ``liveagg.combiners`` in your package's
``pyproject.toml``, by name::

    [project.entry-points."liveagg.combiners"]
    range = "my_package.combiners:RangeFn"

    {"aggregation": "range", "col_name": "price", "aggregated_col_name": "price_range"}

Any other key in ``params`` is passed to the class as a keyword argument (here: ``scale``).
A view can only name a subclass of ``LiveaggCombineFn``: a function or any other class is a
validation error, and nothing it names is called.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from typing import Any

from liveagg.combiners import InputError, LiveaggCombineFn, shown

# The accumulator on the wire: one version byte, then nothing (no input yet) or the minimum
# and maximum as two little-endian doubles. A version byte lets a later release change the
# layout and still read what an older one wrote.
_VERSION = 1
_HEADER = bytes([_VERSION])
_PAIR = struct.Struct("<dd")

# In memory: None (no input yet) or [minimum, maximum].
Accumulator = list[float] | None


class RangeFn(LiveaggCombineFn):
    """``max - min`` of a numeric column, times ``scale``; ``None`` for a group with no values.

    Example:
        >>> fn = RangeFn()
        >>> acc = fn.add_inputs(fn.create_accumulator(), [fn.coerce(v) for v in (3, 10, 7)])
        >>> fn.extract_output(fn.decode_accumulator(fn.encode_accumulator(acc)))
        7.0
    """

    def __init__(self, scale: float = 1.0) -> None:
        """Check the params once, when ``liveagg run`` loads the view, not per message.

        ``liveagg validate`` does not call this: it checks the params' names against this
        signature. Keep the module's top level free of side effects too: naming the class in
        a view imports the module, which runs it.

        Args:
            scale: multiplies the result, e.g. ``0.001`` to turn milliseconds into seconds.
        """
        super().__init__()
        if type(scale) not in (int, float) or not math.isfinite(scale):
            raise ValueError(f"range: params.scale must be a finite number, got {scale!r}")
        self.scale = float(scale)

    def coerce(self, value: Any) -> float:
        """Turn a raw JSON value into an input, or say why it is unusable.

        The message then goes to the view's dead-letter output with ``reason``; other views
        still use it.
        """
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError("not_numeric", f"range needs a number, got {shown(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise InputError("not_finite", f"range needs a finite number, got {shown(value)}")
        return number

    def create_accumulator(self) -> Accumulator:
        return None

    def add_input(self, accumulator: Accumulator, element: float) -> Accumulator:
        if accumulator is None:
            return [element, element]
        if element < accumulator[0]:
            accumulator[0] = element
        elif element > accumulator[1]:
            accumulator[1] = element
        return accumulator

    def add_inputs(self, accumulator: Accumulator, elements: Iterable[float]) -> Accumulator:
        # Optional: a batch path. min() and max() over a list run in C.
        values = elements if isinstance(elements, list) else list(elements)
        if not values:
            return accumulator
        return self.merge_accumulators([accumulator, [min(values), max(values)]])

    def merge_accumulators(self, accumulators: Iterable[Accumulator]) -> Accumulator:
        merged: Accumulator = None
        for acc in accumulators:
            if acc is None:
                continue
            if merged is None:
                merged = [acc[0], acc[1]]
            else:
                merged[0] = min(merged[0], acc[0])
                merged[1] = max(merged[1], acc[1])
        return merged

    def extract_output(self, accumulator: Accumulator) -> float | None:
        if accumulator is None:
            return None
        return (accumulator[1] - accumulator[0]) * self.scale

    def output_type(self) -> str:
        return "double"

    def encode_accumulator(self, accumulator: Accumulator) -> bytes:
        if accumulator is None:
            return _HEADER
        return _HEADER + _PAIR.pack(accumulator[0], accumulator[1])

    def decode_accumulator(self, data: bytes) -> Accumulator:
        if data[:1] != _HEADER:
            raise ValueError(f"range: unknown accumulator version {data[:1]!r}")
        if len(data) == 1:
            return None
        low, high = _PAIR.unpack(data[1:])
        return [low, high]

    def display_data(self) -> dict[str, Any]:
        return {"scale": self.scale}
