"""Level-1 envelopes: what level 2 merges, what it refuses, and how roll-ups re-key."""

from __future__ import annotations

import base64
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from apache_beam.internal import pickler

from liveagg.engine.compiled import compile_view
from liveagg.loader import parse_view, validate_paths
from liveagg.spec import Duration
from liveagg.transforms import envelope
from liveagg.transforms.plan import Reject, ViewPlan, encode_key
from tests.support.custom import Complete

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

UNROLLED = {k: v for k, v in VIEW.items() if k != "rollup"}


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
        envelope.EnvelopeKey([compile_view(spec)])(
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
        ({"window_start_us": 5}, "bad_envelope", "is not a window of the view"),
        ({"key": ["acme"]}, "bad_envelope", "key must list the 2 values of ['org', 'site']"),
        (
            {"accumulator": "bm90IGFuIGFjYw==", "accumulator_crc32": None},
            "bad_envelope",
            "unreadable accumulator",
        ),
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
        parse_view(
            VIEW
            | {
                "emit": {"early": "5s", "eager": {"column": "n", "below": 10}},
                "milestones": [{"column": "n", "at": [10, 100]}],
            }
        ),
    ]
    assert {s.fingerprint() for s in same} == {spec.fingerprint()}
    changed = [
        parse_view(VIEW | {"window": {"size": "2m"}}),
        parse_view(UNROLLED | {"window": {"type": "cumulative", "size": "2m", "step": "1m"}}),
        parse_view(UNROLLED | {"window": {"type": "cumulative", "size": "2m", "step": "30s"}}),
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


# ---------------------------------------------------------------------------------------------
# Level 2 reads the intermediate topic as untrusted input
# ---------------------------------------------------------------------------------------------

START = 1_709_251_200_000_000


def _refusal(payload: bytes, spec: Any | None = None) -> Reject:
    spec = spec or parse_view(VIEW)
    with pytest.raises(Reject) as caught:
        envelope.decode(payload, _views(spec))
    return caught.value


def test_a_window_beyond_the_year_9999_is_a_dead_letter() -> None:
    # 2**62 us is in the year 146,140: formatting it for the dead letter used to raise.
    spec = parse_view(VIEW)
    far = 2**62 - 2**62 % MINUTE
    refused = _refusal(_envelope(spec, far, ("acme", "fra1"), ["a"]))
    assert (refused.reason, refused.view) == ("bad_envelope", "traffic")  # type: ignore[attr-defined]
    assert refused.detail == (
        f"envelope of view 'traffic': window [{far}, {far + MINUTE}) is outside the years 1 to 9999"
    )
    assert envelope.envelope_time(_envelope(spec, far, ("acme", "fra1"), ["a"])) is None


def test_a_window_whose_roll_up_ends_after_9999_is_a_dead_letter() -> None:
    # A minute of 9999 is a window of the view; its 10-minute roll-up ends in the year 10000.
    start = 253_402_300_800_000_000 - 2 * MINUTE
    refused = _refusal(_envelope(parse_view(VIEW), start, ("acme", "fra1"), ["a"]))
    assert refused.detail.endswith(
        "rolled-up window of [9999-12-31T23:58:00Z, 9999-12-31T23:59:00Z) is outside the years 1 "
        "to 9999"
    )


@pytest.mark.parametrize(
    ("payload", "time"),
    [
        ({}, START),
        ({"version": 2}, None),
        ({"version": True}, None),
        ({"envelope": "other"}, None),
        ({"window_start_us": 2**62, "window_end_us": 2**62 + MINUTE}, None),
        ({"window_start_us": -(2**62)}, None),
        ({"window_start_us": "2024"}, None),
        ({"window_end_us": START}, None),
    ],
)
def test_only_a_plausible_envelope_moves_the_level_2_watermark(
    payload: dict, time: int | None
) -> None:
    spec = parse_view(VIEW)
    assert (
        envelope.envelope_time(_envelope(spec, START, ("acme", "fra1"), ["a"], **payload)) == time
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"view": "other"},
        {"view": None},
        {"definition": "x"},
        {"granularity": "5m"},
        {"window_start_us": START + 1, "window_end_us": START + 1 + MINUTE},
        {"key": ["acme"]},
        {"shard": 7},
    ],
)
def test_only_an_envelope_level_2_merges_moves_its_watermark(payload: dict) -> None:
    """A dead-lettered envelope with a time closed every open window: the partials after it
    came out LATE. The accumulator is read only when the envelope is merged."""
    spec = parse_view(VIEW)
    time = envelope.EnvelopeTime([spec])
    good = _envelope(spec, START, ("acme", "fra1"), ["a"])
    assert time(good) == START
    bad = _envelope(spec, START, ("acme", "fra1"), ["a"], **payload)
    assert envelope.envelope_time(bad) is not None  # plausible, but not one to merge
    assert time(bad) is None
    assert pickler.loads(pickler.dumps(time))(good) == START  # as Beam ships it


