"""For random views and inputs, the bounded path's rows, the streaming operator's final panes
and the DuckDB oracle agree: both paths are adapters over one engine and one window book."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from liveagg.engine.compiled import compile_views
from liveagg.loader import parse_view
from liveagg.spec import ViewSpec
from liveagg.transforms.bounded import BoundedAggregate
from liveagg.transforms.streaming import StreamingAggregate
from tests.support.compare import assert_rows_match, assert_same_rows, latest_panes
from tests.support.oracle import expected_rows

START = 1_709_251_200_000  # 2024-03-01T00:00:00Z, in milliseconds

WINDOWS = [
    {"type": "fixed", "size": "1m"},
    {"type": "fixed", "size": ["1m", "5m"]},
    {"type": "sliding", "size": "3m", "period": "1m"},
    {"type": "session", "gap": "90s"},
    {"type": "cumulative", "size": "10m", "step": "2m"},
    {"type": "global"},
]
AGGREGATIONS = [
    {"aggregation": "count", "aggregated_col_name": "n"},
    {"aggregation": "count", "col_name": "v", "aggregated_col_name": "n_v"},
    {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "total"},
    {"aggregation": "min", "col_name": "v", "aggregated_col_name": "low"},
    {"aggregation": "max", "col_name": "v", "aggregated_col_name": "high"},
    {"aggregation": "mean", "col_name": "v", "aggregated_col_name": "avg"},
    {"aggregation": "stddev", "col_name": "v", "aggregated_col_name": "sd"},
    {"aggregation": "count_distinct_exact", "col_name": "u", "aggregated_col_name": "users"},
    {"aggregation": "first", "col_name": "v", "aggregated_col_name": "first_v"},
    {"aggregation": "collect_set", "col_name": "u", "aggregated_col_name": "user_set"},
]


@st.composite
def views(draw: st.DrawFn) -> ViewSpec:
    window = draw(st.sampled_from(WINDOWS))
    view: dict[str, Any] = {
        "name": "v",
        "source": "events",
        "event_time": {"field": "ts", "format": "epoch_ms"},
        "grouping_cols": draw(st.sampled_from([["a"], ["a", "b"]])),
        "window": window,
        "aggregation_info": draw(
            st.lists(st.sampled_from(AGGREGATIONS), min_size=1, max_size=4, unique_by=str)
        ),
    }
    if window["type"] == "global":
        view |= {"state_ttl": "1d", "emit": {"early": "1m"}}
    if len(view["grouping_cols"]) == 2 and window["type"] != "session" and draw(st.booleans()):
        view["grouping_sets"] = [["a", "b"], ["a"], []]
    if draw(st.booleans()):
        view["filter"] = {"field": "b", "op": "ne", "value": "y"}
    return parse_view(view)


values = st.one_of(
    st.integers(-50, 50),
    st.floats(-1e3, 1e3, allow_nan=False).map(lambda f: round(f, 3)),
    st.none(),
    st.just("bad"),
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "ts": st.integers(0, 15 * 60_000).map(lambda ms: START + ms),
            "a": st.sampled_from(["p", "q", "r"]),
            "b": st.sampled_from(["x", "y"]),
            "u": st.sampled_from(["u1", "u2", "u3", "u4"]),
            "v": values,
        }
    ),
    min_size=1,
    max_size=40,
)


def _agree(view: ViewSpec, expected: list[dict[str, Any]]) -> Any:
    """A Beam matcher of ``(path, row)`` pairs: bounded rows and final streaming panes are
    the same rows, and both equal the oracle's."""

    def match(pairs: list[tuple[str, dict[str, Any]]]) -> None:
        bounded = [row for path, row in pairs if path == "bounded"]
        streamed = [row for path, row in pairs if path == "streaming"]
        assert_rows_match(bounded, expected, view)
        assert_same_rows(latest_panes(streamed, view), bounded, view)

    return match


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(view=views(), msgs=messages)
@example(  # a standard deviation merged message by message, and one of the whole batch
    view=parse_view(
        {
            "name": "v",
            "event_time": {"field": "ts", "format": "epoch_ms"},
            "grouping_cols": ["a"],
            "window": {"type": "session", "gap": "90s"},
            "aggregation_info": [AGGREGATIONS[6]],
        }
    ),
    msgs=[
        {"ts": START, "a": "p", "v": None},
        {"ts": START, "a": "p", "v": 0},
        {"ts": START, "a": "r", "v": 999.0},
        {"ts": START, "a": "r", "v": 136.618},
    ],
)
def test_bounded_rows_equal_final_streaming_panes_equal_the_oracle(
    tmp_path: Path, view: ViewSpec, msgs: list[dict[str, Any]]
) -> None:
    lines = [orjson.dumps(m) for m in msgs]
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"".join(line + b"\n" for line in lines))
    expected = expected_rows(view, data)
    [compiled] = compile_views([view])
    with TestPipeline() as p:
        messages = p | beam.Create(lines)
        bounded = (messages | "Bounded" >> BoundedAggregate([compiled]))["views"][view.name]
        streaming = messages | "Streaming" >> StreamingAggregate(
            [compiled], clock=lambda: 0.0, early_panes=False
        )
        pairs = (
            bounded | "TagB" >> beam.Map(lambda row: ("bounded", row)),
            streaming["views"][view.name] | "TagS" >> beam.Map(lambda row: ("streaming", row)),
        ) | beam.Flatten()
        assert_that(pairs, _agree(view, expected))
