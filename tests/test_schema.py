"""The view JSON Schema: well-formed, in step with the spec types and the combiner registry."""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from liveagg import combiners, spec
from liveagg.combiners import registry
from liveagg.loader import load_views, parse_view
from liveagg.spec import Duration
from liveagg.view_schemas import SCHEMA_PATH, examples, schema

EXAMPLES = Path(SCHEMA_PATH).parent / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def _defs() -> dict[str, Any]:
    return schema()["$defs"]


def _aggregation_rules() -> Iterator[tuple[list[str], dict[str, Any]]]:
    """``(names, then)`` for each ``if aggregation in names`` rule of the schema."""
    for rule in _defs()["aggregation"]["allOf"]:
        condition = rule["if"]["properties"]["aggregation"]
        names = [condition["const"]] if "const" in condition else condition["enum"]
        yield names, rule["then"]


def _params_schema(kind: str) -> dict[str, Any] | None:
    for names, then in _aggregation_rules():
        if kind in names and "params" in then.get("properties", {}):
            ref = then["properties"]["params"]["$ref"]
            return _defs()[ref.rsplit("/", 1)[1]]
    return None


def _minimal(**changes: Any) -> dict[str, Any]:
    view = {
        "name": "v",
        "event_time": {"field": "ts"},
        "grouping_cols": [],
        "window": {"size": "1m"},
        "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "n"}],
    }
    view.update(changes)
    return view


# --------------------------------------------------------------------------- the file


def test_schema_is_valid_draft_2020_12() -> None:
    document = schema()
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(document)


def test_schema_path_is_the_packaged_file() -> None:
    assert SCHEMA_PATH.name == "view.schema.json"
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == schema()


def test_schema_returns_a_copy_so_callers_cannot_change_it() -> None:
    first = schema()
    first["$defs"].clear()
    assert schema()["$defs"]


def test_every_object_a_user_writes_refuses_unknown_keys() -> None:
    # ``params_custom`` passes its extra keys to the user's class; ``sink`` and ``filter`` only
    # dispatch (on ``type``, on ``all``/``any``) to closed schemas.
    open_on_purpose = {"params_custom", "sink", "filter"}
    for name, definition in _defs().items():
        if definition.get("type") == "object" and name not in open_on_purpose:
            assert definition.get("additionalProperties") is False, name


# --------------------------------------------------------------------------- in step with spec.py


def _enum(definition: dict[str, Any]) -> list[str]:
    return definition["enum"]


def test_event_time_formats_match_the_spec_type() -> None:
    formats = _enum(_defs()["event_time"]["properties"]["format"])
    assert formats == list(typing.get_args(spec.EventTimeFormat))


def test_filter_ops_match_the_spec_type() -> None:
    ops = _enum(_defs()["predicate"]["properties"]["op"])
    assert ops == list(typing.get_args(spec.FilterOp))


def test_window_types_match_the_spec_type() -> None:
    branches = [_defs()[ref["$ref"].rsplit("/", 1)[1]] for ref in _defs()["window"]["oneOf"]]
    types = [b["properties"]["type"]["const"] for b in branches]
    assert types == list(typing.get_args(spec.WindowType))


@pytest.mark.parametrize(
    "text", ["0s", "1ms", "15s", "10m", "36h", "7d", "1", "1.5h", "1 h", "h", "1w", "1S", "-1s"]
)
def test_duration_pattern_agrees_with_the_spec_parser(text: str) -> None:
    in_schema = re.search(_defs()["duration"]["pattern"], text) is not None
    assert in_schema == (spec._DURATION.fullmatch(text) is not None)


def test_combine_fn_pattern_is_the_registry_one() -> None:
    # The registry checks references itself (load_dotted is also called outside views).
    pattern = _defs()["params_custom"]["properties"]["combine_fn"]["pattern"]
    assert pattern == "^" + registry._DOTTED.pattern + "$"


