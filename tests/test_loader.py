"""Loading views: every error path gives ``FILE: $.path: message``; valid views normalize."""

from __future__ import annotations

import copy
import json
import pickle
import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest

from liveagg.combiners import LiveaggCombineFn, known
from liveagg.combiners import registry as combiner_registry
from liveagg.errors import ViewError, ViewErrors
from liveagg.expr import parse_expr
from liveagg.loader import (
    MAX_NESTING,
    RESERVED_COLUMNS,
    load_views,
    parse_view,
    validate_paths,
)
from liveagg.spec import (
    Aggregation,
    AllOf,
    AnyOf,
    Derived,
    Duration,
    Eager,
    EventTime,
    Milestone,
    Predicate,
    Sink,
    ViewSpec,
    Window,
)
from liveagg.view_schemas import SCHEMA_PATH
from tests.support.cli import liveagg
from tests.support.custom import Complete

EXAMPLES = SCHEMA_PATH.parent / "examples"
BAD_VIEWS = Path(__file__).parent / "data" / "bad_views"
KNOWN = ", ".join(known())

ALLOWED = (
    "name, description, source, event_time, grouping_cols, grouping_sets, window, "
    "allowed_lateness, emit, milestones, state_ttl, filter, aggregation_info, derived, sinks, "
    "rollup, hot_key_fanout"
)

BASE: dict[str, Any] = {
    "name": "clicks",
    "event_time": {"field": "timestamp_ms", "format": "epoch_ms"},
    "grouping_cols": ["campaign"],
    "window": {"size": "10m"},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "events"},
        {"aggregation": "sum", "col_name": "cost", "aggregated_col_name": "spend"},
    ],
}


def view(**changes: Any) -> dict[str, Any]:
    """BASE with top-level keys replaced (``None`` removes a key)."""
    result = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def agg(kind: str, out: str = "out", col: str | None = "x", **params: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"aggregation": kind, "aggregated_col_name": out}
    if col is not None:
        item["col_name"] = col
    if params:
        item["params"] = params
    return item


def errors(obj: Any) -> list[str]:
    """The lines ``liveagg validate`` would print for this view, read from ``<memory>``."""
    with pytest.raises(ViewErrors) as info:
        parse_view(obj)
    return [str(e) for e in info.value.errors]


def error(obj: Any) -> str:
    """The single error of a view that has exactly one mistake."""
    found = errors(obj)
    assert len(found) == 1, found
    return found[0]


def write(folder: Path, name: str, content: Any) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- error types


def test_view_error_formats_file_path_and_message() -> None:
    e = ViewError("views/a.json", "$.window.size", "bad size")
    assert str(e) == "views/a.json: $.window.size: bad size"
    assert (e.file, e.path, e.message) == ("views/a.json", "$.window.size", "bad size")
    assert repr(e) == "ViewError('views/a.json', '$.window.size', 'bad size')"


def test_view_error_with_only_a_message_is_still_well_formed() -> None:
    e = ViewError("view 'clicks': graph failed")
    assert str(e) == "<unknown>: $: view 'clicks': graph failed"


def test_view_error_for_a_loaded_view_uses_its_origin() -> None:
    spec = parse_view(view(), origin="views/clicks.json")
    e = ViewError.in_view(spec, "cannot build", "$.window")
    assert str(e) == "views/clicks.json: $.window: cannot build"


def test_errors_after_loading_name_a_listed_view_by_its_place_in_the_file(
    tmp_path: Path,
) -> None:
    """A ``{"views": [...]}`` file: a run-time error of its second view is at ``$.views[1]``."""
    path = tmp_path / "views.json"
    path.write_text(json.dumps({"views": [view(), view(name="second")]}))
    first, second = load_views([path])
    assert (first.path(".source"), second.path(".source")) == (
        "$.views[0].source",
        "$.views[1].source",
    )
    e = ViewError.in_view(second, "cannot build", "$.window")
    assert str(e) == f"{path}: $.views[1].window: cannot build"
    single = tmp_path / "single.json"
    single.write_text(json.dumps(view()))
    (alone,) = load_views([single])
    assert alone.path(".window") == "$.window"


def test_view_error_survives_pickling() -> None:
    e = ViewError("a.json", "$.name", "bad")
    assert pickle.loads(pickle.dumps(e)) == e
    many = ViewErrors([e, ViewError("b.json", "$", "worse")])
    assert str(pickle.loads(pickle.dumps(many))) == str(many)


def test_view_errors_prints_one_error_per_line() -> None:
    many = ViewErrors([ViewError("a.json", "$.name", "bad"), ViewError("b.json", "$", "worse")])
    assert str(many) == "a.json: $.name: bad\nb.json: $: worse"
    assert len(many) == 2
    assert [e.file for e in many] == ["a.json", "b.json"]


# --------------------------------------------------------------------------- normalization


def test_minimal_view_gets_the_defaults() -> None:
    spec = parse_view(view())
    assert spec == ViewSpec(
        name="clicks",
        event_time=EventTime("timestamp_ms", "epoch_ms"),
        grouping_cols=("campaign",),
        window=Window("fixed", sizes=(Duration("10m", 600_000_000),)),
        aggregations=(
            Aggregation("count", "events"),
            Aggregation("sum", "spend", "cost"),
        ),
        source="events",
        description="",
        grouping_sets=None,
        allowed_lateness=Duration("0s", 0),
        early=None,
        filter=None,
        derived=(),
        sinks=(),
        origin="<memory>",
    )


def test_event_time_format_is_none_when_absent() -> None:
    spec = parse_view(view(event_time={"field": "ts"}))
    assert spec.event_time == EventTime("ts", None)


def test_every_field_is_normalized() -> None:
    spec = parse_view(
        view(
            description="clicks per campaign",
            source="ad_events",
            grouping_cols=["campaign", "country"],
            grouping_sets=[["country", "campaign"], ["campaign"], []],
            window={"type": "sliding", "size": ["1h", "1d"], "period": "5m"},
            allowed_lateness="15m",
            emit={"early": "30s"},
            filter={
                "all": [
                    {"field": "kind", "op": "eq", "value": "ads"},
                    {"any": [{"field": "event", "op": "in", "value": ["click"]}]},
                    {"field": "bot", "op": "exists", "value": False},
                    {"field": "campaign", "op": "exists"},
                ]
            },
            derived=[{"name": "cost_per_event", "expr": "spend / events"}],
            sinks=[
                {"type": "file", "path": "out/"},
                {"type": "gcs", "path": "gs://b/v", "format": "parquet"},
                {"type": "cassandra", "keyspace": "metrics", "table": "clicks"},
                {"type": "kafka", "topic": "clicks"},
            ],
        ),
        origin="views/clicks.json",
    )
    assert spec.description == "clicks per campaign"
    assert spec.source == "ad_events"
    # Sets are rewritten in grouping_cols order so that a set's key does not depend on spelling.
    assert spec.grouping_sets == (("campaign", "country"), ("campaign",), ())
    assert spec.window == Window(
        "sliding",
        sizes=(Duration("1h", 3_600_000_000), Duration("1d", 86_400_000_000)),
        period=Duration("5m", 300_000_000),
        multi_granularity=True,
    )
    assert spec.allowed_lateness == Duration("15m", 900_000_000)
    assert spec.early == Duration("30s", 30_000_000)
    assert spec.filter == AllOf(
        (
            Predicate("kind", "eq", "ads"),
            AnyOf((Predicate("event", "in", ("click",)),)),
            Predicate("bot", "exists", False),
            Predicate("campaign", "exists", True),
        )
    )
    assert spec.derived == (Derived("cost_per_event", "spend / events"),)
    assert spec.sinks == (
        Sink("file", {"path": "out/", "format": "jsonl"}),
        Sink("gcs", {"path": "gs://b/v", "format": "parquet"}),
        Sink("cassandra", {"keyspace": "metrics", "table": "clicks"}),
        Sink("kafka", {"topic": "clicks"}),
    )
    assert spec.output_columns == ("events", "spend", "cost_per_event")
    assert spec.origin == "views/clicks.json"


def test_single_size_list_is_still_multi_granularity() -> None:
    spec = parse_view(view(window={"size": ["1h"]}))
    assert spec.window.multi_granularity is True
    assert spec.window.sizes == (Duration("1h", 3_600_000_000),)


def test_session_window() -> None:
    spec = parse_view(view(window={"type": "session", "gap": "30m"}))
    assert spec.window == Window("session", gap=Duration("30m", 1_800_000_000))


def test_params_are_copied_not_shared_with_the_input() -> None:
    source = view(aggregation_info=[agg("approx_quantiles", quantiles=[0.5], k=100)])
    spec = parse_view(source)
    source["aggregation_info"][0]["params"]["quantiles"].append(0.9)
    assert spec.aggregations[0].params == {"quantiles": [0.5], "k": 100}
    with pytest.raises(TypeError):
        spec.aggregations[0].params["k"] = 1  # type: ignore[index]


def test_parse_view_prefixes_paths_and_names_the_origin() -> None:
    with pytest.raises(ViewErrors) as info:
        parse_view(view(window={"size": "soon"}), origin="views/all.json", path="$.views[2]")
    assert str(info.value) == (
        "views/all.json: $.views[2].window.size: 'soon' is not a duration; expected an integer "
        "and a unit (ms, s, m, h, d), e.g. '500ms', '90s', '10m', '1d'"
    )


# --------------------------------------------------------------------------- schema errors


def test_document_must_be_an_object() -> None:
    assert error([BASE]) == "<memory>: $: expected an object, got an array"


def test_missing_required_key_says_what_to_write() -> None:
    assert error(view(window=None)) == (
        '<memory>: $: missing required key \'window\': e.g. "window": {"size": "10m"}'
    )


def test_all_missing_keys_are_reported() -> None:
    assert errors({"name": "a"}) == [
        "<memory>: $: missing required key 'event_time': where event time is read from, "
        'e.g. "event_time": {"field": "ts"}',
        "<memory>: $: missing required key 'grouping_cols': the dimensions, e.g. "
        '"grouping_cols": ["campaign_id"] ([] for one group per window)',
        '<memory>: $: missing required key \'window\': e.g. "window": {"size": "10m"}',
        "<memory>: $: missing required key 'aggregation_info': what to compute, e.g. "
        '"aggregation_info": [{"aggregation": "count", "aggregated_col_name": "events"}]',
    ]


def test_unknown_key_suggests_the_close_one_and_lists_the_allowed() -> None:
    assert error(view(event_time={"field": "ts", "fromat": "iso8601"})) == (
        "<memory>: $.event_time.fromat: unknown key 'fromat' (did you mean 'format'?); "
        "allowed here: field, format"
    )


def test_misspelled_required_key_is_reported_once() -> None:
    assert error(view(aggregation_info=[{"aggregation": "count", "aggregated_col": "n"}])) == (
        "<memory>: $.aggregation_info[0].aggregated_col: unknown key 'aggregated_col' "
        "(did you mean 'aggregated_col_name'?); allowed here: aggregation, col_name, "
        "aggregated_col_name, params"
    )


