"""What each aggregation means, one rule at a time: input checks, params, value identity,
ties, empty groups, and that the registry, the JSON Schema and the docs agree."""

from __future__ import annotations

import inspect
import json
import math
import re
import statistics
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datasketches import frequent_items_error_type

import liveagg.combiners as lc
from liveagg.combiners import InputError, registry
from liveagg.engine.kernels import kernel

from .cases import CUSTOM_RANGE

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "view_schemas" / "view.schema.json"
DOCS = ROOT / "docs" / "aggregations.md"

NUMERIC = ["sum", "mean", "min", "max", "variance", "stddev", "approx_quantiles", "histogram"]
SCALAR = [
    "count_distinct",
    "hll_sketch",
    "count_distinct_exact",
    "collect_set",
    "top_k",
    "first",
    "last",
]


def make(kind: str, **params: Any) -> lc.LiveaggCombineFn:
    if kind == "histogram":
        params.setdefault("bounds", [0, 10])
    return lc.create(kind, params)


def run(fn: lc.LiveaggCombineFn, raw: list[Any]) -> Any:
    """Coerce and accumulate one by one, as the runtime does for single messages."""
    acc = fn.create_accumulator()
    for value in raw:
        if fn.needs_event_time:
            acc = fn.add_input(acc, (value[0], fn.coerce(value[1])))
        else:
            acc = fn.add_input(acc, fn.coerce(value))
    return fn.extract_output(acc)


# -------------------------------------------------------------------------------------------
# Input checks
# -------------------------------------------------------------------------------------------

REJECTED = (
    [(kind, value, "not_numeric") for kind in NUMERIC for value in (True, "1", [1], {"a": 1})]
    + [(kind, value, "not_finite") for kind in NUMERIC for value in (math.nan, -math.inf, 10**400)]
    + [(kind, value, "not_numeric") for kind in ("min", "max") for value in (False, "a", "")]
    + [(kind, math.inf, "not_finite") for kind in ("min", "max")]
    + [(kind, value, "not_scalar") for kind in SCALAR for value in ([1], {"a": 1}, [])]
    + [(kind, math.nan, "not_finite") for kind in SCALAR]
)


@pytest.mark.parametrize("kind, value, reason", REJECTED)
def test_coerce_rejects(kind: str, value: Any, reason: str) -> None:
    fn = make(kind)
    with pytest.raises(InputError, match=f"^{reason}: {kind} needs") as caught:
        fn.coerce(value)
    assert caught.value.reason == reason
    assert kind in caught.value.detail


@pytest.mark.parametrize("value", ["x", 3, 2.5, True, [1, 2], {"a": None}])
def test_count_accepts_any_non_null_value(value: Any) -> None:
    fn = make("count")
    assert fn.coerce(value) == value
    assert fn.counts_rows


@pytest.mark.parametrize("kind", [*SCALAR, "min", "max"])
@pytest.mark.parametrize(
    "raw, normal",
    [(2.0, 2), (-0.0, 0), (2.5, 2.5), (2**64 - 1, 2**64 - 1), (float(2**63), 2**63)],
)
def test_equal_numbers_get_one_form(kind: str, raw: Any, normal: Any) -> None:
    value = make(kind).coerce(raw)
    assert value == normal and type(value) is type(normal)


@pytest.mark.parametrize("kind", [*SCALAR, "min", "max"])
def test_numbers_beyond_64_bits_get_one_form(kind: str) -> None:
    fn = make(kind)
    assert fn.coerce(2**70) == fn.coerce(2.0**70)
    assert type(fn.coerce(2**70)) is type(fn.coerce(2.0**70))
    assert fn.coerce(2**70 + 1) == 2**70 + 1  # no double holds it: stays an exact int


def test_sum_takes_numbers_in_canonical_form() -> None:
    """An integral number is an integer however it is written; others stay floats."""
    fn = make("sum")
    assert type(fn.coerce(2.0)) is int and type(fn.coerce(2.5)) is float
    assert fn.extract_output(fn.add_inputs(fn.create_accumulator(), [fn.coerce(2.0), 3])) == 5
    assert type(fn.coerce(2.0**70)) is float  # beyond 64 bits a double stays a double