def test_name_pattern_is_the_documented_one() -> None:
    view = _defs()["view"]["properties"]
    assert view["name"]["pattern"] == "^[a-z][a-z0-9_]{0,62}$"
    assert _defs()["column"]["pattern"] == "^[a-z][a-z0-9_]{0,62}$"


# --------------------------------------------------------------------------- durations, per unit


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("500ms", 500_000),
        ("90s", 90_000_000),
        ("10m", 600_000_000),
        ("2h", 7_200_000_000),
        ("1d", 86_400_000_000),
    ],
    ids=["ms", "s", "m", "h", "d"],
)
def test_duration_unit(text: str, micros: int, validator: Draft202012Validator) -> None:
    assert Duration.parse(text) == Duration(text, micros)
    assert validator.is_valid(_minimal(allowed_lateness=text))
    loaded = parse_view(_minimal(allowed_lateness=text, window={"size": text}))
    assert loaded.allowed_lateness.micros == micros
    assert loaded.window.sizes == (Duration(text, micros),)


def test_one_day_is_twenty_four_hours() -> None:
    assert Duration.parse("1d").micros == Duration.parse("24h").micros


@pytest.mark.parametrize(
    "text",
    ["10", "m", "1.5h", "-1s", "1w", "10 m", "1H", "1min", " 1s", "1s ", "", "1e3s"],
)
def test_malformed_durations_are_refused_by_schema_and_parser(
    text: str, validator: Draft202012Validator
) -> None:
    assert not validator.is_valid(_minimal(allowed_lateness=text))
    with pytest.raises(ValueError, match="invalid duration"):
        Duration.parse(text)


# --------------------------------------------------------------------------- aggregations


def test_every_registered_builtin_is_described_by_the_schema() -> None:
    described = {name for names, _ in _aggregation_rules() for name in names}
    assert set(combiners.builtin_names()) <= described
    assert described - set(combiners.builtin_names()) == {"custom"}


def test_builtins_that_need_a_column_are_all_but_count() -> None:
    needs_column = next(
        names for names, then in _aggregation_rules() if then.get("required") == ["col_name"]
    )
    assert sorted(needs_column) == sorted(set(combiners.builtin_names()) - {"count"})


@pytest.mark.parametrize("kind", combiners.builtin_names())
def test_schema_params_are_accepted_by_the_combiner(kind: str) -> None:
    params = _params_schema(kind)
    assert params is not None, f"no params schema for {kind}"
    factory_params = inspect.signature(_factory(kind)).parameters
    for name in params.get("properties", {}):
        assert name in factory_params, f"{kind}: schema has params.{name}, the factory has not"


@pytest.mark.parametrize("kind", combiners.builtin_names())
def test_schema_defaults_build_a_combiner(kind: str) -> None:
    properties = _params_schema(kind).get("properties", {})  # type: ignore[union-attr]
    defaults = {k: v["default"] for k, v in properties.items() if "default" in v}
    required = _params_schema(kind).get("required", [])  # type: ignore[union-attr]
    if "bounds" in required:
        defaults["bounds"] = [0, 10, 100]
    combiners.create(kind, defaults)


def _factory(kind: str) -> Any:
    from liveagg.combiners import registry

    registry._load_builtins()
    return registry._BUILTINS[kind]