def test_unknown_key_without_likeness_lists_the_allowed() -> None:
    assert error(view(emit={"early": "1m", "zzz": 1})) == (
        "<memory>: $.emit.zzz: unknown key 'zzz'; allowed here: early, eager"
    )


def test_unknown_param_of_an_aggregation_without_params() -> None:
    assert error(view(aggregation_info=[agg("mean", k=3)])) == (
        "<memory>: $.aggregation_info[0].params.k: unknown key 'k'; mean takes no params"
    )


def test_unknown_param_lists_the_accepted_params() -> None:
    assert error(view(aggregation_info=[agg("top_k", n=3)])) == (
        "<memory>: $.aggregation_info[0].params.n: unknown key 'n'; allowed here: k, "
        "lg_max_map_size"
    )


def test_odd_keys_are_quoted_in_the_path() -> None:
    assert error(view(**{"group by": ["x"]})) == (
        "<memory>: $['group by']: unknown key 'group by'; allowed here: name, description, "
        "source, event_time, grouping_cols, grouping_sets, window, allowed_lateness, emit, "
        "milestones, state_ttl, filter, aggregation_info, derived, sinks, rollup, hot_key_fanout"
    )


def test_enum_lists_what_is_accepted() -> None:
    assert error(view(event_time={"field": "ts", "format": "unix"})) == (
        "<memory>: $.event_time.format: 'unix' is not accepted; expected one of 'epoch_s', "
        "'epoch_ms', 'epoch_us', 'iso8601'"
    )


@pytest.mark.parametrize(
    ("op", "fix"), [("==", "eq"), (">=", "ge"), ("<", "lt"), ("equal", "eq"), ("not in", "not_in")]
)
def test_filter_op_from_sql_suggests_ours(op: str, fix: str) -> None:
    found = error(view(filter={"field": "a", "op": op, "value": [1]}))
    assert found.startswith(f"<memory>: $.filter.op: {op!r} is not accepted; expected one of")
    assert found.endswith(f"(did you mean {fix!r}?)")


def test_wrong_type_says_what_was_given() -> None:
    assert error(view(grouping_cols="campaign")) == (
        "<memory>: $.grouping_cols: expected an array, got the string 'campaign'"
    )
    assert error(view(grouping_cols={"campaign": True})) == (
        "<memory>: $.grouping_cols: expected an array, got an object"
    )
    assert error(view(source=7.5)) == (
        "<memory>: $.source: expected a source name: a letter, digit or '_', then up to 248 "
        "letters, digits, '.', '_' or '-', e.g. 'events' or 'page-views'; got the number 7.5"
    )


def test_wrong_type_of_duration_explains_durations() -> None:
    assert error(view(allowed_lateness=600)) == (
        "<memory>: $.allowed_lateness: expected a duration: an integer and a unit (ms, s, m, h, "
        "d), e.g. '500ms', '90s', '10m', '1d'; got the number 600"
    )


@pytest.mark.parametrize(
    ("given", "fix"),
    [
        ("10 min", "10m"),
        ("90 seconds", "90s"),
        ("1.5h", "90m"),
        ("2 days", "2d"),
        ("500 msec", "500ms"),
        ("24 hours", "1d"),
        ("10M", "10m"),
        ("0.5s", "500ms"),
    ],
)
def test_malformed_duration_suggests_the_spelling(given: str, fix: str) -> None:
    assert error(view(window={"size": given})) == (
        f"<memory>: $.window.size: {given!r} is not a duration; expected an integer and a unit "
        f"(ms, s, m, h, d), e.g. '500ms', '90s', '10m', '1d' (did you mean {fix!r}?)"
    )


@pytest.mark.parametrize("given", ["soon", "10 parsecs", "1.5ms", "1h30m"])
def test_malformed_duration_without_an_obvious_fix(given: str) -> None:
    assert error(view(window={"size": given})) == (
        f"<memory>: $.window.size: {given!r} is not a duration; expected an integer and a unit "
        "(ms, s, m, h, d), e.g. '500ms', '90s', '10m', '1d'"
    )


def test_duration_in_a_list_points_at_the_item() -> None:
    assert error(view(window={"size": ["1m", "1 hour"]})).startswith(
        "<memory>: $.window.size[1]: '1 hour' is not a duration;"
    )


def test_bad_name_suggests_a_valid_one() -> None:
    assert error(view(name="Ad CTR (1h)")) == (
        "<memory>: $.name: 'Ad CTR (1h)' is not a valid name; expected a lowercase letter, then "
        "up to 62 lowercase letters, digits or '_', e.g. 'clicks_per_campaign' "
        "(did you mean 'ad_ctr_1h'?)"
    )


def test_empty_string_and_empty_list() -> None:
    assert errors(view(event_time={"field": ""}, aggregation_info=[])) == [
        "<memory>: $.event_time.field: must not be empty",
        "<memory>: $.aggregation_info: must not be empty: a view needs at least one aggregation",
    ]


def test_repeated_item_is_named() -> None:
    assert error(view(grouping_cols=["campaign", "country", "campaign"])) == (
        "<memory>: $.grouping_cols: 'campaign' is listed more than once; list each item once"
    )


def test_number_out_of_range_gives_the_range() -> None:
    assert error(view(aggregation_info=[agg("approx_quantiles", quantiles=[0.5, 99])])) == (
        "<memory>: $.aggregation_info[0].params.quantiles[1]: 99 is out of range; expected 0 to 1"
    )


def test_number_below_minimum() -> None:
    assert error(view(aggregation_info=[agg("top_k", k=0)])) == (
        "<memory>: $.aggregation_info[0].params.k: 0 is out of range; expected 1 to 100000"
    )
    assert error(view(aggregation_info=[agg("stddev", ddof=-1)])) == (
        "<memory>: $.aggregation_info[0].params.ddof: -1 is too small; expected at least 0"
    )


def test_too_many_items() -> None:
    bounds = list(range(10_001))
    assert error(view(aggregation_info=[agg("histogram", bounds=bounds)])) == (
        "<memory>: $.aggregation_info[0].params.bounds: has 10001 items; at most 10000 are accepted"
    )


def test_integer_param_given_as_text() -> None:
    assert error(view(aggregation_info=[agg("collect_set", max_size="100")])) == (
        "<memory>: $.aggregation_info[0].params.max_size: expected an integer, got the string '100'"
    )


def test_boolean_is_not_a_number() -> None:
    assert error(view(aggregation_info=[agg("top_k", k=True)])) == (
        "<memory>: $.aggregation_info[0].params.k: expected an integer, got true"
    )


# --------------------------------------------------------------------------- window (oneOf)


def test_window_type_unknown_lists_the_types() -> None:
    assert error(view(window={"type": "hopping", "size": "1h", "period": "5m"})) == (
        "<memory>: $.window.type: 'hopping' is not accepted; expected one of 'fixed', "
        "'sliding', 'session', 'cumulative', 'global' (did you mean 'sliding'?)"
    )


def test_window_type_not_a_string() -> None:
    assert error(view(window={"type": 3, "size": "1h"})) == (
        "<memory>: $.window.type: 3 is not accepted; expected one of 'fixed', 'sliding', "
        "'session', 'cumulative', 'global'"
    )


def test_window_errors_come_from_the_branch_of_its_type() -> None:
    assert error(view(window={"type": "sliding", "size": "1h"})) == (
        "<memory>: $.window: missing required key 'period': how often a sliding window starts, "
        'e.g. "period": "5m"'
    )


def test_session_window_errors() -> None:
    assert errors(view(window={"type": "session", "size": "1h"})) == [
        "<memory>: $.window: missing required key 'gap': the inactivity that closes a session, "
        'e.g. "gap": "30m"',
        "<memory>: $.window.size: unknown key 'size'; allowed here: type, gap "
        '(\'size\' belongs to "type": "fixed" or "sliding" or "cumulative")',
    ]


def test_key_of_another_window_type_names_that_type() -> None:
    assert error(view(window={"size": "1h", "period": "5m"})) == (
        "<memory>: $.window.period: unknown key 'period'; allowed here: type, size "
        '(\'period\' belongs to "type": "sliding")'
    )


def test_key_no_window_type_accepts_gets_no_type_hint() -> None:
    assert error(view(window={"size": "1h", "offset": "5m"})) == (
        "<memory>: $.window.offset: unknown key 'offset'; allowed here: type, size"
    )


def test_fixed_window_without_size() -> None:
    assert error(view(window={})) == (
        '<memory>: $.window: missing required key \'size\': the window length, e.g. "size": "10m"'
    )


def test_window_written_as_a_duration() -> None:
    assert error(view(window="10m")) == (
        "<memory>: $.window: expected an object, got the string '10m' "
        '(did you mean {"size": "10m"}?)'
    )


def test_window_of_another_type() -> None:
    assert error(view(window=["10m"])) == "<memory>: $.window: expected an object, got an array"


# --------------------------------------------------------------------------- filter


def test_filter_value_required_except_for_exists() -> None:
    assert error(view(filter={"field": "a", "op": "gt"})) == (
        "<memory>: $.filter: missing required key 'value': op 'gt' compares the field with it"
    )


def test_nested_filter_errors_point_into_the_tree() -> None:
    tree = {"any": [{"field": "a", "op": "exists"}, {"all": [{"field": "b", "op": "in"}]}]}
    assert error(view(filter=tree)) == (
        "<memory>: $.filter.any[1].all[0]: missing required key 'value': op 'in' compares the "
        "field with it"
    )


def test_filter_in_takes_a_non_empty_array() -> None:
    assert error(view(filter={"field": "a", "op": "not_in", "value": []})) == (
        "<memory>: $.filter.value: must not be empty"
    )


def test_filter_in_takes_any_json_values() -> None:
    """SPEC: ``"value": any``; a null or an object in the list matches nothing (SQL's IN)."""
    for op in ("in", "not_in"):
        spec = parse_view(view(filter={"field": "a", "op": op, "value": ["x", None, {"b": 1}, 2]}))
        assert spec.filter is not None


def test_filter_exists_value_is_a_boolean() -> None:
    assert error(view(filter={"field": "a", "op": "exists", "value": "yes"})) == (
        "<memory>: $.filter.value: expected true or false, got the string 'yes'"
    )


def test_filter_comparison_needs_a_number_or_string() -> None:
    assert error(view(filter={"field": "a", "op": "ge", "value": None})) == (
        "<memory>: $.filter.value: expected a number or a string, got null"
    )


def test_filter_mixing_all_and_predicate_keys() -> None:
    assert error(view(filter={"all": [{"field": "a", "op": "exists"}], "op": "eq"})) == (
        "<memory>: $.filter.op: unknown key 'op'; allowed here: all"
    )


# --------------------------------------------------------------------------- sinks


def test_sink_type_unknown() -> None:
    assert error(view(sinks=[{"type": "bigquery", "table": "t"}])) == (
        "<memory>: $.sinks[0].type: 'bigquery' is not accepted; expected one of 'file', 's3', "
        "'gcs', 'cassandra', 'kafka'"
    )


