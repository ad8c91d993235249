"""The contract every liveagg aggregation fulfils, built-in or custom.

An aggregation is an ``apache_beam.CombineFn`` that also

* says how its accumulator is written to bytes and read back (``encode_accumulator`` /
  ``decode_accumulator``): accumulators cross the shuffle, live in runner state and travel
  through Kafka between the two aggregation levels, so the encoding is stable and never
  pickle (DataSketches sketches cannot be pickled at all);
* checks each input value (``coerce``) so that a value it cannot use becomes a dead letter
  with a reason instead of failing the pipeline;
* says how its output is typed (``output_type``) so that sinks can create typed columns.

Inputs are already non-null: the runtime skips nulls and missing values, as SQL does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import apache_beam as beam
from apache_beam.coders import Coder

#: Output types a sink understands. Lists map to Cassandra ``list<...>``, ``json`` to text.
OUTPUT_TYPES = frozenset(
    {"bigint", "double", "text", "boolean", "list<double>", "list<bigint>", "list<text>", "json"}
)


_INT64 = (-(1 << 63), 1 << 63)
_FITS = {
    "bigint": lambda v: type(v) is int and _INT64[0] <= v < _INT64[1],
    "double": lambda v: type(v) in (int, float),
    "text": lambda v: type(v) is str,
    "boolean": lambda v: type(v) is bool,
}


def fits(value: Any, output_type: str) -> bool:
    """Whether ``value`` is one of ``output_type`` (null always is): what every sink can
    write in a column of that type (a 64-bit integer, a JSON number that is not a boolean,
    a list of such). ``json`` holds anything."""
    if value is None or output_type == "json":
        return True
    if output_type.startswith("list<"):
        inner = _FITS[output_type[5:-1]]
        return isinstance(value, list | tuple) and all(x is None or inner(x) for x in value)
    return _FITS[output_type](value)


#: ``coerce.plain_types``: the JSON-decoded value types a ``coerce`` returns unchanged, so that
#: a batch whose values are all of them needs no per-value call. It is an attribute of the
#: function, so a subclass that overrides ``coerce`` loses it and is called per value.
ALL_TYPES: frozenset[type] = frozenset({object})


def plain_types(coerce: Any) -> frozenset[type] | None:
    """What ``coerce`` (bound or not) declares it passes through unchanged, if anything."""
    return getattr(coerce, "plain_types", None)


@dataclass(frozen=True)
class ExtractFailed:
    """What an output holds where a custom aggregation's ``extract_output`` raised: the row
    is written with null there and an ``extract_error`` result dead letter that names the
    error (:meth:`liveagg.transforms.plan.ViewPlan.rows`), rather than a failed run."""

    error: str


def extractor(fn: Any) -> Callable[[Any], Any]:
    """How ``fn``'s output is read from an accumulator: ``extract_output`` itself for
    liveagg's own aggregations; for any other, :class:`ExtractFailed` with the error where
    it raises, so that a group it fails on is not a failed run."""
    from liveagg.combiners.registry import builtin_kind  # it imports this module

    if builtin_kind(type(fn)) is not None:
        return fn.extract_output
    return functools.partial(_extract_or_failure, fn)


def _extract_or_failure(fn: Any, accumulator: Any) -> Any:
    try:
        return fn.extract_output(accumulator)
    except Exception as e:  # any error of user code on one group's accumulator
        return ExtractFailed(f"{type(e).__name__}: {e}")


class InputError(ValueError):
    """A value an aggregation cannot use. ``reason`` is a short, stable code for dead letters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class LiveaggCombineFn(beam.CombineFn):
    """Base class for liveagg aggregations.

    Subclasses implement Beam's four CombineFn methods plus the accumulator encoding.
    ``needs_event_time`` aggregations (``first``, ``last``) receive ``(event_time_us, value)``
    instead of the bare value.
    """

    needs_event_time: ClassVar[bool] = False
    #: ``count`` without ``col_name`` counts rows: it is fed a constant 1 per message.
    counts_rows: ClassVar[bool] = False

    def __init__(self) -> None:
        # An explicit, argument-less signature: Beam's base accepts and ignores any argument,
        # which would let a misspelled param of a param-less aggregation pass unnoticed.
        super().__init__()

    def coerce(self, value: Any) -> Any:
        """Return the value to add, or raise :class:`InputError`. Default: accept anything."""
        return value

    coerce.plain_types = ALL_TYPES  # type: ignore[attr-defined]

    def output_type(self) -> str:
        """One of :data:`OUTPUT_TYPES`."""
        return "json"

    def encode_accumulator(self, accumulator: Any) -> bytes:
        raise NotImplementedError(f"{type(self).__name__} must implement encode_accumulator")

    def decode_accumulator(self, data: bytes) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement decode_accumulator")

    def check_accumulator(self, data: bytes) -> None:
        """Raise ``ValueError`` unless ``data`` is an accumulator this aggregation writes.

        Called before ``decode_accumulator`` on bytes from outside the pipeline (level 2 of a
        two-level run reads them from Kafka), never on the runner's own state. Aggregations
        whose decoder is native code that trusts its input (DataSketches) check the bytes
        here; the default checks nothing, so ``decode_accumulator`` must raise for anything
        its ``merge_accumulators`` and ``extract_output`` cannot use.
        """

    def get_accumulator_coder(self) -> Coder:
        return AccumulatorCoder(self)


class AccumulatorCoder(Coder):
    """A Beam coder that delegates to a CombineFn's own stable accumulator encoding."""

    def __init__(self, fn: LiveaggCombineFn) -> None:
        self._fn = fn

    def encode(self, value: Any) -> bytes:
        return self._fn.encode_accumulator(value)

    def decode(self, encoded: bytes) -> Any:
        return self._fn.decode_accumulator(encoded)

    def is_deterministic(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._fn is self._fn  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), id(self._fn)))