@pytest.mark.parametrize(
    ("kind", "params", "valid"),
    [
        ("variance", {"ddof": 0}, True),
        ("stddev", {"ddof": -1}, False),
        ("count_distinct", {"lg_k": 4, "hll_type": "HLL_4"}, True),
        ("hll_sketch", {"lg_k": 21, "hll_type": "HLL_6"}, True),
        ("count_distinct", {"lg_k": 3}, False),
        ("hll_sketch", {"lg_k": 22}, False),
        ("count_distinct", {"hll_type": "HLL_5"}, False),
        ("approx_quantiles", {"quantiles": [0, 0.5, 1], "k": 8}, True),
        ("approx_quantiles", {"quantiles": []}, False),
        ("approx_quantiles", {"quantiles": [1.5]}, False),
        ("approx_quantiles", {"k": 65536}, False),
        ("top_k", {"k": 1}, True),
        ("top_k", {"k": 0}, False),
        ("histogram", {"bounds": [1.5]}, True),
        ("histogram", {"bounds": []}, False),
        ("histogram", {"bounds": ["a"]}, False),
        ("collect_set", {"max_size": 1}, True),
        ("collect_set", {"max_size": 0}, False),
        ("sum", {}, True),
        ("sum", {"k": 1}, False),
        ("custom", {"combine_fn": "pkg.mod:Fn", "scale": 2}, True),
        ("custom", {"combine_fn": "pkg.mod.Fn"}, False),
        ("custom", {}, False),
    ],
)
def test_params_per_aggregation(
    kind: str, params: dict[str, Any], valid: bool, validator: Draft202012Validator
) -> None:
    item = {"aggregation": kind, "col_name": "x", "aggregated_col_name": "out", "params": params}
    assert validator.is_valid(_minimal(aggregation_info=[item])) is valid


def test_count_needs_no_column_and_other_builtins_do(validator: Draft202012Validator) -> None:
    count = {"aggregation": "count", "aggregated_col_name": "n"}
    total = {"aggregation": "sum", "aggregated_col_name": "n"}
    registered = {"aggregation": "my_plugin_agg", "aggregated_col_name": "n"}
    assert validator.is_valid(_minimal(aggregation_info=[count]))
    assert not validator.is_valid(_minimal(aggregation_info=[total]))
    assert validator.is_valid(_minimal(aggregation_info=[registered]))


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("window", "valid"),
    [
        ({"size": "1m"}, True),
        ({"type": "fixed", "size": ["1m", "1h", "1d"]}, True),
        ({"size": []}, False),
        ({"size": ["1m", "1m"]}, False),
        ({"type": "sliding", "size": "1h", "period": "5m"}, True),
        ({"type": "sliding", "size": ["1h", "1d"], "period": "5m"}, True),
        ({"type": "sliding", "size": "1h"}, False),
        ({"type": "session", "gap": "30m"}, True),
        ({"type": "session", "gap": "30m", "size": "1h"}, False),
        ({"type": "fixed", "size": "1m", "period": "1m"}, False),
        ({"type": "tumbling", "size": "1m"}, False),
        ("10m", False),
    ],
)
def test_window_shapes(window: Any, valid: bool, validator: Draft202012Validator) -> None:
    assert validator.is_valid(_minimal(window=window)) is valid


@pytest.mark.parametrize(
    ("filter_", "valid"),
    [
        ({"field": "a", "op": "eq", "value": 1}, True),
        ({"field": "a", "op": "eq", "value": None}, True),
        ({"field": "a", "op": "eq"}, False),
        ({"field": "a", "op": "exists"}, True),
        ({"field": "a", "op": "exists", "value": False}, True),
        ({"field": "a", "op": "exists", "value": "yes"}, False),
        ({"field": "a", "op": "in", "value": ["x", 1, True]}, True),
        ({"field": "a", "op": "not_in", "value": []}, False),
        ({"field": "a", "op": "in", "value": "x"}, False),
        ({"field": "a", "op": "gt", "value": 3}, True),
        ({"field": "a", "op": "le", "value": "2024-01-01"}, True),
        ({"field": "a", "op": "lt", "value": [1]}, False),
        ({"field": "a", "op": "like", "value": "x"}, False),
        (
            {"all": [{"field": "a", "op": "exists"}, {"any": [{"field": "b", "op": "exists"}]}]},
            True,
        ),
        ({"all": []}, False),
        ({"any": [{"field": "a", "op": "exists"}], "field": "a"}, False),
        ({"field": "", "op": "exists"}, False),
    ],
)
def test_filter_shapes(filter_: Any, valid: bool, validator: Draft202012Validator) -> None:
    assert validator.is_valid(_minimal(filter=filter_)) is valid