def test_sink_missing_field_of_its_type() -> None:
    assert error(view(sinks=[{"type": "cassandra", "table": "clicks"}])) == (
        "<memory>: $.sinks[0]: missing required key 'keyspace': the Cassandra keyspace"
    )


def test_sink_field_of_another_type() -> None:
    assert error(view(sinks=[{"type": "kafka", "topic": "t", "keyspace": "k"}])) == (
        "<memory>: $.sinks[0].keyspace: unknown key 'keyspace'; allowed here: type, topic"
    )


def test_object_store_path_needs_its_scheme() -> None:
    assert error(view(sinks=[{"type": "s3", "path": "bucket/prefix"}])) == (
        "<memory>: $.sinks[0].path: 'bucket/prefix' is not an S3 path; expected "
        "'s3://bucket/prefix'"
    )


@pytest.mark.parametrize(
    ("sink", "shown"),
    [
        ({"type": "file", "path": "hdfs://nn/rows"}, "'hdfs://nn/rows'"),
        ({"type": "file", "path": "file:///tmp/rows"}, "'file:///tmp/rows'"),
        ({"type": "file", "path": "s3://"}, "'s3://'"),
        ({"type": "s3", "path": "s3:///rows"}, "'s3:///rows'"),
        ({"type": "gcs", "path": "gs://"}, "'gs://'"),
    ],
)
def test_a_file_sink_path_is_a_folder_or_a_bucket_prefix(sink: dict, shown: str) -> None:
    """Beam's file systems know no other scheme here, and none without a bucket: such a path
    passed validation and failed the run with a traceback (an S3 path without a bucket left
    a local folder 's3:' behind)."""
    noun = {"file": "a local folder, S3 or GCS path", "s3": "an S3 path", "gcs": "a GCS path"}
    assert error(view(sinks=[sink])).startswith(
        f"<memory>: $.sinks[0].path: {shown} is not {noun[sink['type']]}; expected "
    )


@pytest.mark.parametrize("path", ["out", "/tmp/rows", "s3:/rows", "a:b", "s3://b/p", "gs://b"])
def test_local_folders_and_bucket_prefixes_are_file_sink_paths(path: str) -> None:
    parse_view(view(sinks=[{"type": "file", "path": path}]))


def test_file_format() -> None:
    assert error(view(sinks=[{"type": "file", "path": "out", "format": "json"}])) == (
        "<memory>: $.sinks[0].format: 'json' is not accepted; expected one of 'jsonl', 'csv', "
        "'parquet' (did you mean 'jsonl'?)"
    )


def test_cassandra_identifier() -> None:
    assert error(view(sinks=[{"type": "cassandra", "keyspace": "m", "table": "a-b"}])) == (
        "<memory>: $.sinks[0].table: 'a-b' is not a Cassandra identifier; expected a letter, "
        "then up to 47 letters, digits or '_'"
    )


# --------------------------------------------------------------------------- semantic checks


def test_unknown_aggregation_lists_the_known_ones() -> None:
    assert error(view(aggregation_info=[agg("median_ish")])) == (
        "<memory>: $.aggregation_info[0].aggregation: unknown aggregation 'median_ish'; "
        f"known: {KNOWN}"
    )


@pytest.mark.parametrize(
    ("name", "fix"),
    [("avg", "mean"), ("AVG", "mean"), ("stdev", "stddev"), ("percentile", "approx_quantiles"),
     ("approx_count_distinct", "count_distinct"), ("topk", "top_k"), ("summ", "sum"),
     ("SUM", "sum")],
)  # fmt: skip
def test_unknown_aggregation_suggests_ours(name: str, fix: str) -> None:
    assert error(view(aggregation_info=[agg(name)])) == (
        f"<memory>: $.aggregation_info[0].aggregation: unknown aggregation {name!r} "
        f"(did you mean {fix!r}?); known: {KNOWN}"
    )


def test_col_name_required_except_for_count() -> None:
    assert error(view(aggregation_info=[agg("first", col=None)])) == (
        "<memory>: $.aggregation_info[0]: missing required key 'col_name': first needs the "
        "message field to aggregate"
    )
    parse_view(view(aggregation_info=[agg("count", col=None)]))
    counted = parse_view(view(aggregation_info=[agg("count", col="user_id")]))
    assert counted.aggregations[0].column == "user_id"


def test_params_rejected_by_the_combiner_are_wrapped_with_the_path() -> None:
    # 12.0 is an integer to JSON Schema but not to the sketch library. The combiner's own
    # message already names the aggregation, so it is not prefixed again; the path ends at
    # the param the message names.
    found = error(view(aggregation_info=[agg("hll_sketch", lg_k=12.0)]))
    assert found.startswith("<memory>: $.aggregation_info[0].params.lg_k: hll_sketch")
    assert "lg_k" in found
    assert "12.0" in found
    assert "invalid params for" not in found


def test_histogram_bounds_must_increase() -> None:
    assert error(view(aggregation_info=[agg("histogram", bounds=[0, 10, 10, 5])])) == (
        "<memory>: $.aggregation_info[0].params.bounds[2]: bounds must increase: 10 follows 10"
    )


def test_aggregated_col_name_unique() -> None:
    assert error(view(aggregation_info=[agg("sum", "a"), agg("max", "b"), agg("min", "a")])) == (
        "<memory>: $.aggregation_info[2].aggregated_col_name: 'a' is already the "
        "aggregated_col_name of $.aggregation_info[0]; each must be unique within the view"
    )


def test_aggregated_col_name_distinct_from_grouping_cols() -> None:
    assert error(view(aggregation_info=[agg("count_distinct", "campaign")])) == (
        "<memory>: $.aggregation_info[0].aggregated_col_name: 'campaign' is also a grouping "
        "column, and output rows carry both; choose another name, e.g. "
        "'campaign_count_distinct'"
    )


@pytest.mark.parametrize("name", RESERVED_COLUMNS)
def test_reserved_row_keys_cannot_be_columns(name: str) -> None:
    reserved = ", ".join(RESERVED_COLUMNS)
    assert error(view(aggregation_info=[agg("count", name, col=None)])) == (
        f"<memory>: $.aggregation_info[0].aggregated_col_name: {name!r} cannot be a column "
        f"name (aggregated_col_name): every output row already has a {name!r} key "
        f"(reserved: {reserved})"
    )
    assert error(view(grouping_cols=[name])) == (
        f"<memory>: $.grouping_cols[0]: {name!r} cannot be a grouping column: every output row "
        f"already has a {name!r} key (reserved: {reserved})"
    )


@pytest.mark.parametrize("name", ["View", "PANE_INDEX", "Window_Start"])
def test_reserved_row_keys_in_another_case_cannot_be_grouping_columns(name: str) -> None:
    """Parquet readers in Spark and Hive, and DuckDB, match column names ignoring case."""
    assert error(view(grouping_cols=[name])) == (
        f"<memory>: $.grouping_cols[0]: {name!r} cannot be a grouping column: every output row "
        f"already has a {name.lower()!r} key, and readers that ignore case take one for the "
        f"other (reserved: {', '.join(RESERVED_COLUMNS)})"
    )


@pytest.mark.parametrize("name", ["column", "threshold", "value", "milestone_id", "Value"])
def test_milestone_event_keys_cannot_be_grouping_columns_of_a_view_with_milestones(
    name: str,
) -> None:
    """A milestone event holds the grouping columns beside its own keys: one would hide the
    other (without milestones there are no events, and the names are free)."""
    counters = view(grouping_cols=[name], milestones=[{"column": "events", "at": [10]}])
    assert error(counters) == (
        f"<memory>: $.grouping_cols[0]: {name!r} cannot be a grouping column of a view with "
        "milestones: each milestone event carries the grouping columns beside its own keys "
        "(column, threshold, value, milestone_id), and one would hide the other"
    )
    parse_view(view(grouping_cols=[name]))


def test_a_view_may_not_take_the_name_of_the_input_dead_letters() -> None:
    """Its dead letters would share ``_dead_letter/input.jsonl`` with the input's."""
    assert error(view(name="input")) == (
        "<memory>: $.name: 'input' names the file of the dead letters no view could read "
        "(OUTPUT/_dead_letter/input.jsonl), beside each view's <view>.jsonl; choose another name"
    )


def test_columns_differing_only_in_case_are_refused() -> None:
    assert error(view(grouping_cols=["userId"], aggregation_info=[agg("count", "userid")])) == (
        "<memory>: $.aggregation_info[0].aggregated_col_name: 'userid' differs from 'userId' "
        "(at $.grouping_cols[0]) only in case, and readers that ignore case (Parquet in Spark "
        "or Hive, DuckDB) would see one column; choose another name"
    )
    assert error(view(grouping_cols=["Org", "org"])) == (
        "<memory>: $.grouping_cols[1]: 'org' differs from 'Org' (at $.grouping_cols[0]) only "
        "in case, and readers that ignore case (Parquet in Spark or Hive, DuckDB) would see "
        "one column; choose another name"
    )


@pytest.mark.parametrize(
    "kind", ["approx_quantiles", "hll_sketch", "histogram", "top_k", "collect_set"]
)
def test_derived_columns_compute_over_numbers_only(kind: str) -> None:
    """An expression over a list or a sketch was null on every row."""
    params = {"bounds": [1, 2]} if kind == "histogram" else {}
    aggregations = [agg("count", "n", col=None), agg(kind, "a", **params)]
    article = "an" if kind[0] in "aeiou" else "a"
    assert error(view(aggregation_info=aggregations, derived=[{"name": "d", "expr": "a + n"}])) == (
        f"<memory>: $.derived[0].expr: 'a' is {article} {kind} aggregation, whose values are "
        "not numbers; an expression computes over one of count, count_distinct, "
        "count_distinct_exact, sum, mean, min, max, variance, stddev, first, last"
    )


def test_derived_columns_may_use_first_and_last() -> None:
    """``last_price - first_price``: a message's value, a number where the field holds one."""
    aggregations = [agg("first", "f"), agg("last", "l")]
    parse_view(view(aggregation_info=aggregations, derived=[{"name": "d", "expr": "l - f"}]))


def test_grouping_set_outside_grouping_cols_names_the_column() -> None:
    assert error(view(grouping_cols=["campaign", "country"], grouping_sets=[["contry"]])) == (
        "<memory>: $.grouping_sets[0][0]: 'contry' is not in grouping_cols (campaign, country); "
        "a grouping set may only use grouping columns (did you mean 'country'?)"
    )


def test_grouping_sets_with_empty_grouping_cols() -> None:
    assert error(view(grouping_cols=[], grouping_sets=[["a"]])) == (
        "<memory>: $.grouping_sets[0][0]: 'a' is not in grouping_cols (none); a grouping set "
        "may only use grouping columns"
    )


