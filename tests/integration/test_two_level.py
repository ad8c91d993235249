"""Two-level aggregation on real Kafka: ``liveagg run --intermediate-topic`` then ``rekey``.

Generated messages go round-robin to a Kafka topic. Level 1 reads it and writes partial
aggregates to an intermediate topic; level 2 merges them into rows. For every view (every
aggregation, HLL, quantiles, top-k, a custom CombineFn, a roll-up to fewer columns and a
longer window) the two-level rows equal the one-level rows from the same lines and the DuckDB
oracle. Envelopes of another view definition are dead letters; envelopes delivered twice are
merged once.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.services import KafkaConnection
from liveagg.loader import load_views
from liveagg.spec import ViewSpec
from tests.pipelines.test_e2e import EXTRA_VIEWS
from tests.support.cli import liveagg, rows_in
from tests.support.compare import assert_milestones_match, assert_rows_match, row_key
from tests.support.datagen import generate
from tests.support.oracle import expected_milestones, expected_rows

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient  # noqa: E402

from tests.support.kafka_topics import create_topics, end_offsets, read_to  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "view_schemas" / "examples"
PARTITIONS = 4
CUSTOM = "examples.custom_combiners:RangeFn"

#: Level 1 per org, site and protocol and minute; rows per org and ten minutes.
ROLLUP = {
    "name": "org_rollup",
    "event_time": {"field": "ts"},
    "grouping_cols": ["org", "site", "protocol"],
    "window": {"size": "1m"},
    "rollup": {"grouping_cols": ["org"], "window": {"size": "10m"}},
    "filter": {"field": "kind", "op": "eq", "value": "network"},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "flows"},
        {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes"},
        {"aggregation": "min", "col_name": "rtt_ms", "aggregated_col_name": "rtt_min"},
        {"aggregation": "max", "col_name": "rtt_ms", "aggregated_col_name": "rtt_max"},
        {"aggregation": "mean", "col_name": "rtt_ms", "aggregated_col_name": "rtt_mean"},
        {"aggregation": "stddev", "col_name": "rtt_ms", "aggregated_col_name": "rtt_sd"},
        {"aggregation": "count_distinct", "col_name": "client_ip", "aggregated_col_name": "ips"},
        {
            "aggregation": "approx_quantiles",
            "col_name": "rtt_ms",
            "aggregated_col_name": "rtt_q",
            "params": {"quantiles": [0.5, 0.99]},
        },
        {"aggregation": "top_k", "col_name": "site", "aggregated_col_name": "sites"},
        {"aggregation": "first", "col_name": "protocol", "aggregated_col_name": "first_proto"},
        {
            "aggregation": "custom",
            "col_name": "rtt_ms",
            "aggregated_col_name": "rtt_range",
            "params": {"combine_fn": CUSTOM},
        },
    ],
}

#: A cumulative day per campaign, hour by hour, with thresholds the generated spend reaches
#: (the example's 10, 100 and 1,000 are beyond three hours of it): level 2 must give the
#: windows of one day one milestone per threshold, as one level does.
CAMPAIGN_DAY = {
    "name": "campaign_day",
    "event_time": {"field": "timestamp_ms", "format": "epoch_ms"},
    "grouping_cols": ["campaign"],
    "window": {"type": "cumulative", "size": "1d", "step": "1h"},
    "milestones": [{"column": "spend", "at": [1, 2, 5]}, {"column": "clicks", "at": [3]}],
    "filter": {"field": "kind", "op": "eq", "value": "ads"},
    "aggregation_info": [
        {"aggregation": "count", "col_name": "cost", "aggregated_col_name": "clicks"},
        {"aggregation": "sum", "col_name": "cost", "aggregated_col_name": "spend"},
    ],
}

#: Columns whose value does not depend on the order partials are merged in.
_ORDER_FREE = {"count", "count_distinct_exact", "sum", "min", "max", "histogram", "collect_set"}


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _cli(*args: str) -> str:
    return liveagg(*args).stdout


def _create(kafka: KafkaConnection, *topics: str) -> None:
    create_topics(kafka.client_config(), topics, PARTITIONS)


def _produce(kafka: KafkaConnection, topic: str, values: Sequence[bytes]) -> None:
    producer = ck.Producer(kafka.client_config())
    for i, value in enumerate(values):
        producer.produce(topic, value=value, partition=i % PARTITIONS)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def _consume(kafka: KafkaConnection, topic: str) -> list[bytes]:
    """Every message of ``topic`` (it is not being written to)."""
    config = kafka.client_config()
    return [m.value() for m in read_to(config, topic, end_offsets(config, topic))]


def _without_custom(view: ViewSpec, rows: list[dict[str, Any]]) -> tuple[ViewSpec, list[dict]]:
    """The view and rows without custom columns, which the oracle does not compute."""
    custom = {a.output for a in view.aggregations if a.kind == "custom"}
    kept = tuple(a for a in view.aggregations if a.kind != "custom")
    return replace(view, aggregations=kept), [
        {k: v for k, v in r.items() if k not in custom} for r in rows
    ]


def _assert_same_rows(two: list[dict], one: list[dict], view: ViewSpec) -> None:
    """Two-level rows equal one-level rows: same keys, order-free columns equal."""
    by_key = {row_key(r, view): r for r in one}
    assert sorted(map(str, by_key)) == sorted(str(row_key(r, view)) for r in two)
    for row in two:
        other = by_key[row_key(row, view)]
        for agg in view.aggregations:
            a, b = row[agg.output], other[agg.output]
            if agg.kind in _ORDER_FREE or agg.kind == "custom":
                assert a == b or (isinstance(a, float) and math.isclose(a, b, rel_tol=1e-9)), (
                    f"{view.name}.{agg.output}: two levels {a!r}, one level {b!r}"
                )
            elif agg.kind in ("mean", "variance", "stddev"):
                assert a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, kafka: KafkaConnection) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("two_level")
    events = folder / "events.jsonl"
    generate(events, 6_000, seed=17, keys=200, span_s=3 * 3600)
    views_dir = folder / "views"
    views_dir.mkdir()
    for view in [*EXTRA_VIEWS[:2], ROLLUP, CAMPAIGN_DAY]:  # every aggregation, sliding, roll-up
        (views_dir / f"{view['name']}.json").write_text(json.dumps(view))
    paths = [*map(str, sorted(EXAMPLES.glob("*.json"))), str(views_dir)]
    topic = _name("liveagg-two-level-in-")
    _create(kafka, topic)
    _produce(kafka, topic, events.read_bytes().splitlines())
    one = folder / "one_level"
    _cli("run", "--views", *paths, "--input", str(events), "--output", str(one))
    yield {
        "folder": folder,
        "events": events,
        "paths": paths,
        "views": load_views(paths),
        "topic": topic,
        "one": one,
        "bootstrap": kafka.bootstrap_servers,
    }
    AdminClient(kafka.client_config()).delete_topics([topic])


def _level1(data: dict, inter: str, *extra: str, paths: Sequence[str] | None = None) -> str:
    return _cli(
        "run",
        "--views",
        *(paths or data["paths"]),
        "--kafka-topic",
        data["topic"],
        "--kafka-bootstrap",
        data["bootstrap"],
        "--kafka-start",
        "earliest",
        "--kafka-group-id",
        _name("level1-"),
        "--intermediate-topic",
        inter,
        *(extra if "--output" in extra else (*extra, "--dead-letter-topic", f"{inter}.dead")),
    )


def _level2(data: dict, inter: str, out: Path, *extra: str, paths: Sequence[str] = ()) -> str:
    return _cli(
        "rekey",
        "--views",
        *(paths or data["paths"]),
        "--intermediate-topic",
        inter,
        "--kafka-bootstrap",
        data["bootstrap"],
        "--kafka-start",
        "earliest",
        "--kafka-group-id",
        _name("level2-"),
        "--output",
        str(out),
        *extra,
    )


def _check(data: dict, out: Path, views: Sequence[ViewSpec]) -> None:
    for declared in views:
        view = declared.final()
        two = rows_in(out / view.name)
        assert two, f"{view.name}: no rows"
        _assert_same_rows(two, rows_in(data["one"] / view.name), view)
        plain, rows = _without_custom(view, two)
        expected = expected_rows(plain, data["events"])
        assert_rows_match(rows, expected, plain)
        # One level on the same lines meets the same oracle, approximate columns included.
        assert_rows_match(
            _without_custom(view, rows_in(data["one"] / view.name))[1], expected, plain
        )
        for agg in view.aggregations:
            if agg.kind == "custom":  # RangeFn: max - min, checked against the oracle's
                for row in two:
                    if row["rtt_max"] is None:  # a group without a value: None, as max's
                        assert row[agg.output] is None, row
                    else:
                        assert row[agg.output] == pytest.approx(row["rtt_max"] - row["rtt_min"])


def test_two_levels_equal_one_level_and_the_oracle(data: dict, kafka: KafkaConnection) -> None:
    inter = _name("liveagg-partials-")
    _create(kafka, inter)
    level1 = data["folder"] / "level1"
    summary = _level1(data, inter, "--output", str(level1))
    assert "partials -> topic" in summary
    # Level 1's bad lines are dead letters there, as in a one-level run.
    assert len(rows_in(level1 / "_dead_letter")) == len(rows_in(data["one"] / "_dead_letter"))
    envelopes = [orjson.loads(v) for v in _consume(kafka, inter)]
    assert {e["view"] for e in envelopes} == {v.name for v in data["views"]}
    assert all(e["offsets"] for e in envelopes)  # which source offsets each partial covers
    out = data["folder"] / "level2"
    _level2(data, inter, out)
    assert not rows_in(out / "_dead_letter")
    _check(data, out, data["views"])
    # Milestones fire at level 2 only: those of the oracle's rows, the same as one level's.
    assert not (level1 / "_milestones").exists()
    counters = [v for v in data["views"] if v.milestones]
    assert {v.name for v in counters} == {"post_engagement", "ad_daily_spend", "campaign_day"}
    fired = {run: rows_in(run / "_milestones") for run in (out, data["one"])}
    for view in counters:
        expected = expected_milestones(view, expected_rows(view, data["events"]))
        if view.name != "ad_daily_spend":  # three hours of spend reach none of its thresholds
            assert len(expected) >= 10, view.name
        for events in fired.values():
            assert_milestones_match([e for e in events if e["view"] == view.name], expected)


def test_streaming_level1_shards_by_partition_and_rekey_merges_panes(
    data: dict, kafka: KafkaConnection
) -> None:
    paths = [str(data["folder"] / "views" / "org_rollup.json")]
    inter = _name("liveagg-partials-")
    _create(kafka, inter)
    _level1(data, inter, "--streaming", paths=paths)
    envelopes = [orjson.loads(v) for v in _consume(kafka, inter)]
    shards = {e["shard"] for e in envelopes}
    assert shards == {f"{data['topic']}/{p}" for p in range(PARTITIONS)}
    assert all(list(e["offsets"]) == [e["shard"]] for e in envelopes)
    out = data["folder"] / "streaming_level2"
    _level2(data, inter, out, "--streaming", paths=paths)
    _check(data, out, load_views(paths))


def test_incompatible_envelopes_are_dead_letters_and_duplicates_merge_once(
    data: dict, kafka: KafkaConnection
) -> None:
    folder = data["folder"]
    paths = [str(folder / "views" / "org_rollup.json")]
    changed = dict(ROLLUP, aggregation_info=ROLLUP["aggregation_info"][:3])
    changed_path = folder / "changed" / "org_rollup.json"
    changed_path.parent.mkdir()
    changed_path.write_text(json.dumps(changed))
    inter = _name("liveagg-partials-")
    _create(kafka, inter)
    _level1(data, inter, paths=paths)
    valid = _consume(kafka, inter)
    _produce(kafka, inter, valid)  # every envelope delivered a second time
    _level1(data, inter, paths=[str(changed_path)])  # the view's definition changed since
    _produce(kafka, inter, [b'{"not": "an envelope"}'])
    incompatible = len(_consume(kafka, inter)) - 2 * len(valid) - 1
    assert incompatible > 0
    out = folder / "mixed_level2"
    summary = _level2(data, inter, out, paths=paths)
    dead = rows_in(out / "_dead_letter")
    reasons = [d["reason"] for d in dead]
    assert reasons.count("incompatible_envelope") == incompatible
    assert reasons.count("not_envelope") == 1
    assert len(reasons) == incompatible + 1
    assert f"incompatible_envelope: {incompatible}" in summary
    detail = next(d["detail"] for d in dead if d["reason"] == "incompatible_envelope")
    assert "another definition" in detail and "org_rollup" in detail
    _check(data, out, load_views(paths))