@pytest.mark.parametrize(
    ("sink", "valid"),
    [
        ({"type": "file", "path": "out/"}, True),
        ({"type": "file", "path": "out/", "format": "parquet"}, True),
        ({"type": "file", "path": "out/", "format": "json"}, False),
        ({"type": "file"}, False),
        ({"type": "s3", "path": "s3://bucket/views"}, True),
        ({"type": "s3", "path": "bucket/views"}, False),
        ({"type": "gcs", "path": "gs://bucket/views", "format": "csv"}, True),
        ({"type": "gcs", "path": "s3://bucket"}, False),
        ({"type": "cassandra", "keyspace": "metrics", "table": "clicks"}, True),
        ({"type": "cassandra", "keyspace": "metrics"}, False),
        ({"type": "cassandra", "keyspace": "metrics; DROP", "table": "t"}, False),
        ({"type": "kafka", "topic": "views.clicks-v1"}, True),
        ({"type": "kafka", "topic": "a topic"}, False),
        ({"type": "kafka", "topic": "t", "path": "x"}, False),
        ({"type": "redis"}, False),
    ],
)
def test_sink_shapes(sink: Any, valid: bool, validator: Draft202012Validator) -> None:
    assert validator.is_valid(_minimal(sinks=[sink])) is valid


@pytest.mark.parametrize(
    ("name", "valid"),
    [("a", True), ("a" * 63, True), ("a" * 64, False), ("ad_ctr_1h", True), ("1h", False),
     ("Ads", False), ("ad-ctr", False), ("_ads", False)],
)  # fmt: skip
def test_view_names(name: str, valid: bool, validator: Draft202012Validator) -> None:
    assert validator.is_valid(_minimal(name=name)) is valid


def test_a_file_may_hold_several_views(validator: Draft202012Validator) -> None:
    assert validator.is_valid({"views": [_minimal(name="a"), _minimal(name="b")]})
    assert not validator.is_valid({"views": []})
    assert not validator.is_valid({"views": [_minimal()], "name": "x"})


def test_schema_key_is_allowed_for_editors(validator: Draft202012Validator) -> None:
    assert validator.is_valid(_minimal(**{"$schema": "../view.schema.json"}))


def test_grouping_cols_may_be_empty_but_not_repeat(validator: Draft202012Validator) -> None:
    assert validator.is_valid(_minimal(grouping_cols=[]))
    assert not validator.is_valid(_minimal(grouping_cols=["a", "a"]))


# --------------------------------------------------------------------------- examples


def test_there_are_five_examples() -> None:
    assert [p.stem for p in EXAMPLE_FILES] == [
        "ad_daily_spend",
        "ad_impressions",
        "cdn_access_logs",
        "network_telemetry",
        "post_engagement",
    ]
    assert sorted(examples()) == [p.stem for p in EXAMPLE_FILES]


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_is_valid_against_the_schema(path: Path, validator: Draft202012Validator) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert list(validator.iter_errors(document)) == []


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_documents_the_message_fields_it_reads(path: Path) -> None:
    view = json.loads(path.read_text(encoding="utf-8"))
    description = view["description"]
    fields = {view["event_time"]["field"], *view["grouping_cols"]}
    fields |= {a["col_name"] for a in view["aggregation_info"] if "col_name" in a}
    fields |= set(_filter_fields(view.get("filter")))
    for field in fields:
        assert re.search(
            rf'\\"{re.escape(field)}\\"|"{re.escape(field)}"', json.dumps(description)
        ), f"{path.name}: the description does not mention the field {field!r}"


def _filter_fields(node: Any) -> Iterator[str]:
    if node is None:
        return
    for key in ("all", "any"):
        for child in node.get(key, []):
            yield from _filter_fields(child)
    if "field" in node:
        yield node["field"]


def test_examples_load_together() -> None:
    specs = load_views([EXAMPLES])
    assert sorted(s.name for s in specs) == [
        "ad_daily_spend",
        "ad_impressions",
        "cdn_access",
        "network_telemetry",
        "post_engagement",
    ]
