"""One CombineFn per view: the tuple of its aggregations, with one stable byte encoding.

A view's input row is a tuple with one entry per aggregation (``None`` = skip, as SQL skips
nulls); its accumulator is the list of the aggregations' accumulators. Accumulators cross
process boundaries only as bytes (:meth:`ViewCombineFn.encode`), never pickled.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.coders import Coder

from liveagg.combiners import LiveaggCombineFn
from liveagg.combiners.base import extractor

_LEN = struct.Struct(">I")


class ViewCombineFn(beam.CombineFn):
    """Combines a view's input rows into the tuple of its aggregated values."""

    def __init__(self, fns: Sequence[LiveaggCombineFn]) -> None:
        self.fns = tuple(fns)
        self._extracts = tuple(extractor(fn) for fn in self.fns)

    def create_accumulator(self) -> list[Any]:
        return [fn.create_accumulator() for fn in self.fns]

    def add_input(self, accumulator: list[Any], row: Sequence[Any]) -> list[Any]:
        for i, fn in enumerate(self.fns):
            value = row[i]
            if value is not None:
                accumulator[i] = fn.add_input(accumulator[i], value)
        return accumulator

    def add_inputs(self, accumulator: list[Any], rows: Iterable[Sequence[Any]]) -> list[Any]:
        rows = rows if isinstance(rows, list) else list(rows)
        if len(rows) == 1:  # common for keys with many distinct values: no transposing
            return self.add_input(accumulator, rows[0])
        for i, fn in enumerate(self.fns):
            values = [row[i] for row in rows if row[i] is not None]
            if values:
                accumulator[i] = fn.add_inputs(accumulator[i], values)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[Any]]) -> list[Any]:
        accumulators = list(accumulators)
        if len(accumulators) == 1:
            return accumulators[0]
        return [
            fn.merge_accumulators([acc[i] for acc in accumulators]) for i, fn in enumerate(self.fns)
        ]

    def compact(self, accumulator: list[Any]) -> list[Any]:
        return [fn.compact(a) for fn, a in zip(self.fns, accumulator, strict=True)]

    def extract_output(self, accumulator: list[Any]) -> tuple[Any, ...]:
        return tuple(extract(a) for extract, a in zip(self._extracts, accumulator, strict=True))

    def encode(self, accumulator: list[Any]) -> bytes:
        parts = [fn.encode_accumulator(a) for fn, a in zip(self.fns, accumulator, strict=True)]
        return b"".join(_LEN.pack(len(p)) + p for p in parts)

    def decode(self, data: bytes) -> list[Any]:
        out, pos = [], 0
        for fn in self.fns:
            (size,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            out.append(fn.decode_accumulator(data[pos : pos + size]))
            pos += size
        return out

    def decode_checked(self, data: bytes) -> list[Any]:
        """:meth:`decode` for bytes from outside the pipeline (a level-1 envelope).

        The framing must be exact (each length within the bytes, none left over), and each
        aggregation checks its part (``check_accumulator``) before decoding it. Raises
        ``ValueError`` naming the aggregation as ``aggregation_info[i]``, whatever a decoder
        raised.
        """
        out, pos, end = [], 0, len(data)
        for i, fn in enumerate(self.fns):
            where = f"aggregation_info[{i}] ({getattr(fn, 'name', type(fn).__name__)})"
            if end - pos < _LEN.size:
                raise ValueError(f"{where}: the accumulator ends after {pos} of its bytes")
            (size,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            if size > end - pos:
                raise ValueError(f"{where}: length {size}, but {end - pos} bytes are left")
            part = data[pos : pos + size]
            pos += size
            try:
                fn.check_accumulator(part)
                out.append(fn.decode_accumulator(part))
            except Exception as e:  # a custom decoder may raise anything
                raise ValueError(f"{where}: {e}") from None
        if pos != end:
            raise ValueError(f"{end - pos} bytes after the last aggregation's accumulator")
        return out

    def get_accumulator_coder(self) -> Coder:
        return _Coder(self.encode, self.decode)


class _Coder(Coder):
    def __init__(self, encode: Any, decode: Any) -> None:
        self.encode = encode  # type: ignore[method-assign]
        self.decode = decode  # type: ignore[method-assign]

    def is_deterministic(self) -> bool:
        return False
