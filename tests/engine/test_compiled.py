"""The compiled view: one row schema for every path and sink, compiled once, errors in the
view's own file, command-line sinks through the view schema."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from liveagg import combiners
from liveagg.engine.compiled import RunContext, compile_view, compile_views
from liveagg.errors import ViewErrors
from liveagg.loader import load_views, parse_sinks, parse_view
from liveagg.transforms.bounded import BoundedAggregate
from liveagg.transforms.plan import ViewPlan
from liveagg.transforms.sinks.cassandra import CQL_TYPES, column_name, table_layout
from liveagg.transforms.sinks.files import view_columns
from liveagg.transforms.streaming import StreamingAggregate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = load_views(ROOT / "view_schemas" / "examples")
EVENTS = ROOT / "examples" / "data" / "events.jsonl"


def _lines(n: int) -> list[bytes]:
    with EVENTS.open("rb") as f:
        return [line.rstrip(b"\n") for line in islice(f, n)]


def _keys_are(names: list[str]) -> Any:
    """A Beam matcher: some rows, each with exactly ``names`` as keys, in order."""

    def match(rows: list[dict[str, Any]]) -> None:
        assert rows
        assert {tuple(row) for row in rows} == {tuple(names)}

    return match


@pytest.mark.parametrize(
    "transform",
    [
        lambda views: BoundedAggregate(views),
        lambda views: StreamingAggregate(views, clock=lambda: 0.0, early_panes=False),
    ],
    ids=["bounded", "streaming"],
)
def test_every_row_of_both_paths_has_the_compiled_columns_in_order(transform: Any) -> None:
    """The columns the sinks create (files, Parquet, CSV, Cassandra) are the keys of the
    rows either path writes, in order, for every example view."""
    compiled = compile_views(EXAMPLES)
    with TestPipeline() as p:
        out = p | beam.Create(_lines(3000)) | transform(compiled)
        for view in compiled:  # the sample feeds every example view
            names = [c.name for c in view.columns]
            assert_that(out["views"][view.name], _keys_are(names), label=f"Check/{view.name}")


def test_sinks_read_the_compiled_columns() -> None:
    for spec in EXAMPLES:
        view = compile_view(spec)
        assert view_columns(spec) == view.columns
        layout = table_layout(view, "ks")
        types = {c.name: c.type for c in view.columns}
        for aggregation in spec.aggregations:
            column = next(c for c in layout.columns if c.source == aggregation.output)
            assert column.name == column_name(aggregation.output)
            assert column.type == CQL_TYPES[types[aggregation.output]]


def test_workers_build_their_plan_from_the_compiled_view_without_planning_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled view crosses to workers pickled; a worker's plan takes its combiners
    and variants as they are."""
    shipped = [pickler.loads(pickler.dumps(view)) for view in compile_views(EXAMPLES)]

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a worker resolved a combiner again")

    monkeypatch.setattr(combiners, "create", refuse)
    for view in shipped:
        plan = ViewPlan(view)
        assert plan.fns == list(view.fns) and plan.variants == list(view.variants)
        assert plan.compiled.fingerprint == view.spec.fingerprint()


VIEW = {
    "name": "clicks",
    "source": "events",
    "event_time": {"field": "ts"},
    "grouping_cols": ["post_id"],
    "window": {"type": "fixed", "size": "1m"},
    "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "n"}],
}


def test_a_run_check_names_the_file_of_the_view_that_fails_it() -> None:
    """Of two views from two files, the one that the run refuses is named with its own
    file and field, not the first view's file at ``$``."""
    fixed = parse_view(VIEW, origin="views/clicks.json")
    running = parse_view(
        VIEW
        | {
            "name": "totals",
            "window": {"type": "global"},
            "state_ttl": "1d",
            "emit": {"early": "10s"},
        },
        origin="views/totals.json",
    )
    sessions = parse_view(
        VIEW | {"name": "visits", "window": {"type": "session", "gap": "5m"}},
        origin="views/visits.json",
    )
    compile_views([fixed, running, sessions])  # a one-level bounded run takes them all
    with pytest.raises(ViewErrors) as caught:
        compile_views([fixed, running, sessions], RunContext("--streaming", level=1))
    assert [str(e).split(": view ")[0] for e in caught.value.errors] == [
        "views/totals.json: $.window.type",
        "views/visits.json: $.window.type",
    ]


def test_command_line_sinks_meet_the_view_schema() -> None:
    sinks = parse_sinks(
        ['{"type": "file", "path": "out"}', '{"type": "cassandra", "keyspace": "s"}']
    )
    assert [(s.type, dict(s.options)) for s in sinks] == [
        ("file", {"path": "out", "format": "jsonl"}),  # the view files' default
        ("cassandra", {"keyspace": "s"}),  # each view's table is its name
    ]
    cases = {
        '{"type": "cassandra"}': "$.sink[1]: missing required key 'keyspace'",
        '{"type": "casandra"}': "$.sink[1].type: 'casandra' is not accepted",
        '{"type": "file", "path": "o", "fromat": "csv"}': "$.sink[1].fromat: unknown key",
        '{"type": "file", "path": "o", "format": "xml"}': "$.sink[1].format: 'xml'",
        '{"type": "kafka", "topic": "a b"}': "$.sink[1].topic: 'a b' is not a Kafka topic",
        "{'type': 'file'}": "$.sink[1]: --sink \"{'type': 'file'}\": invalid JSON at line 1",
        "[1]": "$.sink[1]: expected an object, got an array",
    }
    for text, expected in cases.items():
        with pytest.raises(ViewErrors) as caught:
            parse_sinks(['{"type": "file", "path": "x"}', text])
        assert str(caught.value).startswith(f"<command line>: {expected}"), str(caught.value)