def test_repeated_grouping_set_in_another_order() -> None:
    sets = [["campaign", "country"], ["country", "campaign"]]
    assert error(view(grouping_cols=["campaign", "country"], grouping_sets=sets)) == (
        "<memory>: $.grouping_sets[1]: repeats the grouping set at $.grouping_sets[0]; each set "
        "would produce the same rows twice"
    )


def test_sliding_period_longer_than_a_size() -> None:
    assert error(view(window={"type": "sliding", "size": ["1h", "1m"], "period": "5m"})) == (
        "<memory>: $.window.period: period '5m' is longer than size '1m'; windows would leave "
        "gaps between them. Use a period up to the size (a period equal to the size is a fixed "
        "window)"
    )


def test_sliding_period_equal_to_size_is_allowed() -> None:
    parse_view(view(window={"type": "sliding", "size": "5m", "period": "5m"}))


@pytest.mark.parametrize(
    ("window", "where", "what"),
    [
        ({"size": "0m"}, "$.window.size", "a window size must be longer than 0, got '0m'"),
        ({"size": ["1m", "0s"]}, "$.window.size[1]",
         "a window size must be longer than 0, got '0s'"),
        ({"type": "sliding", "size": "1h", "period": "0ms"}, "$.window.period",
         "a sliding period must be longer than 0, got '0ms'"),
        ({"type": "session", "gap": "0s"}, "$.window.gap",
         "a session gap must be longer than 0, got '0s'"),
    ],
)  # fmt: skip
def test_zero_lengths_are_refused(window: dict[str, Any], where: str, what: str) -> None:
    assert error(view(window=window)) == f"<memory>: {where}: {what}"


def test_zero_early_period_is_refused_but_zero_lateness_is_fine() -> None:
    assert error(view(emit={"early": "0s"}, allowed_lateness="0s")) == (
        "<memory>: $.emit.early: an early-firing period must be longer than 0, got '0s'"
    )


def test_sizes_of_the_same_length() -> None:
    assert error(view(window={"size": ["1h", "60m"]})) == (
        "<memory>: $.window.size[1]: '60m' is as long as '1h'; list each granularity once"
    )


def test_blank_event_time_field() -> None:
    assert error(view(event_time={"field": "  "})) == (
        "<memory>: $.event_time.field: is blank; name the message field that holds the event "
        "time, e.g. 'ts'"
    )


# --------------------------------------------------------------------------- limits

LONGEST = "accepted: from '1ms' to '36500d' (about 100 years)"


@pytest.mark.parametrize(
    ("changes", "where", "what"),
    [
        ({"window": {"size": "36501d"}}, "$.window.size", "'36501d' is too long for a window size"),
        ({"window": {"size": f"{10**30}ms"}}, "$.window.size",
         f"'{10**30}ms' is too long for a window size"),
        ({"window": {"size": ["1m", "876001h"]}}, "$.window.size[1]",
         "'876001h' is too long for a window size"),
        ({"window": {"type": "sliding", "size": "1h", "period": "36501d"}}, "$.window.period",
         "'36501d' is too long for a sliding period"),
        ({"window": {"type": "session", "gap": "52560001m"}}, "$.window.gap",
         "'52560001m' is too long for a session gap"),
        ({"emit": {"early": "3153600001s"}}, "$.emit.early",
         "'3153600001s' is too long for an early-firing period"),
        ({"rollup": {"window": {"size": "36510d"}}}, "$.rollup.window.size",
         "'36510d' is too long for a roll-up window size"),
    ],
)  # fmt: skip
def test_durations_are_at_most_100_years(changes: dict[str, Any], where: str, what: str) -> None:
    assert error(view(**changes)) == f"<memory>: {where}: {what}; {LONGEST}"


def test_the_longest_durations_are_accepted() -> None:
    spec = parse_view(
        view(
            window={"size": "36500d"},
            allowed_lateness="36500d",
            emit={"early": "876000h"},
            rollup={"window": {"size": "36500d"}},
        )
    )
    assert spec.window.sizes[0].micros == spec.allowed_lateness.micros == 36_500 * 86_400 * 10**6
    # Leading zeros are not digits that count.
    assert parse_view(view(window={"size": "0" * 40 + "10m"})).window.sizes[0].micros == 6 * 10**8


def test_lateness_is_bounded_too() -> None:
    assert error(view(allowed_lateness="36501d")) == (
        "<memory>: $.allowed_lateness: '36501d' is too long for allowed_lateness; accepted: "
        "from '0s' to '36500d' (about 100 years)"
    )


def test_a_duration_of_thousands_of_digits_is_an_error_not_a_traceback() -> None:
    # int() refuses strings of more than 4300 digits with a ValueError of its own.
    text = "1" * 5000 + "ms"
    assert error(view(window={"size": text})) == (
        f"<memory>: $.window.size: '{'1' * 76}... is too long for a window size; {LONGEST}"
    )


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"type": "sliding", "size": "1d", "period": "1ms"},
         "size '1d' every period '1ms' puts each message in 86,400,000 windows; at most 1,000 "
         "are accepted (a period of at least '86400ms' for this size)"),
        ({"type": "sliding", "size": "1h", "period": "3s"},
         "size '1h' every period '3s' puts each message in 1,200 windows; at most 1,000 are "
         "accepted (a period of at least '3600ms' for this size)"),
        ({"type": "sliding", "size": "1001s", "period": "1s"},
         "size '1001s' every period '1s' puts each message in 1,001 windows; at most 1,000 are "
         "accepted (a period of at least '1001ms' for this size)"),
        ({"type": "sliding", "size": ["1h", "1d"], "period": "1m"},
         "sizes '1h', '1d' every period '1m' put each message in 60 + 1,440 = 1,500 windows; at "
         "most 1,000 are accepted"),
    ],
)  # fmt: skip
def test_windows_per_message_are_bounded(window: dict[str, Any], message: str) -> None:
    assert error(view(window=window)) == f"<memory>: $.window.period: {message}"


@pytest.mark.parametrize(
    "window",
    [
        {"type": "sliding", "size": "1000s", "period": "1s"},
        {"type": "sliding", "size": "1h", "period": "4s"},
        # windows.sliding() starts a window at every multiple of the period that covers the
        # event, so a size need not be a multiple of the period: 3 or 4 windows here.
        {"type": "sliding", "size": "10m", "period": "3m"},
    ],
)
def test_windows_per_message_up_to_the_bound(window: dict[str, Any]) -> None:
    parse_view(view(window=window))


def test_windows_per_message_of_many_fixed_sizes() -> None:
    sizes = [f"{n}ms" for n in range(1, 1002)]
    assert error(view(window={"size": sizes})) == (
        "<memory>: $.window.size: 1,001 sizes put each message in 1,001 windows; at most 1,000 "
        "are accepted"
    )
    parse_view(view(window={"size": sizes[:1000]}))


def _nested_filter(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"field": "kind", "op": "eq", "value": "ads"}
    for k in range(levels):
        node = {"all" if k % 2 else "any": [node]}
    return node


def test_filters_nest_within_the_nesting_bound(tmp_path: Path) -> None:
    # The view is level 1, its filter level 2, and each all/any adds an array and an object.
    deepest = _nested_filter((MAX_NESTING - 2) // 2)
    assert parse_view(view(filter=deepest)).filter is not None
    path = write(tmp_path, "a.json", view(filter=deepest))
    assert validate_paths([path]) == []


def test_nesting_deeper_than_the_bound_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    for name, text in [
        ("arrays.json", "[" * 100_000 + "]" * 100_000),
        ("open.json", "{" + '"a":[' * 100_000),
        ("filter.json", json.dumps(view(filter=_nested_filter(MAX_NESTING)), indent=1)),
    ]:
        path = write(tmp_path, name, text)
        found = [str(e) for e in validate_paths([path])]
        assert len(found) == 1, found
        assert found[0].startswith(f"{path}: $: objects and arrays nest deeper than 64 levels at ")
        assert found[0].endswith(
            "; a view file may nest at most 64 (each all/any of a filter takes two)"
        )
    assert [str(e) for e in validate_paths([tmp_path / "arrays.json"])] == [
        f"{tmp_path / 'arrays.json'}: $: objects and arrays nest deeper than 64 levels at line "
        "1, column 65; a view file may nest at most 64 (each all/any of a filter takes two)"
    ]


def test_brackets_in_strings_are_not_nesting(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", view(description='[{"' * 1000 + "\\" + "]" * 5))
    assert validate_paths([path]) == []


def test_nesting_of_a_view_given_as_objects() -> None:
    value: Any = 1
    for _ in range(100_000):
        value = [value]
    found = error(view(filter={"field": "kind", "op": "eq", "value": value}))
    assert found == (
        "<memory>: $.filter.value" + "[0]" * 62 + ": objects and arrays nest deeper than 64 "
        "levels here; a view file may nest at most 64 (each all/any of a filter takes two)"
    )


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ("1e999", "1e999"),
        ("-1e999", "-1e999"),
        ("1" * 5000, "11111111111111111111... (5,000 characters)"),
        ("-" + "9" * 310, "-9999999999999999999... (311 characters)"),
        (str(2 * 10**308), str(2 * 10**308)[:20] + "... (309 characters)"),
        ("0." + "0" * 400 + "1e999", "0.000000000000000000... (407 characters)"),
    ],
)
def test_numbers_beyond_a_double_are_errors_with_their_place(
    tmp_path: Path, number: str, shown: str
) -> None:
    text = json.dumps(view(description="1e999 " + number), indent=2)
    text = text.replace('"name": "clicks"', f'"name": "clicks",\n  "hot_key_fanout": {number}')
    path = write(tmp_path, "a.json", text)
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $: invalid JSON at line 3, column 21: the number {shown} is out of range; "
        "numbers in a view are at most 1.8e+308 in magnitude (a double's range)"
    ]


def test_the_largest_numbers_are_read(tmp_path: Path) -> None:
    big = int(sys.float_info.max)
    text = json.dumps(view(hot_key_fanout=big, description="x"))
    text = text.replace('"x"', '"x", "sinks": [{"type": "kafka", "topic": 1e-999}]')
    path = write(tmp_path, "a.json", text)
    # Read, then refused by the schema as any wrong value is.
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $.hot_key_fanout: {str(big)[:77]}... is out of range; expected 2 to 1024",
        f"{path}: $.sinks[0].topic: expected a Kafka topic name: 1 to 249 letters, digits, "
        "'.', '_' or '-'; got the number 0.0",
    ]


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"name": "clicks\n"}, "$.name"),
        ({"window": {"size": "10m\n"}}, "$.window.size"),
    ],
)
def test_a_final_newline_does_not_match_a_pattern(changes: dict[str, Any], where: str) -> None:
    # JSON Schema's "$" is the end of the string; Python's also matches before a final "\n".
    assert error(view(**changes)).startswith(f"<memory>: {where}: ")