def test_flags() -> None:
    flagged = {name: make(name) for name in lc.builtin_names()}
    assert {n for n, fn in flagged.items() if fn.counts_rows} == {"count"}
    assert {n for n, fn in flagged.items() if fn.needs_event_time} == {"first", "last"}


# -------------------------------------------------------------------------------------------
# Results
# -------------------------------------------------------------------------------------------


def test_sum_of_ints_stays_an_exact_int() -> None:
    total = run(make("sum"), [2**70, 2**70, -1])
    assert total == 2**71 - 1 and type(total) is int


def test_one_float_makes_the_sum_a_float() -> None:
    total = run(make("sum"), [1, 2, 0.5])
    assert total == 3.5 and type(total) is float


def test_sum_compensates_float_rounding() -> None:
    assert run(make("sum"), [0.1] * 10) == math.fsum([0.1] * 10)
    assert run(make("sum"), [1e100, 1.0, -1e100]) == 1.0  # a plain float sum gives 0.0


def test_mean_is_exact_for_large_ints() -> None:
    values = [2**60 + 1, 2**60 + 3]
    assert run(make("mean"), values) == float(2**60 + 2)
    assert run(make("mean"), [1, 2]) == 1.5


def test_mean_of_ints_and_floats_is_the_sum_over_the_count() -> None:
    """SQL's AVG: SUM / COUNT, one division of the sum. With exact sums (1, -1 and 2.5) that
    is the correctly rounded mean; dividing the int and float parts apart and adding was off
    by a unit in the last place for 59 / 57, and in 53 of the 200 mixes below."""
    from fractions import Fraction

    fn = make("mean")
    kern = kernel(fn)
    for ones in range(20):
        for halves in range(1, 11):
            values = [1] * (ones + 40) + [-1] * ones + [2.5] * halves
            exact = float(Fraction(sum(Fraction(x) for x in values), len(values)))
            assert run(fn, values) == exact, values
            column = np.array(values, dtype=np.float64)
            state = kern.batch(column, np.zeros(len(values), dtype=np.int64), 1)
            assert kern.extract(state) == [exact], values


def test_variance_needs_more_values_than_ddof() -> None:
    assert run(make("variance"), [5]) is None
    assert run(make("stddev", ddof=2), [5, 6]) is None
    assert run(make("variance", ddof=0), [5]) == 0.0


def test_variance_is_stable_for_a_large_mean() -> None:
    values = [1e9 + d for d in (4, 7, 13, 16)]
    assert run(make("variance"), values) == pytest.approx(statistics.variance(values), rel=1e-12)
    assert run(make("stddev", ddof=0), values) == pytest.approx(
        statistics.pstdev(values), rel=1e-12
    )


def test_min_max_are_numbers_of_the_input_type() -> None:
    values = [3, 1.5, -2, 10]
    assert run(make("min"), values) == -2 and type(run(make("min"), values)) is int
    assert run(make("max"), [3, 1.5]) == 3 and type(run(make("max"), [3, 1.5])) is int
    assert run(make("max"), [3, 7.5]) == 7.5
    big = 2**100 + 1  # no double holds it: compared and returned exactly
    assert run(make("max"), [big, float(2**100), 5]) == big
    assert run(make("min"), [-big, -float(2**100)]) == -big


def test_min_max_of_equal_numbers_do_not_depend_on_arrival_order() -> None:
    for values in ([2, 2.0], [2.0, 2], [0, -0.0], [-0.0, 0]):
        for kind in ("min", "max"):
            result = run(make(kind), values)
            assert result == values[0] and type(result) is int, (kind, values, result)