@pytest.mark.parametrize("payload", [b"", b"[1]", b"\xff", b"null", b"{"])
def test_no_watermark_from_what_is_not_an_envelope(payload: bytes) -> None:
    assert envelope.envelope_time(payload) is None


DEEP: Any = 0
for _ in range(200):
    DEEP = [DEEP]


@pytest.mark.parametrize(
    ("changes", "reason", "detail"),
    [
        ({"version": True}, "incompatible_envelope", "envelope version True"),
        ({"view": ["traffic"]}, "incompatible_envelope", "envelope of view ['traffic']"),
        (
            {"definition": {"a": DEEP}},
            "incompatible_envelope",
            "has definition {'a': [[[[[[...]]]]]]}",
        ),
        ({"granularity": []}, "incompatible_envelope", "no granularity [] and grouping set None"),
        ({"grouping_set": "0"}, "incompatible_envelope", "grouping set '0'"),
        ({"window_start_us": 1.5e15}, "bad_envelope", "must be integers, got [1500000000000000.0,"),
        ({"window_end_us": None}, "bad_envelope", "must be integers"),
        ({"window_start_us": START + MINUTE}, "bad_envelope", "outside the years"),
        ({"key": ["acme", "fra1", "x"]}, "bad_envelope", "key must list the 2 values"),
        ({"key": {"org": "acme"}}, "bad_envelope", "key must list the 2 values"),
        ({"key": ["acme", DEEP]}, "bad_envelope", "key value site=[[[[[[[...]]]]]]] is not a"),
        ({"key": ["acme", {"a": 1}]}, "bad_envelope", "key value site={'a': 1} is not"),
        ({"key": ["acme", 2.0]}, "bad_envelope", "key value site=2.0 is not a grouping value"),
        ({"key": ["acme", -0.0]}, "bad_envelope", "key value site=-0.0 is not a grouping value"),
        ({"shard": 3}, "bad_envelope", "shard must be a string, got 3"),
        ({"pane": -1}, "bad_envelope", "pane must be an integer from 0 to 2**63 - 1, got -1"),
        ({"pane": 2**64 - 1}, "bad_envelope", "pane must be an integer from 0 to 2**63 - 1"),
        ({"pane": True}, "bad_envelope", "pane must be an integer"),
        ({"offsets": [[0, 9]]}, "bad_envelope", 'offsets must map "topic/partition" to'),
        ({"offsets": {"t/0": [9, 0]}}, "bad_envelope", "offsets must map"),
        ({"offsets": {"t/0": "0-9"}}, "bad_envelope", "offsets must map"),
        ({"offsets": {"t/0": [0, 9.0]}}, "bad_envelope", "offsets must map"),
        ({"accumulator": 7}, "bad_envelope", "unreadable accumulator: expected base64 text, got 7"),
        ({"accumulator": "\u00e9"}, "bad_envelope", "unreadable accumulator"),
        ({"accumulator_crc32": "x"}, "bad_envelope", "accumulator_crc32 'x' does not match"),
        ({"accumulator_crc32": 1}, "bad_envelope", "the bytes were altered after level 1"),
    ],
)
def test_each_field_is_checked(changes: dict, reason: str, detail: str) -> None:
    spec = parse_view(VIEW)
    refused = _refusal(_envelope(spec, START, ("acme", "fra1"), ["a"], **changes))
    assert refused.reason == reason
    assert detail in refused.detail, refused.detail


def test_values_level_1_writes_as_keys_are_accepted() -> None:
    spec = parse_view(VIEW)
    for key in (["acme", None], [True, 3], [-1.5, "fra1"], [2**64 - 1, ""], [1e308, 2.0**70]):
        _, partial = envelope.decode(_envelope(spec, START, tuple(key), ["a"]), _views(spec))
        assert partial[4] == encode_key((key[0],))


def test_the_checksum_is_optional_and_covers_the_accumulator() -> None:
    spec = parse_view(VIEW)
    env = orjson.loads(_envelope(spec, START, ("acme", "fra1"), ["a", "b"]))
    acc = base64.b64decode(env["accumulator"])
    assert env["accumulator_crc32"] == zlib.crc32(acc)
    # An envelope of a build without checksums still decodes.
    old = {k: v for k, v in env.items() if k != "accumulator_crc32"}
    _, partial = envelope.decode(orjson.dumps(old), _views(spec))
    final = ViewPlan(spec.final()).combine
    assert final.extract_output(final.decode(partial[7])) == (2, 2)
    # One bit flipped in the accumulator: the checksum says so before anything reads it.
    flipped = acc[:-1] + bytes([acc[-1] ^ 1])
    refused = _refusal(orjson.dumps(env | {"accumulator": base64.b64encode(flipped).decode()}))
    assert refused.detail == (
        f"envelope of view 'traffic': accumulator_crc32 {zlib.crc32(acc)} does not match its "
        f"accumulator ({zlib.crc32(flipped)}): the bytes were altered after level 1 wrote them"
    )


