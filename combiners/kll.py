"""``approx_quantiles``: Apache DataSketches KLL sketch of doubles.

Accuracy and memory: the normalized rank error (the quantile returned for rank ``q`` has a
true rank within ``q ± ε``, with 99% confidence per query) is about ``ε = 1.33%`` for
``k=200`` (``2.6%`` at ``k=100``, ``0.68%`` at ``k=400``, ``0.28%`` at ``k=1000``); the
bound for the whole distribution at once (as ``get_pmf`` needs it) is ``1.65%`` at ``k=200``.
While a group has at most ``k`` values the sketch keeps them all and the quantiles are exact.
A sketch retains about ``3 k`` values: ~5 KiB at ``k=200`` for a million inputs, 8 bytes per
value below ``k`` values.

Quantiles follow the inclusive definition: the ``q``-quantile is the smallest value ``v`` such
that at least a fraction ``q`` of the inputs is ``<= v`` (numpy's ``inverted_cdf``), so every
result is one of the inputs. Ranks 0 and 1 give the exact minimum and maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

from liveagg.combiners import _common as c
from liveagg.combiners.base import LiveaggCombineFn
from liveagg.combiners.registry import register

_isfinite = math.isfinite

#: Below this batch size a Python loop beats building a numpy array.
_NUMPY_BATCH = 32


@register("approx_quantiles")
class ApproxQuantilesFn(LiveaggCombineFn):
    """Approximate quantiles of numbers, one float per requested rank; ``None`` when empty.

    Example:
        ``{"aggregation": "approx_quantiles", "col_name": "latency_ms",
        "aggregated_col_name": "latency_p", "params": {"quantiles": [0.5, 0.99]}}``
    """

    name = "approx_quantiles"

    def __init__(self, quantiles: list[float] | None = None, k: int = 200) -> None:
        """Check and keep the params.

        Args:
            quantiles: the ranks to report, each from 0 to 1; default ``[0.5, 0.9, 0.99]``.
            k: the KLL accuracy parameter, 8 to 65535; error shrinks and memory grows with it.
        """
        super().__init__()
        if quantiles is None:
            quantiles = [0.5, 0.9, 0.99]
        if (
            not isinstance(quantiles, list | tuple)
            or not quantiles
            or any(type(q) not in (int, float) or not 0 <= q <= 1 for q in quantiles)
        ):
            raise ValueError(
                f"{self.name}: params.quantiles must be a non-empty list of numbers from 0 to 1, "
                f"got {quantiles!r}"
            )
        self.quantiles = [float(q) for q in quantiles]
        self.k = c.check_int_param(self.name, "k", k, 8, 65535)

    def coerce(self, value: Any) -> float:
        """Accept ints and floats, as floats; refuse booleans, strings, NaN and infinity."""
        if type(value) is float and _isfinite(value):
            return value
        # The sketch holds doubles, and its update takes an int ten times slower than a float.
        return float(c.check_number(value, self.name))

    def create_accumulator(self) -> kll_doubles_sketch:
        return kll_doubles_sketch(self.k)

    def add_input(self, accumulator: kll_doubles_sketch, element: int | float) -> Any:
        accumulator.update(element if type(element) is float else float(element))
        return accumulator

    def add_inputs(self, accumulator: kll_doubles_sketch, elements: Iterable[int | float]) -> Any:
        values = elements if isinstance(elements, list) else list(elements)
        if len(values) >= _NUMPY_BATCH:
            accumulator.update(np.array(values, dtype=np.float64))
        else:
            update = accumulator.update
            for value in values:
                update(value if type(value) is float else float(value))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[kll_doubles_sketch]) -> Any:
        merged, rest = c.first_or_new(accumulators, self.create_accumulator)
        for sketch in rest:
            merged.merge(sketch)
        return merged

    def extract_output(self, accumulator: kll_doubles_sketch) -> list[float] | None:
        if accumulator.is_empty():
            return None
        values = accumulator.get_quantiles(self.quantiles, inclusive=True)
        # The sketch knows the exact extremes; ranks 0 and 1 report them rather than the
        # nearest retained item.
        low, high = accumulator.get_min_value(), accumulator.get_max_value()
        return [
            low if q == 0.0 else high if q == 1.0 else value
            for q, value in zip(self.quantiles, values, strict=True)
        ]

    def output_type(self) -> str:
        return "list<double>"

    def encode_accumulator(self, accumulator: kll_doubles_sketch) -> bytes:
        return c.dump_sketch(accumulator.serialize())

    def decode_accumulator(self, data: bytes) -> kll_doubles_sketch:
        return kll_doubles_sketch.deserialize(c.load_sketch(data, self.name))

    def display_data(self) -> dict[str, Any]:
        return {"quantiles": str(self.quantiles), "k": self.k}