def test_quantiles_of_both_zeros_do_not_depend_on_arrival_order() -> None:
    """The sketch keeps the zero it is fed first: ``-0.0`` is ``0.0``, as for ``min``."""
    from liveagg.engine.kernels import kernel

    fn = make("approx_quantiles", quantiles=[0.0, 0.5, 1.0])
    for values in ([-0.0, 0], [0, -0.0], [-0.0, -0.0]):
        result = run(fn, values)
        assert [math.copysign(1, q) for q in result] == [1, 1, 1], (values, result)
        vectorized = kernel(fn)
        state = vectorized.batch(np.array(values, dtype=np.float64), np.zeros(2, np.int64), 1)
        [out] = vectorized.extract(state)
        assert [math.copysign(1, q) for q in out] == [1, 1, 1], (values, out)


@pytest.mark.parametrize("kind", ["min", "max"])
def test_min_max_reject_strings(kind: str) -> None:
    """Numbers only, as SPEC section 1 says: a string is a dead letter, not a value."""
    fn = make(kind)
    with pytest.raises(InputError, match=rf"^not_numeric: {kind} needs a number, got string 'a'$"):
        fn.coerce("a")
    with pytest.raises(InputError, match=r"^not_numeric: .* got string '3'$"):
        fn.coerce("3")  # a numeric string is a string too


def test_dead_letter_details_show_values_as_json() -> None:
    """Not as Python writes them: ``True``, ``None`` and ``{'k': 1}`` are not JSON."""
    from liveagg.transforms import eventtime

    fn = make("sum")
    for value, text in ((True, "boolean true"), ({"k": [1, None]}, 'object {"k":[1,null]}')):
        with pytest.raises(InputError) as bad_value:
            fn.coerce(value)
        assert str(bad_value.value) == f"not_numeric: sum needs a number, got {text}"
    with pytest.raises(eventtime.EventTimeError) as bad:
        eventtime.parser("ts", "epoch_ms")(False)
    assert bad.value.detail.startswith("ts=false is a boolean")


def test_what_counts_as_one_distinct_value() -> None:
    # 1 and 1.0 and -0.0/0 are equal numbers; "1", true, "true" and "" are other values.
    values = [1, 1.0, "1", True, "true", "", -0.0, 0, False, "false"]
    assert run(make("count_distinct"), values) == 8
    assert run(make("count_distinct_exact"), values) == 8


def test_count_distinct_counts_the_empty_string() -> None:
    assert run(make("count_distinct"), [""]) == 1
    assert run(make("hll_sketch"), [""]) is not None


def test_unsigned_64_bit_ids_wrap_like_java_longs() -> None:
    """Documented HLL choice: 2**64 - 1 hashes as the signed long -1."""
    assert run(make("count_distinct"), [2**64 - 1, -1]) == 1
    assert run(make("count_distinct_exact"), [2**64 - 1, -1]) == 2


def test_top_k_keeps_json_types_and_orders_ties_by_value() -> None:
    result = run(make("top_k"), ["1", 1, 1.0, True, "1", 2.5])
    assert result == [[1, 2], ["1", 2], [2.5, 1], [True, 1]]
    assert [type(value) for value, _ in result] == [int, str, float, bool]
    big = 2**100 + 1
    assert run(make("top_k", k=1), [big, big, 3]) == [[big, 2]]


def test_top_k_of_a_large_map_is_its_k_best_by_count_then_value() -> None:
    """Many items, counts tied at the k-th place: the k items by count then value, as a
    sort of every item in the map gives them."""
    fn = make("top_k", k=5)
    values = [f"v{i:03d}" for i in range(400) for _ in range(1 + i % 4)] + [7, 7, 7, 7]
    acc = fn.add_inputs(fn.create_accumulator(), values)
    every = sorted(
        (
            (json.loads(text), n)
            for text, n, _, _ in acc.get_frequent_items(
                frequent_items_error_type.NO_FALSE_NEGATIVES, 0
            )
        ),
        key=lambda row: (-row[1], (0, row[0]) if type(row[0]) is int else (1, row[0])),
    )
    assert fn.extract_output(acc) == [list(row) for row in every[:5]]
    assert fn.extract_output(acc)[:2] == [[7, 4], ["v003", 4]]