def test_a_derived_expression_of_a_thousand_terms() -> None:
    # It passed validation and raised RecursionError on the first row.
    derived = [{"name": "total", "expr": " + ".join(["events"] * 1000)}]
    assert error(view(derived=derived)) == (
        "<memory>: $.derived[0].expr: the expression is 8,997 characters long; at most 1,000 "
        "are accepted (split it into several derived columns)"
    )
    derived = [{"name": "total", "expr": "+".join(["events"] * 142)}]
    spec = parse_view(view(derived=derived))
    assert parse_expr(spec.derived[0].expr).evaluate({"events": 2}) == 284.0


def test_a_number_of_thousands_of_digits_in_an_expression() -> None:
    derived = [{"name": "big", "expr": "events * " + "1" * 5000}]
    assert error(view(derived=derived)) == (
        "<memory>: $.derived[0].expr: the expression is 5,009 characters long; at most 1,000 "
        "are accepted (split it into several derived columns)"
    )
    derived = [{"name": "big", "expr": "events * " + "1" * 400}]
    assert error(view(derived=derived)) == (
        f"<memory>: $.derived[0].expr: syntax error in {('events * ' + '1' * 68)!r}... at "
        f"column 10: expected a number a float can hold, found {'1' * 77!r}..."
    )


def test_thousands_of_columns_are_reported_with_short_messages() -> None:
    # One problem per column: messages list the first 20 columns, and no suggestion is
    # searched among thousands (each would compare the word with every column).
    cols = [f"c{i}" for i in range(5000)]
    found = errors(view(grouping_cols=cols, grouping_sets=[[f"d{i}"] for i in range(5000)]))
    assert len(found) == 5000
    listed = ", ".join(cols[:20])
    assert found[-1] == (
        f"<memory>: $.grouping_sets[4999][0]: 'd4999' is not in grouping_cols ({listed}, ... "
        "(5,000 in all)); a grouping set may only use grouping columns"
    )


def test_a_repeat_far_down_a_long_list_is_named() -> None:
    cols = [f"c{i}" for i in range(20000)]
    assert error(view(grouping_cols=[*cols, "c7"])) == (
        "<memory>: $.grouping_cols: 'c7' is listed more than once; list each item once"
    )
    # As JSON compares: 1 and 1.0 are equal, true and 1 are not.
    assert errors(view(grouping_cols=[True, 1, "a", 1.0])) == [
        "<memory>: $.grouping_cols: 1.0 is listed more than once; list each item once",
        "<memory>: $.grouping_cols[0]: expected a string, got true",
        "<memory>: $.grouping_cols[1]: expected a string, got the number 1",
        "<memory>: $.grouping_cols[3]: expected a string, got the number 1.0",
    ]


# --------------------------------------------------------------------------- derived


def test_derived_may_use_aggregated_and_earlier_derived_columns() -> None:
    spec = parse_view(
        view(
            derived=[
                {"name": "cost_per_event", "expr": "spend / events"},
                {"name": "cost_per_1k", "expr": "cost_per_event * 1000"},
            ]
        )
    )
    assert [d.name for d in spec.derived] == ["cost_per_event", "cost_per_1k"]


def test_derived_syntax_error_names_the_column() -> None:
    assert error(view(derived=[{"name": "r", "expr": "spend // events"}])) == (
        "<memory>: $.derived[0].expr: syntax error in 'spend // events' at column 8: expected "
        "a number, a column name or '(', found '/'"
    )


def test_derived_unknown_column_suggests_and_lists() -> None:
    assert error(view(derived=[{"name": "r", "expr": "spnd / events"}])) == (
        "<memory>: $.derived[0].expr: unknown column 'spnd' (did you mean 'spend'?); "
        "expressions may use the aggregated columns and earlier derived columns: events, spend"
    )


def test_derived_using_a_later_derived_column() -> None:
    derived = [{"name": "a", "expr": "b * 2"}, {"name": "b", "expr": "spend"}]
    assert error(view(derived=derived)) == (
        "<memory>: $.derived[0].expr: 'b' is defined later, at $.derived[1]; a derived column "
        "may only use aggregated columns and earlier derived columns"
    )


def test_derived_using_itself() -> None:
    assert error(view(derived=[{"name": "a", "expr": "a + 1"}])) == (
        "<memory>: $.derived[0].expr: 'a' refers to itself"
    )


def test_derived_using_a_grouping_column() -> None:
    assert error(view(derived=[{"name": "a", "expr": "campaign * 2"}])) == (
        "<memory>: $.derived[0].expr: 'campaign' is a grouping column; expressions compute "
        "over aggregated columns (add an aggregation of it and use its aggregated_col_name)"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("spend", "'spend' is already the aggregated_col_name of $.aggregation_info[1]; choose "
                  "another name"),
        ("campaign", "'campaign' is a grouping column; choose another name"),
        ("pane_index", "'pane_index' cannot be a derived column: every output row already has a "
                       "'pane_index' key (reserved: " + ", ".join(RESERVED_COLUMNS) + ")"),
    ],
)  # fmt: skip
def test_derived_name_clashes(name: str, message: str) -> None:
    assert error(view(derived=[{"name": name, "expr": "events"}])) == (
        f"<memory>: $.derived[0].name: {message}"
    )


def test_derived_names_unique() -> None:
    derived = [{"name": "r", "expr": "events"}, {"name": "r", "expr": "spend"}]
    assert error(view(derived=derived)) == (
        "<memory>: $.derived[1].name: 'r' is already defined at $.derived[0]; derived names "
        "must be unique"
    )


# --------------------------------------------------------------------------- custom and plugins

#: Every call of a callable that a hostile view names, or of a test class's __init__. A view
#: that validates without adding to it ran none of them.
CALLS: list[tuple[str, dict[str, Any]]] = []

ACCEPTED = "expected a subclass of liveagg.combiners.LiveaggCombineFn"
IN_A_PACKAGE = (
    "expected 'package.module:ClassName' naming a subclass of "
    "liveagg.combiners.LiveaggCombineFn in an installed package"
)


class Scaled(Complete):
    """A custom sum that multiplies by ``factor``; enough for loading, never run here."""

    def __init__(self, factor: int = 1) -> None:
        CALLS.append(("Scaled", {"factor": factor}))
        if not isinstance(factor, int):
            raise ValueError(f"factor must be an integer, got {factor!r}")
        self.factor = factor


class PlainBeamFn(beam.CombineFn):
    """A Beam CombineFn that does not say how its accumulator is written to bytes."""

    def __init__(self, **params: Any) -> None:
        CALLS.append(("PlainBeamFn", params))


def side_effect(**params: Any) -> None:
    """A function in an importable module: naming it must not call it."""
    CALLS.append(("side_effect", params))


class Exits(Complete):
    """Its __init__ exits: the run ended with that exit code and no word."""

    def __init__(self) -> None:
        raise SystemExit(3)


class BadType(Complete):
    """Declares a type no sink knows: found at the first row before, with a traceback."""

    def output_type(self) -> str:
        return "float"


class _Helper(Complete):
    """A private class of a module, as liveagg's own ``_NumericFn``."""


class NoBytes(LiveaggCombineFn):
    """Beam's four methods, but not the accumulator's bytes."""

    create_accumulator = Complete.create_accumulator
    add_input = Complete.add_input
    merge_accumulators = Complete.merge_accumulators
    extract_output = Complete.extract_output