def test_a_sketch_of_other_params_under_the_same_definition_is_refused() -> None:
    # A producer that forges the definition: an lg_k 10 sketch where the view has lg_k 12.
    # DataSketches would merge it (hll_union downsamples to lg_k 10, so the row silently
    # loses precision); level 2 refuses it instead.
    spec = parse_view(VIEW)
    other = parse_view(
        VIEW
        | {
            "aggregation_info": [
                VIEW["aggregation_info"][0],
                VIEW["aggregation_info"][1] | {"params": {"lg_k": 10}},
            ]
        }
    )
    forged = orjson.loads(_envelope(other, START, ("acme", "fra1"), ["a"]))
    forged["definition"] = spec.fingerprint()
    refused = _refusal(orjson.dumps(forged), spec)
    assert refused.detail.endswith(
        "aggregation_info[1] (count_distinct): cannot decode a count_distinct accumulator: HLL "
        "sketch: lg_k 10 and type HLL_8, but the view's count_distinct has lg_k 12 and HLL_8; "
        "it was written by another definition"
    )


class RaisingFn(Complete):
    """A custom aggregation whose decoder raises what no one expects, unprintably; it counts
    messages."""

    counts_rows = True

    def decode_accumulator(self, data: bytes) -> int:
        if data == b"1":
            return 1
        raise _Unprintable()


class _Unprintable(KeyError):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def test_a_custom_decoder_that_raises_anything_gives_a_dead_letter() -> None:
    custom = {
        "name": "custom",
        "event_time": {"field": "ts"},
        "grouping_cols": ["org"],
        "window": {"size": "1m"},
        "aggregation_info": [
            {
                "aggregation": "custom",
                "aggregated_col_name": "n",
                "params": {"combine_fn": "tests.transforms.test_envelope:RaisingFn"},
            }
        ],
    }
    spec = parse_view(custom)
    plan = ViewPlan(spec)
    good = (
        spec.name,
        0,
        START,
        START + MINUTE,
        encode_key(("a",)),
        "t/0",
        0,
        plan.combine.encode([1]),
        {},
    )
    bad = (*good[:7], plan.combine.encode([2]), *good[8:])
    views = _views(spec)
    assert envelope.decode(orjson.dumps(envelope.envelope(plan, spec.fingerprint(), good)), views)
    refused = _refusal(orjson.dumps(envelope.envelope(plan, spec.fingerprint(), bad)), spec)
    assert (refused.reason, refused.view) == ("bad_envelope", "custom")  # type: ignore[attr-defined]
    assert refused.detail == "the envelope could not be read: RuntimeError: no message"


#: A script that feeds the 23-byte KLL accumulator of tests/combiners/test_accumulator_checks.py
#: to level 2's decoder in an envelope, and prints what comes out.
KLL_ENVELOPE = """
import base64, sys, zlib, orjson
from liveagg.loader import parse_view
from liveagg.transforms import rekey
from liveagg.transforms.plan import ViewPlan
view = {"name": "q", "event_time": {"field": "ts"}, "grouping_cols": ["org"],
        "window": {"size": "1m"}, "aggregation_info": [{"aggregation": "approx_quantiles",
        "col_name": "x", "aggregated_col_name": "p"}]}
spec = parse_view(view)
acc = len(bytes.fromhex(sys.argv[1])).to_bytes(4, "big") + bytes.fromhex(sys.argv[1])
env = {"envelope": "liveagg.partial", "version": 1, "view": "q",
       "definition": spec.fingerprint(), "granularity": None, "grouping_set": None,
       "window_start_us": 0, "window_end_us": 60000000, "key": ["acme"], "shard": "t/0",
       "pane": 0, "accumulator": base64.b64encode(acc).decode(),
       "accumulator_crc32": zlib.crc32(acc), "offsets": {}}
decoder = rekey._Decode(rekey.RekeyAggregate([spec], streaming=False).views)
decoder.setup()
[out] = decoder.process((orjson.dumps(env), None))
print(orjson.dumps({"tag": out.tag, "reason": out.value["reason"],
                    "detail": out.value["detail"]}).decode())
"""


def test_the_23_byte_kll_accumulator_becomes_a_dead_letter() -> None:
    from tests.combiners.test_accumulator_checks import KLL_23

    proc = subprocess.run(
        [sys.executable, "-c", KLL_ENVELOPE, KLL_23.hex()],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "tag": "dead_letter",
        "reason": "bad_envelope",
        "detail": "envelope of view 'q': unreadable accumulator: aggregation_info[0] "
        "(approx_quantiles): cannot decode a approx_quantiles accumulator: KLL sketch: 22 "
        "bytes, too short for the offsets of 2 levels",
    }


@pytest.mark.parametrize("payload", [None, 7, ["x"]])
def test_a_payload_that_is_not_even_bytes_is_a_dead_letter(payload: Any) -> None:
    refused = _refusal(payload)
    assert (refused.reason, refused.detail) == ("not_envelope", "the message is not JSON")
    assert refused.view is None  # type: ignore[attr-defined]