def test_top_k_exact_up_to_documented_size() -> None:
    assert make("top_k").exact_up_to == 768
    assert make("top_k", k=1000).exact_up_to >= 3000
    assert make("top_k", lg_max_map_size=6).exact_up_to == 48


def test_collect_set_sorts_numbers_strings_booleans_and_keeps_the_smallest() -> None:
    values = [True, "b", 3, "a", 1.5, False, 3.0, "a"]
    assert run(make("collect_set"), values) == [1.5, 3, "a", "b", False, True]
    assert run(make("collect_set", max_size=2), values) == [1.5, 3]


def test_collect_set_stays_bounded() -> None:
    fn = make("collect_set", max_size=10)
    acc = fn.add_inputs(fn.create_accumulator(), list(range(1000)))
    for value in range(1000, 2000):
        acc = fn.add_input(acc, value)
    assert len(acc) <= 20
    assert fn.extract_output(acc) == list(range(10))


def test_histogram_buckets_are_closed_below() -> None:
    fn = make("histogram", bounds=[0, 10, 100])
    values = [-1, 0, 9.99, 10, 99, 100, 1e9]
    # (-inf,0): -1 | [0,10): 0, 9.99 | [10,100): 10, 99 | [100,inf): 100, 1e9
    assert run(fn, values) == [1, 2, 2, 2]
    batch = values * 20  # long enough for the vectorized path
    assert fn.extract_output(fn.add_inputs(fn.create_accumulator(), batch)) == [20, 40, 40, 40]


def test_first_and_last_break_time_ties_by_value() -> None:
    pairs = [(5, "b"), (7, "z"), (5, "a"), (5, 1), (9, "a"), (9, True)]
    assert run(make("first"), pairs) == 1  # time 5: numbers order first
    assert run(make("last"), pairs) is True  # time 9: booleans order last
    assert run(make("first"), [(3, "x"), (1, "y"), (2, "z")]) == "y"
    assert run(make("last"), [(3, "x"), (1, "y"), (2, "z")]) == "x"


def test_quantile_ranks_zero_and_one_are_the_extremes() -> None:
    values = list(range(10_000))
    fn = make("approx_quantiles", quantiles=[0, 0.5, 1], k=8)
    low, _, high = fn.extract_output(fn.add_inputs(fn.create_accumulator(), values))
    assert (low, high) == (0.0, 9999.0)


# -------------------------------------------------------------------------------------------
# Params
# -------------------------------------------------------------------------------------------

BAD_PARAMS = [
    ("count", {"x": 1}, r"invalid params .*'x'.*accepted: none"),
    ("count_distinct", {"lgk": 12}, r"accepted: lg_k, hll_type"),
    ("count_distinct", {"lg_k": 3}, r"lg_k must be an integer from 4 to 21, got 3"),
    ("hll_sketch", {"lg_k": 22}, r"lg_k must be an integer from 4 to 21"),
    ("count_distinct", {"lg_k": "12"}, r"lg_k must be an integer"),
    ("count_distinct", {"hll_type": "HLL_5"}, r"one of HLL_4, HLL_6, HLL_8, got 'HLL_5'"),
    ("approx_quantiles", {"quantiles": []}, r"quantiles must be a non-empty list"),
    ("approx_quantiles", {"quantiles": [0.5, 1.5]}, r"numbers from 0 to 1"),
    ("approx_quantiles", {"quantiles": [True]}, r"numbers from 0 to 1"),
    ("approx_quantiles", {"quantiles": "0.5"}, r"non-empty list"),
    ("approx_quantiles", {"k": 7}, r"k must be an integer from 8 to 65535"),
    ("top_k", {"k": 0}, r"k must be an integer from 1 to 100000"),
    ("top_k", {"lg_max_map_size": 2}, r"lg_max_map_size must be an integer from 3 to 26"),
    ("collect_set", {"max_size": 0}, r"max_size must be an integer from 1"),
    ("histogram", {}, r"bounds is required"),
    ("histogram", {"bounds": []}, r"list of 1 to 10000 finite numbers"),
    ("histogram", {"bounds": [0, math.nan]}, r"finite numbers"),
    ("histogram", {"bounds": [True]}, r"finite numbers"),
    ("histogram", {"bounds": [0, 10, 10]}, r"strictly increasing, got 10 then 10"),
    ("variance", {"ddof": -1}, r"ddof must be an integer of at least 0, got -1"),
    ("stddev", {"ddof": 1.5}, r"ddof must be an integer"),
    ("median_ish", {}, r"unknown aggregation 'median_ish'; known: .*approx_quantiles"),
    ("custom", {}, r"needs params.combine_fn 'package.module:ClassName'"),
    ("custom", {"combine_fn": "no_colon"}, r"not a combine_fn reference; expected 'package"),
    ("custom", {"combine_fn": "examples.custom_combiners:Nope"}, r"has no attribute 'Nope'"),
    ("custom", {"combine_fn": "no_such_module_xyz:Fn"}, r"cannot import module"),
    ("custom", {"combine_fn": "collections:OrderedDict"}, r"Python's standard library"),
    ("custom", {"combine_fn": "examples:custom_combiners"}, r"a module, not a class"),
    ("custom", {"combine_fn": CUSTOM_RANGE, "scal": 2}, r"accepted: scale"),
    ("custom", {"combine_fn": CUSTOM_RANGE, "scale": "2"}, r"scale must be a finite number"),
]


