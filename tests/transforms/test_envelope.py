"""Level-1 envelopes: what level 2 merges, what it refuses, and how roll-ups re-key."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from liveagg.loader import parse_view, validate_paths
from liveagg.spec import Duration
from liveagg.transforms import envelope
from liveagg.transforms.plan import Reject, ViewPlan, encode_key

MINUTE = 60_000_000
VIEW = {
    "name": "traffic",
    "event_time": {"field": "ts", "format": "epoch_s"},
    "grouping_cols": ["org", "site"],
    "window": {"size": "1m"},
    "rollup": {"grouping_cols": ["org"], "window": {"size": "10m"}},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "n"},
        {"aggregation": "count_distinct", "col_name": "user", "aggregated_col_name": "users"},
    ],
}


def _envelope(spec: Any, start: int, group: tuple, users: list[str], **changes: Any) -> bytes:
    plan = ViewPlan(spec)
    acc = plan.combine.create_accumulator()
    for user in users:
        acc = plan.combine.add_input(acc, (1, user))
    partial = (
        spec.name,
        0,
        start,
        start + MINUTE,
        encode_key(group),
        "t/0",
        0,
        plan.combine.encode(acc),
        {"t/0": [0, 9]},
    )
    return orjson.dumps(envelope.envelope(plan, spec.fingerprint(), partial) | changes)


def _views(spec: Any) -> dict[str, envelope.Level2]:
    return {spec.name: envelope.Level2(spec)}


def test_a_partial_rolls_up_to_its_final_key_and_window() -> None:
    spec = parse_view(VIEW)
    start = 1_709_251_200_000_000 + 7 * MINUTE  # the 8th minute of a 10-minute window
    name, partial = envelope.decode(
        _envelope(spec, start, ("acme", "fra1"), ["a", "b"]), _views(spec)
    )
    view, variant, w_start, w_end, key, shard, pane, data, offsets = partial
    assert view == name
    assert (name, variant, key) == ("traffic", 0, encode_key(("acme",)))
    assert (w_start, w_end) == (start - 7 * MINUTE, start + 3 * MINUTE)
    # Each level-1 key and window is its own stream of panes under the final key.
    assert shard.startswith("t/0|") and '"fra1"' in shard
    assert (pane, offsets) == (0, {"t/0": [0, 9]})
    final = ViewPlan(spec.final())
    assert final.combine.extract_output(final.combine.decode(data)) == (2, 2)


def test_the_kafka_key_is_the_final_key_and_window() -> None:
    spec = parse_view(VIEW)
    start = 1_709_251_200_000_000
    keys = {
        envelope.EnvelopeKey([spec])(
            orjson.loads(_envelope(spec, start + m * MINUTE, ("acme", s), ["a"]))
        )
        for m in range(10)
        for s in ("fra1", "sfo1")
    }
    assert keys == {b'traffic|%d|["acme"]' % start}


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b"{", "not_envelope", "not JSON"),
        (b'{"view": "traffic"}', "not_envelope", "--intermediate-topic"),
        ({"version": 2}, "incompatible_envelope", "version 2"),
        ({"view": "other"}, "incompatible_envelope", "--views does not define"),
        ({"definition": "0" * 16}, "incompatible_envelope", "another definition"),
        ({"granularity": "1h"}, "incompatible_envelope", "no granularity '1h'"),
        ({"window_start_us": 5}, "bad_envelope", "do not fit the view"),
        ({"key": ["acme"]}, "bad_envelope", "do not fit the view"),
        ({"accumulator": "bm90IGFuIGFjYw=="}, "bad_envelope", "unreadable accumulator"),
        ({"accumulator": "***"}, "bad_envelope", "unreadable accumulator"),
    ],
)
def test_what_level_2_refuses(payload: Any, reason: str, detail: str) -> None:
    spec = parse_view(VIEW)
    if isinstance(payload, dict):
        payload = _envelope(spec, 1_709_251_200_000_000, ("acme", "fra1"), ["a"], **payload)
    with pytest.raises(Reject) as caught:
        envelope.decode(payload, _views(spec))
    assert caught.value.reason == reason
    assert detail in caught.value.detail


def test_the_fingerprint_follows_what_accumulators_hold() -> None:
    spec = parse_view(VIEW)
    same = [
        replace(spec, description="x"),
        replace(spec, allowed_lateness=Duration.parse("5m")),
        replace(spec, sinks=()),
    ]
    assert {s.fingerprint() for s in same} == {spec.fingerprint()}
    changed = [
        parse_view(VIEW | {"window": {"size": "2m"}}),
        parse_view(VIEW | {"grouping_cols": ["org", "site", "x"]}),
        parse_view(VIEW | {"rollup": {"grouping_cols": ["site"]}}),
        parse_view(VIEW | {"filter": {"field": "k", "op": "eq", "value": 1}}),
        parse_view(
            VIEW
            | {
                "aggregation_info": [
                    {"aggregation": "count", "aggregated_col_name": "n"},
                    {
                        "aggregation": "count_distinct",
                        "col_name": "user",
                        "aggregated_col_name": "users",
                        "params": {"lg_k": 14},
                    },
                ]
            }
        ),
    ]
    assert len({s.fingerprint() for s in [spec, *changed]}) == 1 + len(changed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"rollup": {"grouping_cols": ["country"]}},
            "$.rollup.grouping_cols[0]: 'country' is not in grouping_cols",
        ),
        (
            {"rollup": {"window": {"size": "90s"}}},
            "$.rollup.window.size: '90s' is not a whole multiple",
        ),
        (
            {"rollup": {"window": {"size": "30s"}}},
            "$.rollup.window.size: '30s' is not a whole multiple",
        ),
        (
            {"window": {"type": "sliding", "size": "2m", "period": "1m"}},
            "$.rollup: a roll-up needs a fixed window",
        ),
        ({"window": {"size": ["1m", "1h"]}}, "$.rollup: a roll-up needs a fixed window"),
        ({"grouping_sets": [["org"]]}, "$.rollup: a view with grouping_sets cannot also roll up"),
        ({"rollup": {}}, "$.rollup"),
    ],
)
def test_rollup_errors_name_the_field(tmp_path: Any, change: dict, message: str) -> None:
    path = tmp_path / "v.json"
    path.write_text(orjson.dumps(VIEW | change).decode())
    errors = [str(e) for e in validate_paths([path])]
    assert any(e.startswith(f"{path}: {message}") for e in errors), errors


def test_rollup_defaults_and_final_view() -> None:
    spec = parse_view(VIEW | {"rollup": {"window": {"size": "1h"}}})
    final = spec.final()
    assert final.grouping_cols == ("org", "site")
    assert [s.text for s in final.window.sizes] == ["1h"]
    assert final.rollup is None and final.name == spec.name
    assert (
        parse_view({k: v for k, v in VIEW.items() if k != "rollup"}).final().window.sizes[0].text
        == "1m"
    )
