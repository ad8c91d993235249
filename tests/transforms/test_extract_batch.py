"""The batch path reads every message exactly as the per-message path does.

:meth:`ViewPlan.extract_batch` must agree with :meth:`ViewPlan.extract` on every message of
realistic input with bad lines, nulls and odd values: same rows, same groups, and the same
dead-letter reason and detail for the same message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from liveagg.loader import load_views, parse_view
from liveagg.transforms.plan import Reject, ViewPlan, decode_line, encode_key
from tests.pipelines.test_e2e import DOTTED_VIEW, EXAMPLES, EXTRA_VIEWS
from tests.support.datagen import generate

ODD = [
    {"kind": "cdn", "ts": "2024-03-01T00:00:00Z", "timestamp_ms": 1709251200000, "country": 1.0},
    {"kind": "cdn", "timestamp_ms": 1709251200000, "country": True, "bytes": 3},
    {"kind": "cdn", "timestamp_ms": 1709251200000, "country": None, "bytes": 2.5},
    {"kind": "cdn", "timestamp_ms": 1709251200000, "country": {"a": 1}, "bytes": "x"},
    {"kind": "cdn", "timestamp_ms": "soon", "country": "DE", "bytes": "x"},
    {"kind": "cdn", "timestamp_ms": 1709251200000, "country": ["DE"], "bytes": 1},
    {"kind": "cdn", "timestamp_ms": 1709251200000, "country": "DE", "latency_ms": 2.0},
    {"kind": "network", "ts": "2024-03-01T00:00:00+01:00", "org": 7, "bytes": 18446744073709551615},
    {"kind": "network", "ts": "2024-03-01", "org": -0.0, "client_ip": 1.5, "bytes": True},
]


def _plans() -> list[ViewPlan]:
    specs = load_views([str(p) for p in sorted(EXAMPLES.glob("*.json"))])
    specs += [parse_view(v, origin=f"{v['name']}.json") for v in [*EXTRA_VIEWS, DOTTED_VIEW]]
    specs.append(
        parse_view(
            {
                "name": "sets",
                "event_time": {"field": "timestamp_ms", "format": "epoch_ms"},
                "grouping_cols": ["country", "cache"],
                "grouping_sets": [["country"], ["country", "cache"], []],
                "window": {"size": ["1m", "1h"]},
                "aggregation_info": [
                    {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "b"}
                ],
            },
            origin="sets.json",
        )
    )
    return [ViewPlan(s) for s in specs]


def _per_message(plan: ViewPlan, msgs: list[dict]) -> tuple[list, list]:
    accepted, rejected = [], []
    for i, msg in enumerate(msgs):
        try:
            extracted = plan.extract(msg)
        except Reject as r:
            rejected.append((i, r.reason, r.detail))
            continue
        if extracted is not None:
            ts, row, group = extracted
            accepted.append((ts, row, [key for _, key in plan.keys(group)]))
    return accepted, rejected


def _batch(plan: ViewPlan, msgs: list[dict], times: dict) -> tuple[list, list]:
    column, rows, groups, rejects = plan.extract_batch(msgs, times)
    accepted = []
    for ts, row, group in zip(column, rows, groups, strict=True):
        if type(group) is tuple:  # raw values: encode per variant as the flush does
            group = [encode_key(tuple(group[i] for i in v.positions)) for v in plan.variants]
        accepted.append((ts, row, group))
    return accepted, [(i, r.reason, r.detail) for i, r in rejects]


@pytest.fixture(scope="module")
def messages(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    path: Path = tmp_path_factory.mktemp("batch") / "events.jsonl"
    generate(path, 20_000, seed=11, keys=300, bad_fraction=0.05, null_fraction=0.05)
    msgs = []
    for line in path.read_bytes().splitlines():
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(msg, dict):
            msgs.append(msg)
    return msgs + ODD


def test_batch_and_per_message_agree(messages: list[dict[str, Any]]) -> None:
    times: dict = {}  # shared across views, as the bounded path shares it
    reasons = set()
    for plan in _plans():
        expected = _per_message(plan, messages)
        assert _batch(plan, messages, times) == expected, plan.name
        reasons.update(reason for _, reason, _ in expected[1])
    # The input really exercised the per-message fallback.
    assert {"invalid_event_time", "not_numeric", "not_scalar"} <= reasons


#: Lines whose integers orjson would read as floats, and times at the edges of years 1-9999.
_CDN = b'{"kind": "cdn", "timestamp_ms": 1709251200000, "country": "DE", '
EXACT_LINES = [
    b'{"kind": "cdn", "timestamp_ms": 1709251200000, "country": 18446744073709551616}',
    _CDN + b'"cache": 1180591620717411303425}',
    _CDN + b'"path": 1180591620717411303424}',
    _CDN + b'"bytes": %d}' % (int(1.7976931348623157e308) + 1),  # rounds to the largest double
    _CDN + b'"bytes": 123456789012345678901}',
    _CDN + b'"latency_ms": -99999999999999999999}',
    b'{"kind": "network", "ts": "9999-12-31T23:59:59Z", "org": "acme", "bytes": 1}',
    b'{"kind": "network", "ts": "0001-01-01T00:00:00Z", "org": "acme", "bytes": 1}',
    b'{"kind": "cdn", "timestamp_ms": 253402300799999, "country": "DE"}',
]


def test_batch_and_per_message_agree_on_long_integers_and_edge_times(
    messages: list[dict[str, Any]],
) -> None:
    """Integers beyond 64 bits (which no coerce fast path looks at) take the per-message path."""
    decoded = [decode_line(line) for line in EXACT_LINES]
    assert [was_exact for _, was_exact in decoded] == [True] * 6 + [False] * 3
    msgs = messages[:500] + [msg for msg, _ in decoded]
    exact = [500 + i for i, (_, was_exact) in enumerate(decoded) if was_exact]
    reasons = set()
    for plan in _plans():
        expected = _per_message(plan, msgs)
        column, rows, groups, rejects = plan.extract_batch(msgs, {}, exact=exact)
        got = []
        for ts, row, group in zip(column, rows, groups, strict=True):
            if type(group) is tuple:
                group = [encode_key(tuple(group[i] for i in v.positions)) for v in plan.variants]
            got.append((ts, row, group))
        assert (got, [(i, r.reason, r.detail) for i, r in rejects]) == expected, plan.name
        reasons.update(reason for _, reason, _ in expected[1])
    assert {"not_finite", "event_time_out_of_range"} <= reasons