@pytest.mark.parametrize("kind, params, message", BAD_PARAMS)
def test_bad_params_say_what_is_accepted(kind: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lc.create(kind, params)


def test_display_data_shows_params() -> None:
    assert make("count_distinct", lg_k=14).display_data() == {"lg_k": 14, "hll_type": "HLL_8"}
    assert make("top_k", k=3).display_data() == {"k": 3, "lg_max_map_size": 10}


# -------------------------------------------------------------------------------------------
# Accumulator bytes
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sum", "min", "count_distinct", "top_k", "histogram"])
def test_foreign_bytes_are_refused(kind: str) -> None:
    fn = make(kind)
    with pytest.raises(ValueError, match=rf"cannot decode a {kind} accumulator: header 0x7f"):
        fn.decode_accumulator(b"\x7f{}")


def test_accumulators_with_huge_ints_round_trip() -> None:
    fn = make("collect_set")
    huge = [2**100 + 1, -(2**90) - 1]  # no double holds them: they stay exact ints
    acc = fn.add_inputs(fn.create_accumulator(), [fn.coerce(v) for v in [*huge, 1]])
    data = fn.encode_accumulator(acc)
    assert data[0] == 0x02  # the JSON form that keeps big ints exact
    assert fn.extract_output(fn.decode_accumulator(data)) == [-(2**90) - 1, 1, 2**100 + 1]


@pytest.mark.parametrize("kind", ["min", "max"])
def test_min_max_accumulator_is_one_number(kind: str) -> None:
    fn = make(kind)
    assert fn.encode_accumulator(fn.create_accumulator()) == b"\x01null"
    assert fn.encode_accumulator(fn.add_input(fn.create_accumulator(), 7)) == b"\x017"
    huge = fn.add_inputs(fn.create_accumulator(), [2**100 + 1])
    data = fn.encode_accumulator(huge)
    assert data[0] == 0x02  # the JSON form that keeps big ints exact
    assert fn.decode_accumulator(data) == 2**100 + 1
    for other in (b'\x01[1,"a"]', b'\x01"a"', b"\x01true"):
        with pytest.raises(ValueError, match=rf"cannot decode a {kind} accumulator: expected"):
            fn.decode_accumulator(other)


def test_histogram_refuses_an_accumulator_for_other_bounds() -> None:
    data = make("histogram", bounds=[0, 10]).encode_accumulator([1, 2, 3])
    with pytest.raises(ValueError, match="were the bounds changed"):
        make("histogram", bounds=[0, 10, 100]).decode_accumulator(data)


# -------------------------------------------------------------------------------------------
# Registry, entry points, JSON Schema, docs
# -------------------------------------------------------------------------------------------


def test_custom_by_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user's ``[project.entry-points."liveagg.combiners"]`` table provides."""
    point = EntryPoint(name="range", value=CUSTOM_RANGE, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_point_factories", lambda: {"range": point})
    assert "range" in lc.known()
    fn = lc.create("range", {"scale": 0.5})
    assert run(fn, [3, 10, 7]) == 3.5


def _aggregation_names_in_schema(schema: dict[str, Any]) -> set[str]:
    """Every name an ``aggregation`` property of the schema enumerates (enum or const),
    following local ``$ref``s."""

    def resolve(ref: str) -> Any:
        node: Any = schema
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def names_in(node: Any) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
                found |= names_in(resolve(node["$ref"]))
            found |= {v for v in node.get("enum", []) if isinstance(v, str)}
            if isinstance(node.get("const"), str):
                found.add(node["const"])
            for key in ("anyOf", "oneOf", "allOf"):
                for sub in node.get(key, []):
                    found |= names_in(sub)
        return found

    names: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and "aggregation" in props:
                names |= names_in(props["aggregation"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


def _load_schema() -> dict[str, Any]:
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA.relative_to(ROOT)} does not exist yet")
    return json.loads(SCHEMA.read_text())


def test_every_builtin_is_named_in_the_json_schema() -> None:
    names = _aggregation_names_in_schema(_load_schema())
    missing = set(lc.builtin_names()) - names
    assert not missing, f"{SCHEMA.name} does not name these aggregations: {sorted(missing)}"


def test_schema_params_match_the_combiners() -> None:
    """The params a view may give an aggregation are the ones its factory accepts."""
    schema = _load_schema()
    checked = 0
    for rule in schema.get("$defs", {}).get("aggregation", {}).get("allOf", []):
        names = _aggregation_names_in_schema({"properties": rule.get("if", {}).get("properties")})
        params = rule.get("then", {}).get("properties", {}).get("params")
        if not params or "$ref" not in params:
            continue
        target = params["$ref"].removeprefix("#/$defs/")
        allowed = set(schema["$defs"][target].get("properties", {}))
        for name in names & set(lc.builtin_names()):
            factory = registry._BUILTINS[name]
            accepted = set(inspect.signature(factory).parameters)
            assert accepted == allowed, f"{name}: schema allows {allowed}, fn takes {accepted}"
            checked += 1
    if not checked:
        pytest.skip("the schema has no per-aggregation params rules in the expected shape")


def test_docs_describe_every_builtin_and_its_output_type() -> None:
    text = DOCS.read_text()
    rows = {}
    for line in text.splitlines():
        cells = line.split(" | ")
        if line.startswith("| `") and len(cells) > 3:
            for name in cells[0].removeprefix("| ").split(", "):
                rows[name.strip("`")] = cells[3]  # the "output type" column
    for name in lc.builtin_names():
        assert name in rows, f"docs/aggregations.md has no table row for {name}"
        output_type = make(name).output_type()
        assert rows[name] == f"`{output_type}`", f"{name}: docs say {rows[name]}, not {output_type}"


def test_custom_combiners_doc_code_runs() -> None:
    """The class shown in docs/custom_combiners.md is the example module's, and the testing
    snippet there passes against it."""
    text = (ROOT / "docs" / "custom_combiners.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    shown: dict[str, Any] = {}
    exec(compile(blocks[0], "docs/custom_combiners.md", "exec"), shown)
    documented = shown["RangeFn"](scale=2.0)
    example = lc.create("custom", {"combine_fn": CUSTOM_RANGE, "scale": 2.0})
    values = [3, 10, 7.5, -1]
    assert run(documented, values) == run(example, values) == 22.0
    acc = example.add_inputs(example.create_accumulator(), values)
    assert documented.encode_accumulator(acc) == example.encode_accumulator(acc)
    snippet = blocks[-1].replace("my_package.combiners:RangeFn", CUSTOM_RANGE)
    exec(compile(snippet, "docs/custom_combiners.md", "exec"), {})
