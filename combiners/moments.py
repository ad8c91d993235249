"""``variance`` and ``stddev``: Welford's running moments, merged with Chan's formula.

The accumulator is ``[count, mean, m2]`` (``m2`` = sum of squared deviations from the mean):
numerically stable, constant size, and merged exactly as well as added to, which a naive
``sum(x) / sum(x*x)`` accumulator is not (it cancels catastrophically for large means).

``m2`` beyond the range of a double (values around ``±1e154`` apart, say) cannot be kept: the
accumulator becomes ``[count, null, null]`` for good (JSON has no infinity) and the result
is ``inf``, which the row writes as null with an ``overflow`` dead letter. Products are
ordered so that no intermediate overflows before ``m2`` itself would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from liveagg.combiners import _common as c
from liveagg.combiners.base import LiveaggCombineFn
from liveagg.combiners.registry import register

_N, _MEAN, _M2 = range(3)


def _combine(acc: list[Any], n: int, mean: float | None, m2: float | None) -> None:
    """Fold moments ``(n, mean, m2)`` into ``acc`` (Chan, Golub & LeVeque)."""
    if not n:
        return
    na = acc[_N]
    if not na:
        acc[_N], acc[_MEAN], acc[_M2] = n, mean, m2
        _check(acc)
        return
    total = na + n
    acc[_N] = total
    if m2 is None or acc[_M2] is None:
        acc[_MEAN] = acc[_M2] = None
        return
    delta = mean - acc[_MEAN]  # type: ignore[operator]
    acc[_MEAN] += delta * (n / total)
    acc[_M2] += m2 + delta * (delta * (na * n / total))
    _check(acc)


def _check(acc: list[Any]) -> None:
    """Mark moments that left the double range as overflowed (``None``)."""
    mean, m2 = acc[_MEAN], acc[_M2]
    if m2 is not None and (mean - mean or m2 - m2):  # inf or nan
        acc[_MEAN] = acc[_M2] = None


class _MomentsFn(c.NumberInput, LiveaggCombineFn):
    """Shared body of ``variance`` and ``stddev``."""

    name = "moments"

    def __init__(self, ddof: int = 1) -> None:
        """Check and keep the params.

        Args:
            ddof: delta degrees of freedom, an integer >= 0: the divisor is ``n - ddof``.
                1 (the default) gives the sample variance, 0 the population variance.
        """
        super().__init__()
        self.ddof = c.check_int_param(self.name, "ddof", ddof, 0)

    def create_accumulator(self) -> list[Any]:
        return [0, 0.0, 0.0]

    def add_input(self, accumulator: list[Any], element: int | float) -> list[Any]:
        n = accumulator[_N] + 1
        accumulator[_N] = n
        mean = accumulator[_MEAN]
        if mean is None:  # overflowed
            return accumulator
        delta = element - mean
        mean += delta / n
        accumulator[_MEAN] = mean
        accumulator[_M2] += delta * (element - mean)
        _check(accumulator)
        return accumulator

    def add_inputs(self, accumulator: list[Any], elements: Iterable[int | float]) -> list[Any]:
        # Two passes over the batch with exact sums, then one merge: fewer Python operations
        # per element than Welford's update, and at least as accurate.
        values = elements if isinstance(elements, list) else list(elements)
        n = len(values)
        if n:
            try:
                mean = math.fsum(values) / n
            except OverflowError:  # the sum leaves the double range, the mean does not
                mean = float(sum(map(Fraction, values)) / n)
            try:
                m2: float | None = math.fsum([(v - mean) * (v - mean) for v in values])
            except OverflowError:
                m2 = math.inf
            _combine(accumulator, n, mean, m2)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[Any]]) -> list[Any]:
        merged, rest = c.first_or_new(accumulators, self.create_accumulator)
        for acc in rest:
            _combine(merged, acc[_N], acc[_MEAN], acc[_M2])
        return merged

    def _variance(self, accumulator: list[Any]) -> float | None:
        n = accumulator[_N]
        if n <= self.ddof:
            return None
        if accumulator[_M2] is None:
            return math.inf  # overflowed: written as null, with an ``overflow`` dead letter
        return max(accumulator[_M2], 0.0) / (n - self.ddof)

    def output_type(self) -> str:
        return "double"

    def encode_accumulator(self, accumulator: list[Any]) -> bytes:
        return c.dump_json(accumulator)

    def decode_accumulator(self, data: bytes) -> list[Any]:
        acc = c.load_json(data, self.name)
        if not (
            type(acc) is list
            and len(acc) == 3
            and c.is_count(acc[_N])
            and (
                (c.is_finite_float(acc[_MEAN]) and c.is_finite_float(acc[_M2]))
                or (acc[_MEAN] is None and acc[_M2] is None)  # overflowed
            )
        ):
            raise c.corrupt(
                self.name,
                "expected [count, mean, m2] (a count and two finite floats, or two nulls once "
                f"m2 overflowed), got {c.brief(acc)}",
            )
        return acc

    def display_data(self) -> dict[str, Any]:
        return {"ddof": self.ddof}


@register("variance")
class VarianceFn(_MomentsFn):
    """Variance of numbers, ``m2 / (n - ddof)``; ``None`` while ``n <= ddof``.

    Example:
        ``{"aggregation": "variance", "col_name": "latency_ms", "aggregated_col_name": "v",
        "params": {"ddof": 0}}``
    """

    name = "variance"

    def extract_output(self, accumulator: list[Any]) -> float | None:
        return self._variance(accumulator)


@register("stddev")
class StddevFn(_MomentsFn):
    """Standard deviation of numbers, the square root of ``variance`` with the same ``ddof``."""

    name = "stddev"

    def extract_output(self, accumulator: list[Any]) -> float | None:
        variance = self._variance(accumulator)
        return None if variance is None else math.sqrt(variance)