class _PosesAsClass:
    """An object whose ``__class__`` claims ``type``: ``issubclass`` raised TypeError."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type


class Exploding(Complete):
    """Its __init__ fails with something other than ValueError or TypeError."""

    def __init__(self, key: str = "x") -> None:
        raise KeyError(key)


@pytest.fixture
def custom_module(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("liveagg_example_fns")
    module.Scaled = Scaled  # type: ignore[attr-defined]
    module.NotACombineFn = dict  # type: ignore[attr-defined]
    module.PlainBeamFn = PlainBeamFn  # type: ignore[attr-defined]
    module.side_effect = side_effect  # type: ignore[attr-defined]
    module.Exploding = Exploding  # type: ignore[attr-defined]
    module.Exits = Exits  # type: ignore[attr-defined]
    module.BadType = BadType  # type: ignore[attr-defined]
    module._Helper = _Helper  # type: ignore[attr-defined]
    module.NoBytes = NoBytes  # type: ignore[attr-defined]
    module.poser = _PosesAsClass()  # type: ignore[attr-defined]
    module.INSTANCE = object.__new__(Scaled)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    CALLS.clear()
    return module.__name__


def test_custom_aggregation_loads(custom_module: str) -> None:
    item = agg("custom", combine_fn=f"{custom_module}:Scaled", factor=3)
    spec = parse_view(view(aggregation_info=[item]))
    assert spec.aggregations[0].kind == "custom"
    assert dict(spec.aggregations[0].params) == {
        "combine_fn": f"{custom_module}:Scaled",
        "factor": 3,
    }


def test_custom_aggregation_needs_combine_fn() -> None:
    assert errors(view(aggregation_info=[agg("custom", col=None)])) == [
        "<memory>: $.aggregation_info[0]: missing required key 'params': custom needs "
        '"params": {"combine_fn": "package.module:ClassName"}'
    ]
    assert error(view(aggregation_info=[agg("custom", factor=2)])) == (
        "<memory>: $.aggregation_info[0].params: missing required key 'combine_fn': the "
        "CombineFn class as 'package.module:ClassName'"
    )


def test_a_custom_aggregation_without_col_name_must_count_rows(custom_module: str) -> None:
    """Without a column it is fed a 1 per message, which only a class that says it counts
    rows (``counts_rows = True``) expects; the attribute is read, nothing is called."""
    item = agg("custom", col=None, combine_fn=f"{custom_module}:Scaled")
    assert error(view(aggregation_info=[item])) == (
        "<memory>: $.aggregation_info[0]: missing required key 'col_name': custom (Scaled) "
        "needs the message field to aggregate (a class that counts messages sets "
        "counts_rows = True)"
    )
    assert CALLS == []


@pytest.mark.parametrize("reference", ["pkg.Fn", "pkg.mod:Fn\n", "pkg:Fn.attr", "pkg:"])
def test_custom_combine_fn_reference_is_checked(reference: str) -> None:
    assert error(view(aggregation_info=[agg("custom", combine_fn=reference)])) == (
        f"<memory>: $.aggregation_info[0].params.combine_fn: {reference!r} is not a combine_fn "
        "reference; expected 'package.module:ClassName'"
    )


def _hostile(tmp_path: Path, combine_fn: str, **params: Any) -> list[str]:
    """What ``liveagg validate`` and ``load_views`` say of a view naming ``combine_fn``."""
    path = write(
        tmp_path, "v.json", view(aggregation_info=[agg("custom", combine_fn=combine_fn, **params)])
    )
    found = [str(e) for e in validate_paths([path])]
    with pytest.raises(ViewErrors) as info:
        load_views([path])
    assert [str(e) for e in info.value] == found
    return [line.removeprefix(f"{path}: ") for line in found]


@pytest.mark.parametrize(
    ("combine_fn", "params", "module"),
    [
        ("os:system", {"command": "touch {marker}"}, "os"),
        ("subprocess:Popen", {"args": ["touch", "{marker}"]}, "subprocess"),
        ("subprocess:run", {"args": "touch {marker}", "shell": True}, "subprocess"),
        ("builtins:eval", {"source": "open('{marker}', 'w')"}, "builtins"),
        ("shutil:rmtree", {"path": "{marker}"}, "shutil"),
        ("antigravity:Fn", {}, "antigravity"),  # opens a web browser when imported
        ("venv:main", {"args": ["{marker}"]}, "venv"),
        # Not in sys.stdlib_module_names, but Python's; importing it runs the whole test suite.
        ("test.autotest:Fn", {}, "test"),
    ],
)
def test_standard_library_references_are_refused_and_nothing_runs(
    tmp_path: Path, combine_fn: str, params: dict[str, Any], module: str
) -> None:
    marker = tmp_path / "PWNED"
    params = json.loads(json.dumps(params).replace("{marker}", str(marker)))
    imported = module in sys.modules
    assert _hostile(tmp_path, combine_fn, **params) == [
        f"$.aggregation_info[0].params.combine_fn: {combine_fn!r} names {module!r}, a module "
        f"of Python's standard library, which holds no aggregation; {IN_A_PACKAGE}"
    ]
    assert not marker.exists()
    assert (module in sys.modules) == imported  # refused before importing


def test_main_modules_are_refused_before_importing(tmp_path: Path) -> None:
    # pip/__main__.py adds a wheel to sys.path at import; other __main__ modules run programs.
    assert "pip.__main__" not in sys.modules
    assert _hostile(tmp_path, "pip.__main__:Fn") == [
        "$.aggregation_info[0].params.combine_fn: 'pip.__main__:Fn' names a special module "
        "(such as __main__, which runs a program when imported); module names starting with "
        f"'__' are refused; {IN_A_PACKAGE}"
    ]
    assert "pip.__main__" not in sys.modules


@pytest.mark.parametrize(
    ("attribute", "what"),
    [
        ("side_effect", "a function, not a class"),
        ("NotACombineFn", "the class dict, which is not a CombineFn"),
        (
            "PlainBeamFn",
            "a Beam CombineFn (PlainBeamFn) that does not subclass LiveaggCombineFn, so it does "
            "not say how its accumulator is written to bytes",
        ),
        ("INSTANCE", "a Scaled instance, not a class"),
    ],
)
def test_references_to_anything_but_an_aggregation_class_are_refused_uncalled(
    tmp_path: Path, custom_module: str, attribute: str, what: str
) -> None:
    reference = f"{custom_module}:{attribute}"
    assert _hostile(tmp_path, reference, factor=2) == [
        f"$.aggregation_info[0].params.combine_fn: {reference!r} is {what}; {ACCEPTED}"
    ]
    assert CALLS == []


def test_a_real_beam_combine_fn_is_refused(tmp_path: Path) -> None:
    reference = "apache_beam.transforms.combiners:CountCombineFn"
    assert _hostile(tmp_path, reference) == [
        f"$.aggregation_info[0].params.combine_fn: {reference!r} is a Beam CombineFn "
        "(CountCombineFn) that does not subclass LiveaggCombineFn, so it does not say how its "
        f"accumulator is written to bytes; {ACCEPTED}"
    ]


def test_the_base_class_itself_is_refused(tmp_path: Path) -> None:
    reference = "liveagg.combiners:LiveaggCombineFn"
    assert _hostile(tmp_path, reference) == [
        f"$.aggregation_info[0].params.combine_fn: {reference!r} is the base class itself; "
        "name your subclass of it, which implements the aggregation"
    ]


def test_custom_module_that_does_not_import(tmp_path: Path) -> None:
    assert _hostile(tmp_path, "no_such_pkg.fns:Fn") == [
        "$.aggregation_info[0].params.combine_fn: 'no_such_pkg.fns:Fn': cannot import module "
        "'no_such_pkg.fns' (ModuleNotFoundError: No module named 'no_such_pkg'); " + IN_A_PACKAGE
    ]


def test_custom_module_whose_import_fails_or_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Importing runs a module's top-level code: what it raises, SystemExit included, is a
    # validation error rather than the end of `liveagg validate`.
    modules = tmp_path / "modules"
    write(modules, "liveagg_exits_on_import.py", "raise SystemExit(3)\n")
    write(modules, "liveagg_fails_on_import.py", "1 / 0\n")
    monkeypatch.syspath_prepend(str(modules))
    for name in ("liveagg_exits_on_import", "liveagg_fails_on_import"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert _hostile(tmp_path, "liveagg_exits_on_import:Fn") == [
        "$.aggregation_info[0].params.combine_fn: 'liveagg_exits_on_import:Fn': cannot import "
        f"module 'liveagg_exits_on_import' (SystemExit: 3); {IN_A_PACKAGE}"
    ]
    assert _hostile(tmp_path, "liveagg_fails_on_import:Fn") == [
        "$.aggregation_info[0].params.combine_fn: 'liveagg_fails_on_import:Fn': cannot import "
        f"module 'liveagg_fails_on_import' (ZeroDivisionError: division by zero); {IN_A_PACKAGE}"
    ]


def test_custom_class_that_does_not_exist(tmp_path: Path, custom_module: str) -> None:
    assert _hostile(tmp_path, f"{custom_module}:Nope") == [
        f"$.aggregation_info[0].params.combine_fn: '{custom_module}:Nope': module "
        f"'{custom_module}' has no attribute 'Nope'; {IN_A_PACKAGE}"
    ]


def test_validate_checks_custom_params_by_signature_without_calling(
    tmp_path: Path, custom_module: str
) -> None:
    item = agg("custom", combine_fn=f"{custom_module}:Scaled", factor=3)
    path = write(tmp_path, "v.json", view(aggregation_info=[item]))
    assert validate_paths([path]) == []
    assert CALLS == []
    load_views([path])  # what a run does: the class is built with its params
    assert CALLS == [("Scaled", {"factor": 3})]


def test_custom_params_the_class_does_not_take(tmp_path: Path, custom_module: str) -> None:
    item = agg("custom", combine_fn=f"{custom_module}:Scaled", scale=2)
    path = write(tmp_path, "v.json", view(aggregation_info=[item]))
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $.aggregation_info[0].params: aggregation 'custom': invalid params (got an "
        "unexpected keyword argument 'scale'); accepted: factor"
    ]
    assert CALLS == []


def test_custom_param_values_are_checked_by_the_class_when_loading_for_a_run(
    tmp_path: Path, custom_module: str
) -> None:
    # Only the class knows which values it accepts, and validate does not call it.
    item = agg("custom", combine_fn=f"{custom_module}:Scaled", factor="x")
    path = write(tmp_path, "v.json", view(aggregation_info=[item]))
    assert validate_paths([path]) == []
    assert CALLS == []
    with pytest.raises(ViewErrors) as info:
        load_views([path])
    assert [str(e) for e in info.value] == [
        f"{path}: $.aggregation_info[0].params: invalid params for custom: factor must be an "
        "integer, got 'x'"
    ]
    assert error(view(aggregation_info=[item])) == (
        "<memory>: $.aggregation_info[0].params: invalid params for custom: factor must be an "
        "integer, got 'x'"
    )


def test_a_custom_class_that_raises_anything_is_reported(custom_module: str) -> None:
    item = agg("custom", combine_fn=f"{custom_module}:Exploding")
    assert error(view(aggregation_info=[item])) == (
        "<memory>: $.aggregation_info[0].params: Exploding(**params) raised KeyError: 'x'"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "_Helper",
            "params.combine_fn: 'liveagg_example_fns:_Helper' is the private class _Helper of "
            "tests.test_loader, a part of an implementation, not an aggregation; expected a "
            "subclass of liveagg.combiners.LiveaggCombineFn",
        ),
        (
            "NoBytes",
            "params.combine_fn: 'liveagg_example_fns:NoBytes' is the class NoBytes, which does "
            "not implement encode_accumulator, decode_accumulator; an aggregation implements "
            "create_accumulator, add_input, merge_accumulators, extract_output, "
            "encode_accumulator and decode_accumulator (docs/custom_combiners.md)",
        ),
        (
            "poser",
            "params.combine_fn: 'liveagg_example_fns:poser' is a _PosesAsClass instance that "
            "poses as a class; expected a subclass of liveagg.combiners.LiveaggCombineFn",
        ),
        ("Exits", "params: Exits(**params) raised SystemExit: 3"),
        (
            "BadType",
            "params: aggregation 'custom': output_type() returned 'float'; expected one of "
            "bigint, boolean, double, json, list<bigint>, list<double>, list<text>, text",
        ),
    ],
)
def test_a_class_a_run_could_not_use_is_refused_before_it(
    custom_module: str, name: str, message: str
) -> None:
    """Each passed validation and failed the run partway (or, for ``Exits``, ended it with
    no word); the first three are refused without calling anything."""
    item = agg("custom", combine_fn=f"{custom_module}:{name}")
    assert error(view(aggregation_info=[item])) == f"<memory>: $.aggregation_info[0].{message}"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch, custom_module: str) -> str:
    """Names registered under the ``liveagg.combiners`` entry-point group."""
    points = {
        name: EntryPoint(name=name, value=value, group=combiner_registry.ENTRY_POINT_GROUP)
        for name, value in [
            ("scaled_sum", f"{custom_module}:Scaled"),
            ("not_a_class", f"{custom_module}:side_effect"),
            ("shell", "os:system"),
            ("gone", "no_such_pkg.fns:Fn"),
        ]
    }
    monkeypatch.setattr(combiner_registry, "_entry_point_factories", lambda: points)
    return "scaled_sum"


def test_registered_aggregation_decides_its_column_and_params(plugin: str) -> None:
    """Its class says whether it reads a column: ``Scaled`` sums one, so it needs it."""
    spec = parse_view(view(aggregation_info=[agg(plugin, factor=2)]))
    assert spec.aggregations[0] == Aggregation(plugin, "out", "x", {"factor": 2})
    assert "missing required key 'col_name': scaled_sum (Scaled)" in error(
        view(aggregation_info=[agg(plugin, col=None, factor=2)])
    )


def test_registered_aggregation_params_checked_by_its_factory(plugin: str) -> None:
    assert error(view(aggregation_info=[agg(plugin, factor=1.5)])) == (
        "<memory>: $.aggregation_info[0].params: invalid params for scaled_sum: factor must be "
        "an integer, got 1.5"
    )


def test_validate_does_not_call_a_registered_class(tmp_path: Path, plugin: str) -> None:
    path = write(tmp_path, "v.json", view(aggregation_info=[agg(plugin, factor=1.5)]))
    assert validate_paths([path]) == []
    assert CALLS == []
    path = write(tmp_path, "v.json", view(aggregation_info=[agg(plugin, scale=1)]))
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $.aggregation_info[0].params: aggregation 'scaled_sum': invalid params (got "
        "an unexpected keyword argument 'scale'); accepted: factor"
    ]
    assert CALLS == []


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("not_a_class", "= 'liveagg_example_fns:side_effect' (liveagg.combiners) is a function"),
        ("shell", "= 'os:system' (liveagg.combiners) is a function"),
    ],
)
def test_registered_names_must_be_aggregation_classes(
    tmp_path: Path, plugin: str, name: str, what: str
) -> None:
    marker = tmp_path / "PWNED"
    path = write(tmp_path, "v.json", view(aggregation_info=[agg(name, command=f"touch {marker}")]))
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $.aggregation_info[0].aggregation: aggregation {name!r} registered by the "
        f"entry point {name} {what}, not a class; {ACCEPTED}"
    ]
    assert CALLS == []
    assert not marker.exists()


def test_registered_name_that_does_not_load(plugin: str) -> None:
    assert error(view(aggregation_info=[agg("gone")])) == (
        "<memory>: $.aggregation_info[0].aggregation: aggregation 'gone' registered by the "
        "entry point gone = 'no_such_pkg.fns:Fn' (liveagg.combiners) does not load "
        "(ModuleNotFoundError: No module named 'no_such_pkg')"
    )


def test_validate_runs_no_command_from_the_command_line(tmp_path: Path) -> None:
    """The reported attack, end to end: `liveagg validate` on a view naming os:system."""
    marker = tmp_path / "PWNED"
    item = agg("custom", combine_fn="os:system", command=f"echo PWNED > {marker}")
    path = write(tmp_path, "v.json", view(aggregation_info=[item]))
    result = liveagg("validate", str(path), ok=False)
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout.splitlines() == [
        f"{path}: $.aggregation_info[0].params.combine_fn: 'os:system' names 'os', a module of "
        f"Python's standard library, which holds no aggregation; {IN_A_PACKAGE}"
    ]
    assert not marker.exists()


# --------------------------------------------------------------------------- files and folders


def test_examples_load() -> None:
    specs = {s.name: s for s in load_views([EXAMPLES])}
    assert sorted(specs) == [
        "ad_daily_spend",
        "ad_impressions",
        "cdn_access",
        "network_telemetry",
        "post_engagement",
    ]
    cdn = specs["cdn_access"]
    assert cdn.window.multi_granularity
    assert [d.text for d in cdn.window.sizes] == ["1m", "1h", "1d"]
    assert cdn.grouping_sets == (("host", "country"), ("host", "cache"), ("host",), ())
    ads = specs["ad_impressions"]
    assert ads.window.type == "sliding"
    assert [d.name for d in ads.derived] == ["impressions", "ctr", "cost_per_click"]
    assert specs["network_telemetry"].early == Duration("30s", 30_000_000)
    posts = specs["post_engagement"]
    assert posts.event_time == EventTime("timestamp_ms", "epoch_ms")
    assert posts.window.type == "global" and posts.state_ttl == Duration("90d", 90 * 86_400_000_000)
    assert posts.eager == Eager("events", 10)
    assert posts.milestones == (Milestone("events", (10, 100, 1000, 10000, 100000, 1000000)),)
    daily = specs["ad_daily_spend"].window
    assert (daily.type, daily.sizes[0].text, daily.step) == (
        "cumulative",
        "1d",
        Duration("1h", 3_600_000_000),
    )
    assert cdn.origin == str(EXAMPLES / "cdn_access_logs.json")


def test_validate_paths_of_valid_views_is_empty() -> None:
    assert validate_paths([EXAMPLES]) == []


def test_a_single_path_is_not_iterated_character_by_character() -> None:
    assert len(load_views(str(EXAMPLES))) == 5
    assert len(load_views(EXAMPLES)) == 5


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    assert [str(e) for e in validate_paths([missing])] == [f"{missing}: $: no such file or folder"]


def test_folder_without_views(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "views live here")
    assert [str(e) for e in validate_paths([tmp_path])] == [
        f"{tmp_path}: $: no view files (*.json) in this folder or below"
    ]


def test_folders_are_searched_recursively_skipping_hidden_ones(tmp_path: Path) -> None:
    write(tmp_path, "a.json", view(name="a"))
    write(tmp_path, "team/b.json", view(name="b"))
    write(tmp_path, ".vscode/settings.json", {"editor.tabSize": 2})
    write(tmp_path, "team/.draft.json", "{")
    write(tmp_path, "notes.txt", "not a view")
    specs = load_views([tmp_path])
    assert [(s.name, s.origin) for s in specs] == [
        ("a", str(tmp_path / "a.json")),
        ("b", str(tmp_path / "team" / "b.json")),
    ]


def test_the_same_file_given_twice_is_read_once(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", view(name="a"))
    assert [s.name for s in load_views([tmp_path, path])] == ["a"]


def test_a_file_of_several_views(tmp_path: Path) -> None:
    path = write(tmp_path, "all.json", {"views": [view(name="a"), view(name="b")]})
    assert [s.name for s in load_views([path])] == ["a", "b"]


def test_errors_in_a_file_of_several_views_point_at_the_view(tmp_path: Path) -> None:
    bad = view(name="b", window={"size": "1 hour"})
    worse = view(name="c", aggregation_info=[agg("sum", "campaign")])
    path = write(tmp_path, "all.json", {"views": [view(name="a"), bad, worse], "note": 1})
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $.views[1].window.size: '1 hour' is not a duration; expected an integer and a "
        "unit (ms, s, m, h, d), e.g. '500ms', '90s', '10m', '1d' (did you mean '1h'?)",
        f"{path}: $.views[2].aggregation_info[0].aggregated_col_name: 'campaign' is also a "
        "grouping column, and output rows carry both; choose another name, e.g. 'campaign_sum'",
        f"{path}: $.note: unknown key 'note'; allowed here: views",
    ]


def test_a_file_of_no_views(tmp_path: Path) -> None:
    path = write(tmp_path, "all.json", {"views": []})
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $.views: must not be empty: no views"
    ]


def test_view_names_unique_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.json", view(name="clicks"))
    second = write(tmp_path, "b.json", view(name="clicks"))
    assert [str(e) for e in validate_paths([tmp_path])] == [
        f"{second}: $.name: view name 'clicks' is already used at {first} ($.name); view names "
        "must be unique, as they name sink tables, topics and folders"
    ]


def test_load_views_raises_every_error_of_every_file(tmp_path: Path) -> None:
    write(tmp_path, "a.json", view(name="a", window={"size": "soon"}))
    write(tmp_path, "b.json", "{")
    write(tmp_path, "c.json", view(name="c"))
    with pytest.raises(ViewErrors) as info:
        load_views([tmp_path])
    assert [(Path(e.file).name, e.path) for e in info.value.errors] == [
        ("a.json", "$.window.size"),
        ("b.json", "$"),
    ]


def test_validate_paths_never_raises_for_bad_views(tmp_path: Path) -> None:
    write(tmp_path, "a.json", "[1, 2")
    write(tmp_path, "b.json", "null")
    write(tmp_path, "c.json", '"a view"')
    write(tmp_path, "d.json", {"views": "all of them"})
    found = [str(e) for e in validate_paths([tmp_path])]
    assert found == [
        f"{tmp_path / 'a.json'}: $: invalid JSON at line 1, column 6: Expecting ',' delimiter",
        f"{tmp_path / 'b.json'}: $: expected an object, got null",
        f"{tmp_path / 'c.json'}: $: expected an object, got the string 'a view'",
        f"{tmp_path / 'd.json'}: $.views: expected an array, got the string 'all of them'",
    ]


LONE = " ('\\ud800')"  # the surrogate, as an error names it


def test_error_lines_escape_line_breaks_and_lone_surrogates(tmp_path: Path) -> None:
    # "\\ud800" is valid JSON for a lone surrogate, which UTF-8 output cannot encode.
    text = json.dumps(view(**{"\ud800": 1, "a\u2028b": 2, "x": "\ud800\n"}))
    path = write(tmp_path, "a\nb.json", text)
    found = [str(e) for e in validate_paths([path])]
    shown = str(path).replace("\n", "\\n")
    surrogate = (
        "is not Unicode text: it holds a lone UTF-16 surrogate{}; write the character itself, "
        "or an escaped pair such as \\ud83d\\ude00"
    )
    assert found == [
        f"{shown}: $['\\ud800']: key '\\ud800' {surrogate.format('')}",
        f"{shown}: $['\\ud800']: unknown key '\\ud800'; allowed here: {ALLOWED}",
        f"{shown}: $['a\\u2028b']: unknown key 'a\\u2028b'; allowed here: {ALLOWED}",
        f"{shown}: $.x: '\\ud800\\n' {surrogate.format(LONE)}",
        f"{shown}: $.x: unknown key 'x'; allowed here: {ALLOWED}",
    ]
    for line in found:
        line.encode("utf-8")
        assert line.splitlines() == [line]


def test_json_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", '{\n  "name": "a"\n  "window": {}\n}')
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $: invalid JSON at line 3, column 3: Expecting ',' delimiter"
    ]


def test_a_raw_control_character_is_named(tmp_path: Path) -> None:
    """Python's own message stops at "Invalid control character at"."""
    path = write(tmp_path, "a.json", '{"name": "a\x00b"}')
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $: invalid JSON at line 1, column 12: Invalid control character at U+0000 in "
        "a string (JSON strings hold control characters only escaped, such as \\n, \\t or "
        "\\u0000)"
    ]


