"""The bounded path gives the same rows whether messages arrive one by one or in batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.testing.util import assert_that, equal_to

from liveagg.loader import parse_view
from liveagg.transforms.bounded import BoundedAggregate
from tests.support.datagen import generate

VIEWS = [
    {
        "name": "one_set",
        "event_time": {"field": "timestamp_ms", "format": "epoch_ms"},
        "grouping_cols": ["country", "cache"],
        "grouping_sets": [["country"]],
        "window": {"size": "10m"},
        "filter": {"field": "kind", "op": "eq", "value": "cdn"},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "b"},
        ],
    },
    {
        "name": "fixed",
        "event_time": {"field": "ts"},
        "grouping_cols": ["org"],
        "window": {"size": "5m"},
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "count_distinct_exact", "col_name": "site", "aggregated_col_name": "s"},
        ],
    },
]


#: Rows collected by the pipeline; module-level so that the pickled DoFn reaches it
#: (the DirectRunner runs it in this process).
_SEEN: dict[str, list[bytes]] = {}


def _collect(row: dict[str, Any]) -> None:
    _SEEN.setdefault(row["view"], []).append(orjson.dumps(row, option=orjson.OPT_SORT_KEYS))


def _rows(elements: list[Any]) -> dict[str, list[bytes]]:
    specs = [parse_view(v, origin=f"{v['name']}.json") for v in VIEWS]
    _SEEN.clear()
    with beam.Pipeline() as p:
        result = p | beam.Create(elements, reshuffle=False) | BoundedAggregate(specs)
        for name, rows in result["views"].items():
            rows | f"Collect/{name}" >> beam.Map(_collect)
        assert_that(result["dead_letters"], equal_to([]), label="NoDeadLetters")
    return {name: sorted(rows) for name, rows in _SEEN.items()}


@pytest.mark.parametrize("batch", [7, 1000])
def test_batches_give_the_rows_of_single_messages(tmp_path: Path, batch: int) -> None:
    path = tmp_path / "events.jsonl"
    generate(path, 3_000, seed=5, keys=50, bad_fraction=0.0)
    lines = path.read_bytes().splitlines()
    single = _rows(lines)
    batched = _rows([lines[i : i + batch] for i in range(0, len(lines), batch)])
    assert single == batched
    assert len(single["one_set"]) > 10
    assert all(b'"cache":null' in row for row in single["one_set"])  # only the country set
