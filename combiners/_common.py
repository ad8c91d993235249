"""Value checks, a total order over JSON scalars and the accumulator byte format.

Shared by the built-in aggregations so that every one of them treats the same raw JSON value
the same way: the same dead-letter reasons, the same idea of which values are equal, the same
ordering when a result has to pick one of several values.

Accumulator bytes start with one header byte naming the format, so that an accumulator written
by one release can be read (or refused with a clear error) by the next:

* ``0x01``: JSON, readable by orjson;
* ``0x02``: JSON holding integers beyond 64 bits, read with the standard library (orjson would
  turn them into floats);
* ``0x10``: a serialized Apache DataSketches sketch follows.

Accumulators that come from outside the pipeline (level 2 of a two-level run reads them from
Kafka) are checked before they are used: every ``decode_accumulator`` refuses JSON of the wrong
shape or types, and each sketch aggregation's ``check_accumulator`` checks the serialized sketch
byte by byte, because DataSketches' native deserializers trust parts of the bytes they are
given (``docs/two-level.md``).
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Iterable
from typing import Any

import orjson

from liveagg.combiners.base import InputError

JSON_V1 = 0x01
JSON_BIGINT_V1 = 0x02
SKETCH_V1 = 0x10

_JSON = bytes([JSON_V1])
_JSON_BIGINT = bytes([JSON_BIGINT_V1])
_SKETCH = bytes([SKETCH_V1])

#: The largest finite double; integers beyond it cannot be turned into a float.
_MAX_DOUBLE = 1.7976931348623157e308
#: Integral numbers in [_INT_MIN, _INT_END) are ints in their canonical form.
_INT_MIN = -(2**63)
_INT_END = 2**64
#: A double holds every integer of at most this magnitude exactly, and not every one beyond.
EXACT_FLOAT_INT = 2**53

_isfinite = math.isfinite

_JSON_TYPES = {
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    list: "array",
    tuple: "array",
    dict: "object",
    type(None): "null",
}


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error details."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def shown(value: Any, limit: int = 80) -> str:
    """A value as a dead letter's detail shows it: JSON (``true``, ``{"a":1}``), a string in
    quotes (``'a'``), a float as Python writes it (``nan``, which JSON has not), cut to
    ``limit`` characters."""
    if isinstance(value, str) or type(value) is float:
        text = repr(value)
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:  # orjson writes 254 levels of nesting and 64-bit integers at most
            text = str(value) if type(value) is int else f"<{json_type(value)} nested deeply>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Input checks (the ``coerce`` of each aggregation)
# ---------------------------------------------------------------------------------------------


def check_number(value: Any, aggregation: str) -> int | float:
    """Return an int or float usable by a numeric aggregation.

    Booleans are refused although Python treats them as ints: ``sum`` over a boolean column is
    almost always a mistake in the view, and SQL refuses it too.

    Raises:
        InputError: ``not_numeric`` for anything but a number, ``not_finite`` for NaN, infinity
            and integers too large for a double.
    """
    kind = type(value)
    if kind is int:
        if -_MAX_DOUBLE <= value <= _MAX_DOUBLE:
            return value
    elif kind is float:
        if math.isfinite(value):
            return value
    elif isinstance(value, int | float) and kind is not bool:
        # int/float subclasses (e.g. from a custom decoder): check them as plain numbers.
        return check_number(int(value) if isinstance(value, int) else float(value), aggregation)
    else:
        raise InputError(
            "not_numeric",
            f"{aggregation} needs a number, got {json_type(value)} {shown(value)}",
        )
    raise InputError("not_finite", f"{aggregation} needs a finite number, got {shown(value)}")


def double_holds(value: Any) -> bool:
    """Whether ``value`` is not an int that turning into a double would change (a column
    of doubles may then hold it; ints beyond 2**53 need the exact path)."""
    return type(value) is not int or -EXACT_FLOAT_INT <= value <= EXACT_FLOAT_INT


def normalize_number(value: int | float) -> int | float:
    """The one canonical form of a number, so that equal numbers are equal values.

    Integral values from -2**63 to 2**64 (the signed and unsigned 64-bit range) are ints
    (``1.0`` -> ``1``, ``-0.0`` -> ``0``); beyond that range a value a double represents
    exactly is a float (``2**70`` -> ``1.1805916207174113e+21``), any other integer stays an
    int. Without it, ``1`` and ``1.0`` would be reported in the order they happened to arrive.
    """
    if type(value) is float:
        if value.is_integer() and _INT_MIN <= value < _INT_END:
            return int(value)
        return value
    if _INT_MIN <= value < _INT_END:
        return value
    try:
        as_float = float(value)
    except OverflowError:
        return value
    return as_float if as_float == value else value


def check_scalar(value: Any, aggregation: str) -> str | int | float | bool:
    """Return a JSON scalar (string, number, boolean) in its normal form.

    Numbers are checked as by :func:`check_number` and normalized by :func:`normalize_number`,
    so that equal numbers are equal values whatever their JSON spelling.

    Raises:
        InputError: ``not_scalar`` for arrays and objects, ``not_finite`` for NaN and infinity.
    """
    kind = type(value)
    if kind is str or kind is bool:
        return value
    if kind is int:
        return value if _INT_MIN <= value < _INT_END else normalize_number(value)
    if kind is float:
        if math.isfinite(value):
            return normalize_number(value)
        raise InputError("not_finite", f"{aggregation} needs a finite number, got {shown(value)}")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float):
        return normalize_number(check_number(value, aggregation))
    raise InputError(
        "not_scalar",
        f"{aggregation} needs a string, number or boolean, got {json_type(value)} {shown(value)}",
    )


class NumberInput:
    """Mixin: the ``coerce`` of numeric aggregations (:func:`check_number`), fast path inline.

    ``coerce`` runs once per message and view, so the common cases skip a function call.
    """

    name: str

    def coerce(self, value: Any) -> int | float:
        """Accept ints and floats; refuse booleans, strings, NaN and infinity."""
        kind = type(value)
        if kind is float:
            if _isfinite(value):
                return value
        elif kind is int and -_MAX_DOUBLE <= value <= _MAX_DOUBLE:
            return value
        return check_number(value, self.name)

    # orjson gives only finite floats and ints in [-2**63, 2**64), all of which pass as they are;
    # messages with longer integers (decoded by the standard library) always call coerce.
    coerce.plain_types = frozenset({int, float})  # type: ignore[attr-defined]


class ScalarInput:
    """Mixin: the ``coerce`` of aggregations over any JSON scalar (:func:`check_scalar`)."""

    name: str

    def coerce(self, value: Any) -> str | int | float | bool:
        """Accept any JSON scalar, numbers in their canonical form; refuse arrays, objects,
        NaN and infinity."""
        kind = type(value)
        if kind is str or kind is bool:
            return value
        if kind is int:
            if _INT_MIN <= value < _INT_END:
                return value
        elif kind is float and _isfinite(value):
            if value.is_integer() and _INT_MIN <= value < _INT_END:
                return int(value)
            return value
        return check_scalar(value, self.name)

    # Integral floats become ints, so floats are not passed through.
    coerce.plain_types = frozenset({str, bool, int})  # type: ignore[attr-defined]


class CanonicalNumberInput(NumberInput):
    """Mixin: the ``coerce`` of ``min`` and ``max``: :func:`check_number`, then
    :func:`normalize_number`, fast path inline.

    Equal numbers get one form (``2.0`` -> ``2``, ``-0.0`` -> ``0``), so that a result does
    not depend on which of them arrived first.
    """

    def coerce(self, value: Any) -> int | float:
        """Accept ints and floats in their canonical form; refuse booleans, strings, NaN and
        infinity."""
        kind = type(value)
        if kind is int:
            if _INT_MIN <= value < _INT_END:
                return value
        elif kind is float and _isfinite(value):
            if value.is_integer() and _INT_MIN <= value < _INT_END:
                return int(value)
            return value
        return normalize_number(check_number(value, self.name))

    coerce.plain_types = frozenset({int})  # type: ignore[attr-defined]


class IntegralNumberInput(NumberInput):
    """Mixin: the ``coerce`` of ``sum`` and ``mean``: :func:`check_number`, and an integral
    double in ``[-2**63, 2**64)`` as the integer it equals (``2.0`` -> ``2``), as ``min``,
    ``max`` and distinct values take it. Integers of any size stay exact integers, which
    :class:`CanonicalNumberInput` does not keep (it turns ``2**70`` into a double).
    """

    def coerce(self, value: Any) -> int | float:
        """Accept ints and floats, integral floats as ints; refuse booleans, strings, NaN
        and infinity."""
        kind = type(value)
        if kind is float and _isfinite(value):
            if value.is_integer() and _INT_MIN <= value < _INT_END:
                return int(value)
            return value
        if kind is int and -_MAX_DOUBLE <= value <= _MAX_DOUBLE:
            return value
        number = check_number(value, self.name)
        if type(number) is float and number.is_integer() and _INT_MIN <= number < _INT_END:
            return int(number)
        return number

    coerce.plain_types = frozenset({int})  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Order and identity of scalars
# ---------------------------------------------------------------------------------------------


def order_key(value: str | int | float | bool) -> tuple[int, Any]:
    """A total order over JSON scalars: numbers, then strings, then false, true.

    Used wherever a result must not depend on the order inputs arrived in: sorting
    ``collect_set``, breaking ties in ``top_k``, ``first`` and ``last``.
    """
    kind = type(value)
    if kind is str:
        return (1, value)
    if kind is bool:
        return (2, value)
    return (0, value)


class BoolKey(tuple):
    """Stands for a boolean in a set of values, where Python would take ``True`` for ``1``."""

    __slots__ = ()


TRUE_KEY = BoolKey(("bool", True))
FALSE_KEY = BoolKey(("bool", False))


def to_key(value: Any) -> Any:
    """A hashable key equal for equal JSON values and different across JSON types."""
    if type(value) is bool:
        return TRUE_KEY if value else FALSE_KEY
    return value


def from_key(key: Any) -> Any:
    """The value a :func:`to_key` key stands for."""
    if type(key) is BoolKey:
        return key[1]
    return key


def key_order(key: Any) -> tuple[int, Any]:
    """:func:`order_key` for a :func:`to_key` key."""
    kind = type(key)
    if kind is str:
        return (1, key)
    if kind is BoolKey:
        return (2, key[1])
    return (0, key)


def from_text(text: str) -> str | int | float | bool:
    """Read back the canonical JSON text of a scalar (``"a"``, ``1``, ``1.5``, ``true``), as
    orjson writes it, or ``str(int)`` for integers beyond 64 bits, which stay exact."""
    first = text[0]
    if first == '"':
        return orjson.loads(text)
    if first == "t" or first == "f":
        return text == "true"
    if "." in text or "e" in text or "E" in text:
        return float(text)
    return int(text)


# ---------------------------------------------------------------------------------------------
# Accumulator bytes
# ---------------------------------------------------------------------------------------------


def dump_json(obj: Any) -> bytes:
    """Encode a plain structure; integers beyond 64 bits are kept exact."""
    try:
        return _JSON + orjson.dumps(obj)
    except TypeError:
        return _JSON_BIGINT + json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def load_json(data: bytes, owner: str) -> Any:
    """Decode :func:`dump_json` output; ``owner`` names the aggregation in errors."""
    header = data[:1]
    if header == _JSON:
        return orjson.loads(data[1:])
    if header == _JSON_BIGINT:
        try:
            return json.loads(data[1:])
        except RecursionError:  # orjson refuses such depths with a ValueError
            raise corrupt(owner, "JSON nested too deeply") from None
    raise _bad_header(data, owner, "JSON (0x01 or 0x02)")


def dump_sketch(serialized: bytes) -> bytes:
    return _SKETCH + serialized


def load_sketch(data: bytes, owner: str) -> bytes:
    """Strip the header of :func:`dump_sketch` output; the caller deserializes the rest."""
    if data[:1] != _SKETCH:
        raise _bad_header(data, owner, "a DataSketches sketch (0x10)")
    return data[1:]


def _bad_header(data: bytes, owner: str, expected: str) -> ValueError:
    got = f"0x{data[0]:02x}" if data else "no bytes"
    return corrupt(
        owner,
        f"header {got}, expected {expected}; it was written by another aggregation or a newer "
        "liveagg",
    )


def corrupt(owner: str, what: str) -> ValueError:
    """The error for bytes that are not an accumulator ``owner`` writes; ``what`` says why."""
    return ValueError(f"cannot decode a {owner} accumulator: {what}")


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 60
_BRIEF.maxlist = _BRIEF.maxdict = 4


def brief(value: Any) -> str:
    """A short ``repr`` of an untrusted value: bounded in length and depth, never raising."""
    return _BRIEF.repr(value)


def is_count(value: Any) -> bool:
    """An int (not a bool) of at least 0."""
    return type(value) is int and value >= 0


def is_finite_float(value: Any) -> bool:
    return type(value) is float and _isfinite(value)


def is_scalar(value: Any) -> bool:
    """A JSON scalar as an aggregation keeps it: string, boolean, int or finite float."""
    kind = type(value)
    return kind is str or kind is bool or kind is int or (kind is float and _isfinite(value))


# ---------------------------------------------------------------------------------------------
# Params
# ---------------------------------------------------------------------------------------------


def check_int_param(
    aggregation: str, name: str, value: Any, low: int, high: int | None = None
) -> int:
    """Return ``value`` if it is an int within ``[low, high]``, else raise ``ValueError``."""
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
    if type(value) is not int or value < low or (high is not None and value > high):
        raise ValueError(f"{aggregation}: params.{name} must be an integer {bounds}, got {value!r}")
    return value


def first_or_new(accumulators: Iterable[Any], create: Any) -> tuple[Any, Any]:
    """Split ``accumulators`` into its first item (or a new one) and an iterator of the rest."""
    it = iter(accumulators)
    first = next(it, _NOTHING)
    return (create() if first is _NOTHING else first), it


_NOTHING = object()