def test_single_quotes_get_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", "{'name': 'a'}")
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $: invalid JSON at line 1, column 2: Expecting property name enclosed in "
        "double quotes (JSON strings and keys use double quotes)"
    ]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_refused(tmp_path: Path, constant: str) -> None:
    path = write(tmp_path, "a.json", '{"name": "a", "x": ' + constant + "}")
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $: invalid JSON: {constant} is not a JSON number; write a number or null"
    ]


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "a.json", view())

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $: cannot read the file: Permission denied"
    ]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(view()).encode())
    assert [s.name for s in load_views([path])] == ["clicks"]


def test_whitespace_only_file_is_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", "\n  \n")
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $: the file is empty; expected a view object "
        '{"name": ...} or {"views": [...]}'
    ]


def test_duplicate_keys_are_reported_where_they_are(tmp_path: Path) -> None:
    text = json.dumps(view())[:-1] + ', "aggregation_info": [], "name": "x"}'
    text = text.replace('"field": "timestamp_ms"', '"field": "ts", "field": "timestamp_ms"')
    path = write(tmp_path, "a.json", text)
    message = (
        "appears more than once in this object; JSON keeps only the last value, so remove or "
        "rename the others"
    )
    assert [str(e) for e in validate_paths([path])] == [
        f"{path}: $.name: key 'name' {message}",
        f"{path}: $.event_time.field: key 'field' {message}",
        f"{path}: $.aggregation_info: key 'aggregation_info' {message}",
        f"{path}: $.aggregation_info: must not be empty: a view needs at least one aggregation",
    ]


