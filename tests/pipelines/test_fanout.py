"""``hot_key_fanout`` on the DirectRunner (``--streaming``): the oracle's rows, and the views
it is refused for. The DirectRunner aggregates such a view unsharded (docs/two-level.md); the
fan-out's sub-keys and merge run on Prism in tests/conformance/test_prism_fanout.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor

from liveagg.loader import load_views, parse_view
from liveagg.runners.direct import PythonDirectRunner
from liveagg.transforms.streaming import StreamingAggregate
from tests.support.cli import liveagg, rows_in
from tests.support.compare import assert_rows_match
from tests.support.datagen import generate
from tests.support.oracle import expected_rows

pytestmark = pytest.mark.e2e

#: Few orgs under Zipf keys: a handful of them carry most messages.
HOT = {
    "name": "hot_orgs",
    "event_time": {"field": "ts"},
    "grouping_cols": ["org"],
    "window": {"type": "sliding", "size": "10m", "period": "5m"},
    "hot_key_fanout": 4,
    "filter": {"field": "kind", "op": "eq", "value": "network"},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "flows"},
        {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
        {"aggregation": "count_distinct", "col_name": "client_ip", "aggregated_col_name": "ips"},
        {
            "aggregation": "approx_quantiles",
            "col_name": "rtt_ms",
            "aggregated_col_name": "rtt_q",
            "params": {"quantiles": [0.5, 0.9]},
        },
        {"aggregation": "top_k", "col_name": "site", "aggregated_col_name": "sites"},
    ],
}


def test_fanned_out_view_equals_the_oracle(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    generate(events, 4_000, seed=5, keys=50, span_s=2 * 3600)
    view_file = tmp_path / "hot_orgs.json"
    view_file.write_text(json.dumps(HOT))
    out = tmp_path / "out"
    liveagg(
        "run",
        "--views",
        str(view_file),
        "--input",
        str(events),
        "--output",
        str(out),
        "--streaming",
    )
    rows = rows_in(out / "hot_orgs")
    view = load_views([str(view_file)])[0]
    assert_rows_match(rows, expected_rows(view, events), view)


def test_session_views_cannot_fan_out(tmp_path: Path) -> None:
    view = dict(HOT, window={"type": "session", "gap": "5m"})
    path = tmp_path / "v.json"
    path.write_text(json.dumps(view))
    result = liveagg("validate", str(path), ok=False)
    assert result.returncode == 1
    assert f"{path}: $.hot_key_fanout: session windows cannot fan out" in result.stdout


def _labels(runner: str) -> set[str]:
    """The transform labels of a streaming pipeline on ``runner`` holding the HOT view."""
    options = PipelineOptions(["--streaming", f"--runner={runner}"])
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | beam.Create(["{}"]) | StreamingAggregate([parse_view(HOT)])
    labels: set[str] = set()

    class Collect(PipelineVisitor):
        def enter_composite_transform(self, node: Any) -> None:
            labels.add(node.full_label)

        def visit_transform(self, node: Any) -> None:
            labels.add(node.full_label)

    pipeline.visit(Collect())
    return labels


@pytest.mark.parametrize(
    ("runner", "fans_out"),
    [("PrismRunner", True), ("FlinkRunner", True), (PythonDirectRunner.__name__, False)],
)
def test_the_fan_out_runs_where_stages_run_apart(runner: str, fans_out: bool) -> None:
    """Sub-keys and their merge on Prism and Flink; the DirectRunner, which runs a stage as
    one instance and holds no watermark for pending timers, aggregates unsharded."""
    if runner == PythonDirectRunner.__name__:
        runner = f"{PythonDirectRunner.__module__}.{runner}"
    merged = any(label.endswith("hot_orgs/FanIn") for label in _labels(runner))
    assert merged is fans_out
