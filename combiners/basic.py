"""``count``, ``sum``, ``min``, ``max`` and ``mean``: exact, constant-size aggregations."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from liveagg.combiners import _common as c
from liveagg.combiners.base import LiveaggCombineFn
from liveagg.combiners.registry import register


@register("count")
class CountFn(LiveaggCombineFn):
    """Number of inputs.

    Without ``col_name`` the runtime feeds one ``1`` per message (``counts_rows``), so the
    result is the number of messages; with ``col_name`` it feeds the column's non-null values.
    Accepts any value. An empty group counts 0.

    Example:
        ``{"aggregation": "count", "aggregated_col_name": "events"}``
    """

    name = "count"
    counts_rows = True

    def create_accumulator(self) -> int:
        return 0

    def add_input(self, accumulator: int, element: Any) -> int:
        return accumulator + 1

    def add_inputs(self, accumulator: int, elements: Iterable[Any]) -> int:
        if hasattr(elements, "__len__"):
            return accumulator + len(elements)  # type: ignore[arg-type]
        return accumulator + sum(1 for _ in elements)

    def merge_accumulators(self, accumulators: Iterable[int]) -> int:
        return sum(accumulators)

    def extract_output(self, accumulator: int) -> int:
        return accumulator

    def output_type(self) -> str:
        return "bigint"

    def encode_accumulator(self, accumulator: int) -> bytes:
        return c.dump_json(accumulator)

    def decode_accumulator(self, data: bytes) -> int:
        acc = c.load_json(data, self.name)
        if not c.is_count(acc):
            raise c.corrupt(self.name, f"expected a count of at least 0, got {c.brief(acc)}")
        return acc


# The running sum of numbers: ints are summed exactly as Python ints; floats with Neumaier's
# compensated summation, so that float sums barely depend on the order inputs arrive in
# (a plain float sum over shards merged in another order differs in the last digits).
# Layout: [int_sum, float_sum, float_compensation, int_count, float_count(, spilled)].
# A running float sum never leaves the double range: when the next addition would, the sum
# and the value move to ``spilled``, an exact integer count of 2**-1074 (the smallest
# double), so two 1.7e308 and a -1.7e308 sum to 1.7e308 in any order, and only a result
# beyond the range is an overflow (an infinity, which the row writes as null with a dead
# letter). The sixth field exists only once something spilled: ordinary accumulators keep
# their five fields and their bytes.
_ISUM, _FSUM, _COMP, _NINT, _NFLOAT, _SPILLED = range(6)
_SCALE = 2**1074  # a double times this is an integer


def _new_sum() -> list[Any]:
    return [0, 0.0, 0.0, 0, 0]


def _units(value: float) -> int:
    """A finite double as an exact integer number of 2**-1074."""
    numerator, denominator = value.as_integer_ratio()  # the denominator is a power of 2
    return numerator * (_SCALE // denominator)


def _spill(acc: list[Any], units: int) -> None:
    if len(acc) == _SPILLED:
        acc.append(0)
    acc[_SPILLED] += units


def _add_number(acc: list[Any], value: int | float) -> list[Any]:
    if type(value) is int:
        acc[_ISUM] += value
        acc[_NINT] += 1
    else:
        _add_float(acc, value)
        acc[_NFLOAT] += 1
    return acc


def _add_float(acc: list[Any], value: float) -> None:
    total = acc[_FSUM]
    new_total = total + value
    if new_total - new_total:  # inf (or nan): the sum would leave the double range
        _spill(acc, _units(total) + _units(value))
        acc[_FSUM] = 0.0
        return
    if abs(total) >= abs(value):
        acc[_COMP] += (total - new_total) + value
    else:
        acc[_COMP] += (value - new_total) + total
    acc[_FSUM] = new_total


def _add_numbers(acc: list[Any], elements: Iterable[int | float]) -> list[Any]:
    values = elements if isinstance(elements, list) else list(elements)
    floats = [v for v in values if type(v) is not int]
    if floats:
        ints = [v for v in values if type(v) is int]
        acc[_ISUM] += sum(ints)
        acc[_NINT] += len(ints)
        # fsum is exact for the batch; one compensated add folds it into the running total.
        try:
            _add_float(acc, math.fsum(floats))
        except OverflowError:  # the batch's partial sums leave the double range
            _spill(acc, sum(map(_units, floats)))
        acc[_NFLOAT] += len(floats)
    else:
        acc[_ISUM] += sum(values)
        acc[_NINT] += len(values)
    return acc


def _merge_sums(accumulators: Iterable[list[Any]]) -> list[Any]:
    merged, rest = c.first_or_new(accumulators, _new_sum)
    for acc in rest:
        merged[_ISUM] += acc[_ISUM]
        merged[_NINT] += acc[_NINT]
        merged[_NFLOAT] += acc[_NFLOAT]
        _add_float(merged, acc[_FSUM])
        merged[_COMP] += acc[_COMP]
        if len(acc) > _SPILLED and acc[_SPILLED]:
            _spill(merged, acc[_SPILLED])
    return merged


def _float_part(acc: list[Any]) -> float:
    return math.fsum((acc[_FSUM], acc[_COMP]))


def _total(acc: list[Any], count: int = 1) -> float:
    """``(int sum + float sum) / count`` correctly rounded from the exact sum, as used once
    something spilled or a rounded result overflowed; ``±inf`` beyond the double range."""
    spilled = acc[_SPILLED] if len(acc) > _SPILLED else 0
    exact = acc[_ISUM] * _SCALE + spilled + _units(acc[_FSUM]) + _units(acc[_COMP])
    try:
        return exact / (_SCALE * count)  # int / int: correctly rounded, or OverflowError
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


def _encode_sum(acc: list[Any]) -> bytes:
    """One form per value: a spilled part that came back to 0 is left out."""
    return c.dump_json(acc if len(acc) == _SPILLED or acc[_SPILLED] else acc[:_SPILLED])


def _decode_sum(data: bytes, owner: str) -> list[Any]:
    acc = c.load_json(data, owner)
    if not (
        type(acc) is list
        and len(acc) in (5, 6)
        and type(acc[_ISUM]) is int
        and c.is_finite_float(acc[_FSUM])
        and c.is_finite_float(acc[_COMP])
        and c.is_count(acc[_NINT])
        and c.is_count(acc[_NFLOAT])
        and (len(acc) == 5 or (type(acc[_SPILLED]) is int and acc[_SPILLED] != 0))
    ):
        raise c.corrupt(
            owner,
            "expected [int sum, float sum, compensation, int count, float count(, spilled)] "
            f"(an int, two finite floats, two counts(, an int other than 0)), got {c.brief(acc)}",
        )
    return acc


class _NumericFn(c.IntegralNumberInput, LiveaggCombineFn):
    """Shared input check of ``sum`` and ``mean``: numbers in their canonical form, so that
    ``2.0`` counts as the integer ``2``, as it does for ``min``, ``max`` and distinct values
    (and as a column decoder that holds numbers as doubles can tell)."""

    name = "numeric"


@register("sum")
class SumFn(_NumericFn):
    """Sum of numbers, exact for integers.

    The sum of integers stays an integer (of any size); one non-integral number among the
    inputs makes the result a float. An integral number counts as an integer however it is
    written (``2.0`` is ``2``, as for ``min``, ``max`` and distinct values). Floats are
    summed with compensation, so the result is within a few ulps of the exact sum whatever
    the order of inputs and merges. An empty group yields ``None``.

    ``output_type`` is ``double``: typed sinks store a double column, JSON sinks write the
    value as it is (integer sums as integers).

    Example:
        ``{"aggregation": "sum", "col_name": "amount", "aggregated_col_name": "total"}``
    """

    name = "sum"

    def create_accumulator(self) -> list[Any]:
        return _new_sum()

    def add_input(self, accumulator: list[Any], element: int | float) -> list[Any]:
        return _add_number(accumulator, element)

    def add_inputs(self, accumulator: list[Any], elements: Iterable[int | float]) -> list[Any]:
        return _add_numbers(accumulator, elements)

    def merge_accumulators(self, accumulators: Iterable[list[Any]]) -> list[Any]:
        return _merge_sums(accumulators)

    def extract_output(self, accumulator: list[Any]) -> int | float | None:
        """The sum; ``±inf`` when it is beyond the range of a double (written as null)."""
        if not accumulator[_NFLOAT]:
            return accumulator[_ISUM] if accumulator[_NINT] else None
        if len(accumulator) > _SPILLED:
            return _total(accumulator)
        floats = _float_part(accumulator)
        total = accumulator[_ISUM]
        if not total:
            return floats
        try:
            result = math.fsum((float(total), floats))
        except OverflowError:  # the int sum alone is beyond a double
            result = math.inf
        return result if math.isfinite(result) else _total(accumulator)

    def output_type(self) -> str:
        return "double"

    def encode_accumulator(self, accumulator: list[Any]) -> bytes:
        return _encode_sum(accumulator)

    def decode_accumulator(self, data: bytes) -> list[Any]:
        return _decode_sum(data, self.name)


@register("mean")
class MeanFn(_NumericFn):
    """Arithmetic mean of numbers, as a float; an empty group yields ``None``.

    Uses the same exact-int / compensated-float sum as ``sum``.
    """

    name = "mean"

    def create_accumulator(self) -> list[Any]:
        return _new_sum()

    def add_input(self, accumulator: list[Any], element: int | float) -> list[Any]:
        return _add_number(accumulator, element)

    def add_inputs(self, accumulator: list[Any], elements: Iterable[int | float]) -> list[Any]:
        return _add_numbers(accumulator, elements)

    def merge_accumulators(self, accumulators: Iterable[list[Any]]) -> list[Any]:
        return _merge_sums(accumulators)

    def extract_output(self, accumulator: list[Any]) -> float | None:
        count = accumulator[_NINT] + accumulator[_NFLOAT]
        if not count:
            return None
        if len(accumulator) > _SPILLED:
            return _total(accumulator, count)
        if not accumulator[_NFLOAT]:  # int / int is correctly rounded, however large the sum
            return accumulator[_ISUM] / count
        # SQL's SUM / COUNT: the sum as a double, then one division (the int and float parts
        # divided apart and added were one or two units in the last place off 59 / 57).
        try:
            mean = (accumulator[_ISUM] + _float_part(accumulator)) / count
        except OverflowError:  # the int sum alone is beyond a double
            mean = math.inf
        return mean if math.isfinite(mean) else _total(accumulator, count)

    def output_type(self) -> str:
        return "double"

    def encode_accumulator(self, accumulator: list[Any]) -> bytes:
        return _encode_sum(accumulator)

    def decode_accumulator(self, data: bytes) -> list[Any]:
        return _decode_sum(data, self.name)


# min/max keep one number, the extreme so far, or None before the first input.


class _ExtremeFn(c.CanonicalNumberInput, LiveaggCombineFn):
    """Shared body of ``min`` and ``max``: numbers only, anything else is ``not_numeric``.

    ``coerce`` gives numbers their canonical form (``2.0`` -> ``2``, ``-0.0`` -> ``0``) so that
    equal numbers give one answer whichever arrived first. Ints stay ints (of any size), so
    ``output_type`` is ``json``: a ``double`` column would turn the minimum of an integer
    column into a float.
    """

    name = "extreme"

    def create_accumulator(self) -> int | float | None:
        return None

    def extract_output(self, accumulator: int | float | None) -> int | float | None:
        return accumulator

    def output_type(self) -> str:
        return "json"

    def encode_accumulator(self, accumulator: int | float | None) -> bytes:
        return c.dump_json(accumulator)

    def decode_accumulator(self, data: bytes) -> int | float | None:
        acc = c.load_json(data, self.name)
        if acc is not None and (type(acc) is not int and not c.is_finite_float(acc)):
            raise c.corrupt(self.name, f"expected a finite number or null, got {c.brief(acc)}")
        return acc


@register("min")
class MinFn(_ExtremeFn):
    """Smallest number; an empty group yields ``None``.

    Strings, booleans, arrays and objects are refused (``not_numeric``). The result keeps its
    JSON type: the minimum of ints is an int.

    Example:
        ``{"aggregation": "min", "col_name": "latency_ms", "aggregated_col_name": "fastest"}``
    """

    name = "min"

    def add_input(self, accumulator: int | float | None, element: int | float) -> int | float:
        if accumulator is None or element < accumulator:
            return element
        return accumulator

    def add_inputs(
        self, accumulator: int | float | None, elements: Iterable[int | float]
    ) -> int | float | None:
        best = min(elements, default=None)
        if best is None or (accumulator is not None and accumulator <= best):
            return accumulator
        return best

    def merge_accumulators(self, accumulators: Iterable[int | float | None]) -> int | float | None:
        return min((acc for acc in accumulators if acc is not None), default=None)


@register("max")
class MaxFn(_ExtremeFn):
    """Largest number; an empty group yields ``None``.

    Strings, booleans, arrays and objects are refused (``not_numeric``). The result keeps its
    JSON type: the maximum of ints is an int.

    Example:
        ``{"aggregation": "max", "col_name": "latency_ms", "aggregated_col_name": "slowest"}``
    """

    name = "max"

    def add_input(self, accumulator: int | float | None, element: int | float) -> int | float:
        if accumulator is None or element > accumulator:
            return element
        return accumulator

    def add_inputs(
        self, accumulator: int | float | None, elements: Iterable[int | float]
    ) -> int | float | None:
        best = max(elements, default=None)
        if best is None or (accumulator is not None and accumulator >= best):
            return accumulator
        return best

    def merge_accumulators(self, accumulators: Iterable[int | float | None]) -> int | float | None:
        return max((acc for acc in accumulators if acc is not None), default=None)
