"""How JSON values live in columns, so that equal JSON values are equal column values.

Grouping keys and the values of distinct counts, sets, ``top_k``, ``first`` and ``last`` are
JSON scalars whose identity follows the contract (docs/semantics.md): numbers by value (``1``
and ``1.0`` are one value), strings, booleans and numbers kept apart (``"1"``, ``1`` and
``true`` are three). A column holds them in one of three forms:

* ``string`` (``pa.string()``): every value is a JSON string, held as itself;
* ``int64``: every value is an integral number in the signed 64-bit range;
* ``text`` (``pa.large_string()``): any scalar as its canonical JSON text (``"a"`` with its
  quotes, ``1``, ``1.5``, ``true``), for columns that mix types or hold floats and booleans.

The first two are what real data almost always is and what Arrow hashes fastest; columns of
different forms are brought to ``text`` before they meet (:func:`unify`). Numeric inputs
(``sum``, ``mean``...) are ``int64`` or ``float64`` arrays, or a Python list when they hold
integers beyond what a double or a 64-bit integer keeps exactly (:func:`numbers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from liveagg.combiners._common import EXACT_FLOAT_INT, from_text, normalize_number

TEXT = pa.large_string()
STRING = pa.string()
INT64 = pa.int64()

_INT_MIN = -(2**63)
_INT_END = 2**63
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'


def is_text(column: pa.Array) -> bool:
    return column.type == TEXT


def canonical_text(value: Any) -> str | None:
    """The canonical JSON text of a scalar: numbers in the one form of
    :func:`~liveagg.combiners._common.normalize_number` (``2.0`` is ``2``; ``2**70`` is the
    double it equals), integers beyond 64 bits exactly, the rest as orjson writes them."""
    if value is None:
        return None
    if type(value) is int or type(value) is float:
        value = normalize_number(value)
        if type(value) is int and not _INT_MIN <= value < 2**64:
            return str(value)
    return orjson.dumps(value).decode()


def to_text(column: pa.Array) -> pa.Array:
    """Any scalar column in the ``text`` form."""
    kind = column.type
    if kind == TEXT:
        return column
    if kind == STRING:
        if not pc.any(pc.match_substring_regex(column, _NEEDS_ESCAPE)).as_py():
            quoted = pc.binary_join_element_wise('"', column, '"', "")
            return quoted.cast(TEXT)
        return pa.array([canonical_text(v) for v in column.to_pylist()], TEXT)
    if kind == INT64:
        return pc.cast(column, STRING).cast(TEXT)
    return pa.array([canonical_text(v) for v in column.to_pylist()], TEXT)


def unify(columns: Sequence[pa.Array]) -> list[pa.Array]:
    """The columns in one form, so that they can be concatenated and compared."""
    kinds = {c.type for c in columns if c.null_count < len(c)}
    if len(kinds) <= 1:
        kind = kinds.pop() if kinds else STRING
        return [c if c.type == kind else c.cast(kind) for c in columns]
    return [to_text(c) for c in columns]


def scalars(column: pa.Array) -> pa.Array:
    """A decoded column (any Arrow type JSON gives) in its scalar form (module doc)."""
    kind = column.type
    if kind in (STRING, INT64, TEXT):
        return column
    if pa.types.is_null(kind):
        return pa.nulls(len(column), STRING)
    if pa.types.is_floating(kind):
        values = column.to_numpy(zero_copy_only=False)
        valid = ~np.isnan(values) if column.null_count else slice(None)
        present = values[valid]
        if np.all(np.floor(present) == present) and np.all(np.abs(present) < EXACT_FLOAT_INT):
            return pc.cast(column, INT64)
    return pa.array([canonical_text(v) for v in column.to_pylist()], TEXT)


def scalars_from_python(values: Sequence[Any]) -> pa.Array:
    """Python scalars (already checked: str, int, float, bool or None) in their scalar form."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if kinds == {str}:
        return pa.array(values, STRING)
    if kinds == {int} or not kinds:
        try:
            return pa.array(values, INT64 if kinds else STRING)
        except OverflowError:  # beyond 64 bits
            pass
    return pa.array([canonical_text(v) for v in values], TEXT)


def python_values(column: pa.Array) -> list[Any]:
    """The JSON values of a scalar column, as Python objects (``None`` for null)."""
    if column.type == TEXT:
        return [None if v is None else from_text(v) for v in column.to_pylist()]
    return column.to_pylist()


def numbers(values: Sequence[Any]) -> np.ndarray | list[Any]:
    """Numeric inputs (checked ints and floats, no None) as an array when that is exact."""
    kinds = set(map(type, values))
    if kinds <= {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return list(values)
    if kinds <= {int, float}:
        array = np.array(values, dtype=np.float64)
        if kinds == {float} or np.all(np.abs(array) < EXACT_FLOAT_INT):
            return array
    return list(values)


def concat(parts: Iterable[pa.Array]) -> pa.Array:
    arrays = unify(list(parts))
    return pa.concat_arrays(arrays) if arrays else pa.array([], STRING)
