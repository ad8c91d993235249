"""Lists packed for a shuffle: one byte string per shard or file, exact for every value."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.testing.util import assert_that, equal_to

from liveagg.combiners import LiveaggCombineFn
from liveagg.loader import parse_view
from liveagg.transforms.bounded import BoundedAggregate
from liveagg.transforms.shuffle import pack, unpack


def test_pack_keeps_the_types_of_rows_keys_and_accumulators() -> None:
    pieces = [
        ((0, 1_700_000_000_000_000, 1_700_000_600_000_000, b'["acme",1]'), b"\x01acc"),
        ((1, 5, 10, b'["x"]'), [(1, 2.5, None, True), (2**70, -0.0, "s", [1, {"a": 2}])]),
    ]
    data = pack(pieces)
    assert data[:1] == b"m"  # JSON-like values take the fast encoding
    back = unpack(data)
    assert back == pieces
    row = back[1][1][0]
    assert type(row) is tuple and row[3] is True  # a tuple, and True, not 1
    assert type(back[1][1][1][3]) is list


def test_values_marshal_does_not_know_are_pickled() -> None:
    pieces = [((0, 1, 2, b'["a"]'), [(Decimal("0.1"),)])]
    data = pack(pieces)
    assert data[:1] == b"p"
    assert unpack(data) == pieces


class DecimalSum(LiveaggCombineFn):
    """Exact decimal sum: its inputs are ``Decimal`` objects, which cross the shuffle."""

    def coerce(self, value: Any) -> Any:
        return Decimal(str(value))

    def create_accumulator(self) -> Decimal:
        return Decimal(0)

    def add_input(self, accumulator: Decimal, element: Decimal) -> Decimal:
        return accumulator + element

    def merge_accumulators(self, accumulators: Iterable[Decimal]) -> Decimal:
        return sum(accumulators, Decimal(0))

    def extract_output(self, accumulator: Decimal) -> str:
        return str(accumulator)

    def output_type(self) -> str:
        return "text"

    def encode_accumulator(self, accumulator: Decimal) -> bytes:
        return str(accumulator).encode()

    def decode_accumulator(self, data: bytes) -> Decimal:
        return Decimal(data.decode())


def test_a_custom_combiners_objects_reach_the_merge_exactly() -> None:
    view = parse_view(
        {
            "name": "prices",
            "event_time": {"field": "ts"},
            "grouping_cols": ["sku"],
            "window": {"size": "1h"},
            "aggregation_info": [
                {
                    "aggregation": "custom",
                    "col_name": "price",
                    "aggregated_col_name": "total",
                    "params": {"combine_fn": f"{__name__}:DecimalSum"},
                }
            ],
        },
        origin="prices.json",
    )
    # Two keys: "a" sees a few values (sent as rows), "b" many (sent as an accumulator).
    messages = [
        orjson.dumps({"ts": "2026-01-01T00:00:00Z", "sku": sku, "price": price})
        for sku, prices in (("a", ["0.1", "0.2"]), ("b", ["0.1"] * 30))
        for price in prices
    ]
    with beam.Pipeline() as p:
        out = p | beam.Create([messages], reshuffle=False) | BoundedAggregate([view])
        totals = out["views"]["prices"] | beam.Map(lambda row: (row["sku"], row["total"]))
        assert_that(totals, equal_to([("a", "0.3"), ("b", "3.0")]))