def test_a_lone_surrogate_is_refused_where_it_is(tmp_path: Path) -> None:
    """``"\\ud800"`` decodes to a string no encoder takes: the run failed with a traceback
    from Arrow or Beam. A pair of escapes is one character and is fine."""
    text = json.dumps(view(grouping_cols=["k"], description="\U0001f600"))  # an escaped pair
    text = text.replace('"k"', '"k\\ud800"').replace('"timestamp_ms"', '"t", "x\\udc00": 1')
    path = write(tmp_path, "a.json", text)
    found = [str(e) for e in validate_paths([path])]
    surrogate = (
        "is not Unicode text: it holds a lone UTF-16 surrogate{}; write the character itself, "
        "or an escaped pair such as \\ud83d\\ude00"
    )
    assert found == [
        f"{path}: $.event_time['x\\udc00']: key 'x\\udc00' {surrogate.format('')}",
        f"{path}: $.event_time['x\\udc00']: unknown key 'x\\udc00'; allowed here: field, format",
        f"{path}: $.grouping_cols[0]: 'k\\ud800' {surrogate.format(LONE)}",
    ]
    assert "\\ud83d" in text  # the description's pair
    assert not any("$.description" in e for e in found)


def test_errors_are_in_document_order(tmp_path: Path) -> None:
    bad = view(
        window={"size": "1 hour"},
        name="Bad Name",
        aggregation_info=[agg("sum", "a", params_typo=1)],
    )
    bad["aggregation_info"][0]["params"] = {"x": 1}
    path = write(tmp_path, "a.json", bad)
    assert [e.path for e in validate_paths([path])] == [
        "$.name",
        "$.window.size",
        "$.aggregation_info[0].params.x",
    ]


def test_semantic_checks_wait_for_a_schema_valid_view() -> None:
    # The unknown aggregation is not reported until the shape is fixed: semantic checks rely
    # on the shape, and a second run will report it.
    found = errors(view(window={"size": "soon"}, aggregation_info=[agg("median_ish")]))
    assert [line.split(": ")[1] for line in found] == ["$.window.size"]


# --------------------------------------------------------------------------- the bad views folder


def _expected_lines() -> dict[str, str]:
    lines = (BAD_VIEWS / "expected.txt").read_text(encoding="utf-8").splitlines()
    return {line.split(": ", 1)[0]: line for line in lines}


def test_every_bad_view_has_an_expected_line() -> None:
    files = sorted(p.name for p in BAD_VIEWS.glob("*.json"))
    assert files == sorted(_expected_lines())


@pytest.mark.parametrize("name", sorted(_expected_lines()))
def test_bad_view(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD_VIEWS)
    assert [str(e) for e in validate_paths([name])] == [_expected_lines()[name]]


def test_bad_views_folder_prints_the_expected_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD_VIEWS)
    expected = (BAD_VIEWS / "expected.txt").read_text(encoding="utf-8").splitlines()
    assert [str(e) for e in validate_paths(["."])] == expected
    with pytest.raises(ViewErrors) as info:
        load_views(["."])
    assert str(info.value).splitlines() == expected
    # custom_os_system.json asks os.system to run "echo PWNED > f" here.
    assert not (BAD_VIEWS / "f").exists()


# --------------------------------------------------------------------------- running counters

GLOBAL = {"window": {"type": "global"}, "emit": {"early": "10s"}, "state_ttl": "30d"}


def test_a_global_view_is_one_window_per_key() -> None:
    spec = parse_view(view(**GLOBAL))
    assert spec.window == Window("global")
    assert spec.window.is_global
    assert spec.state_ttl == Duration("30d", 30 * 86_400_000_000)
    assert spec.early == Duration("10s", 10_000_000)


def test_a_global_window_needs_early_results_and_a_ttl() -> None:
    assert errors(view(window={"type": "global"})) == [
        '<memory>: $: a global window never closes, so it has no on-time result: give "emit": '
        '{"early": "10s"}, how often its running value is written',
        '<memory>: $: a global window keeps each key for all time: give "state_ttl", how long '
        'a key without messages is kept (event time), e.g. "state_ttl": "30d"',
    ]


def test_a_global_window_takes_neither_size_nor_lateness() -> None:
    assert error(view(**GLOBAL | {"window": {"type": "global", "size": "1d"}})) == (
        "<memory>: $.window.size: unknown key 'size'; allowed here: type ('size' belongs to "
        '"type": "fixed" or "sliding" or "cumulative")'
    )
    assert error(view(**GLOBAL, allowed_lateness="1m")) == (
        "<memory>: $.allowed_lateness: a global window never closes, so no message is late; "
        "remove allowed_lateness"
    )
    assert parse_view(view(**GLOBAL, allowed_lateness="0s")).allowed_lateness.micros == 0


def test_state_ttl_is_for_global_windows() -> None:
    assert error(view(state_ttl="1d")) == (
        "<memory>: $.state_ttl: a fixed window's state is dropped when the window expires (its "
        "end plus allowed_lateness); state_ttl applies to global windows only"
    )
    assert error(view(**GLOBAL | {"state_ttl": "0s"})) == (
        "<memory>: $.state_ttl: state_ttl must be longer than 0, got '0s'"
    )


def test_cumulative_windows() -> None:
    spec = parse_view(view(window={"type": "cumulative", "size": "1d", "step": "1h"}))
    assert spec.window.type == "cumulative"
    assert spec.window.sizes == (Duration("1d", 86_400_000_000),)
    assert spec.window.step == Duration("1h", 3_600_000_000)
    many = parse_view(view(window={"type": "cumulative", "size": ["1h", "1d"], "step": "1h"}))
    assert many.window.multi_granularity


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (
            {"type": "cumulative", "size": "1d", "step": "7h"},
            "$.window.size: size '1d' is not a whole multiple of step '7h'; a cumulative window "
            "grows by whole steps until it is the size (e.g. size '1d' with step '1h')",
        ),
        (
            {"type": "cumulative", "size": "1h", "step": "2h"},
            "$.window.size: size '1h' is not a whole multiple of step '2h'; a cumulative window "
            "grows by whole steps until it is the size (e.g. size '1d' with step '1h')",
        ),
        (
            {"type": "cumulative", "size": ["1h", "1d"], "step": "1m"},
            "$.window.step: sizes '1h', '1d' every step '1m' put each message in 60 + 1,440 = "
            "1,500 windows; at most 1,000 are accepted",
        ),
        (
            {"type": "cumulative", "size": "1d"},
            "$.window: missing required key 'step': how often a cumulative window grows, e.g. "
            '"step": "1h"',
        ),
        (
            {"type": "cumulative", "size": "1d", "step": "0s"},
            "$.window.step: a cumulative step must be longer than 0, got '0s'",
        ),
    ],
)
def test_cumulative_window_errors(window: dict[str, Any], message: str) -> None:
    assert error(view(window=window)) == f"<memory>: {message}"


def test_eager_and_milestones() -> None:
    spec = parse_view(
        view(
            **GLOBAL
            | {
                "emit": {"early": "10s", "eager": {"column": "events", "below": 10}},
                "milestones": [
                    {"column": "events", "at": [10, 100.0, 1e3]},
                    {"column": "spend", "at": [0.5]},
                ],
            }
        )
    )
    assert spec.eager == Eager("events", 10)
    # Thresholds take the canonical form of numbers, as values do: 100.0 is 100.
    assert spec.milestones == (Milestone("events", (10, 100, 1000)), Milestone("spend", (0.5,)))
    assert [type(t) for t in spec.milestones[0].at] == [int, int, int]
    # Any numbers, ascending: a running profit has negative thresholds.
    signed = parse_view(view(milestones=[{"column": "spend", "at": [-1000, -0.5, 0, 1000]}]))
    assert signed.milestones == (Milestone("spend", (-1000, -0.5, 0, 1000)),)
    eager_only = parse_view(view(emit={"eager": {"column": "events", "below": 3}}))
    assert eager_only.early is None and eager_only.eager == Eager("events", 3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"milestones": [{"column": "events", "at": [10, 10]}]},
            "$.milestones[0].at[1]: thresholds must increase: 10 follows 10",
        ),
        (
            {"milestones": [{"column": "events", "at": []}]},
            "$.milestones[0].at: must not be empty",
        ),
        (
            {"milestones": [{"column": "campaign", "at": [1]}]},
            "$.milestones[0].column: unknown aggregated column 'campaign'; aggregated columns: "
            "events, spend",
        ),
        (
            {"milestones": [{"column": "event", "at": [1]}]},
            "$.milestones[0].column: unknown aggregated column 'event' (did you mean "
            "'events'?); aggregated columns: events, spend",
        ),
        (
            {
                "milestones": [{"column": "events", "at": [1]}, {"column": "events", "at": [2]}],
            },
            "$.milestones[1].column: 'events' already has milestones at $.milestones[0]; list "
            "all of its thresholds there",
        ),
        (
            {
                "aggregation_info": [
                    {"aggregation": "collect_set", "col_name": "x", "aggregated_col_name": "xs"}
                ],
                "milestones": [{"column": "xs", "at": [1]}],
            },
            "$.milestones[0].column: 'xs' is a collect_set aggregation, whose values are not "
            "numbers; a milestone watches one of count, count_distinct, count_distinct_exact, "
            "sum, mean, min, max, variance, stddev",
        ),
        (
            {
                "derived": [{"name": "cpc", "expr": "spend / events"}],
                "emit": {"eager": {"column": "cpc", "below": 1}},
            },
            "$.emit.eager.column: 'cpc' is a derived column; emit.eager watches an aggregated "
            "column; aggregated columns: events, spend",
        ),
        ({"emit": {}}, "$.emit: must not be empty; give early or eager"),
        (
            {"emit": {"eager": {"column": "events"}}},
            "$.emit.eager: missing required key 'below': the value from which emit.early "
            'applies again, e.g. "below": 10',
        ),
    ],
)
def test_eager_and_milestone_errors(changes: dict[str, Any], message: str) -> None:
    assert error(view(**changes)) == f"<memory>: {message}"


def test_counters_do_not_roll_up() -> None:
    rollup = {"rollup": {"window": {"size": "1d"}}}
    assert error(view(**GLOBAL, **rollup)) == (
        '<memory>: $.rollup: a roll-up needs a fixed window of one size ("window": {"size": '
        '"1m"}); sliding, session, cumulative, global and multi-granularity windows do not roll '
        "up"
    )


@pytest.mark.parametrize("source", ["events/PreAggregate", "a=b", "", "my events", ".hidden"])
def test_a_source_is_a_name_that_a_binding_and_a_step_name_can_hold(source: str) -> None:
    """``/`` would name another source's Beam step (``Aggregate/events/PreAggregate``), ``=``
    could never be bound by ``--input SOURCE=GLOB``."""
    assert error(view(source=source)) == (
        f"<memory>: $.source: {source!r} is not a source name; expected a letter, digit or '_', "
        "then up to 248 letters, digits, '.', '_' or '-', e.g. 'events' or 'page-views'"
    )


@pytest.mark.parametrize("source", ["events", "page-views", "clicks.v2", "_raw", "2024"])
def test_source_names_users_give_topics(source: str) -> None:
    assert parse_view(view(source=source)).source == source
