"""A custom aggregation with every method an aggregation implements (a class without them is
refused), for tests to subclass: it sums what it is fed, as an int."""

from __future__ import annotations

from typing import Any

from liveagg.combiners import LiveaggCombineFn


class Complete(LiveaggCombineFn):
    """Sums its inputs; accumulators are the sum's decimal digits."""

    def create_accumulator(self) -> int:
        return 0

    def add_input(self, accumulator: int, value: Any) -> int:
        return accumulator + value

    def merge_accumulators(self, accumulators: Any) -> int:
        return sum(accumulators)

    def extract_output(self, accumulator: int) -> int:
        return accumulator

    def encode_accumulator(self, accumulator: int) -> bytes:
        return str(accumulator).encode()

    def decode_accumulator(self, data: bytes) -> int:
        return int(data)
