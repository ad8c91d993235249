"""Level 2 survives whatever the intermediate topic holds: fuzzed envelopes, in a subprocess.

The fuzzer (:mod:`tests.support.wire_fuzz`) runs in its own process, so that a crash in
DataSketches' native code is the subprocess's signal, not a dead test run. Its inputs are real
envelopes of every sketch kind and mode, mutated at the byte, framing, checksum and JSON levels.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveagg.engine.compiled import compile_view
from liveagg.loader import parse_view
from liveagg.transforms import envelope, rekey
from liveagg.transforms.deadletter import REASONS
from liveagg.transforms.plan import Reject, ViewPlan
from tests.support.wire_fuzz import EXACT, FIELDS, MINUTE, START

ROOT = Path(__file__).resolve().parents[2]


def _fuzz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.wire_fuzz", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _died(proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode < 0:
        return f"killed by {signal.Signals(-proc.returncode).name}"
    return f"exit {proc.returncode}: {proc.stderr[-2000:]}"


@pytest.mark.parametrize("seed", [1, 2])
def test_every_fuzzed_envelope_is_merged_or_dead_lettered(seed: int) -> None:
    proc = _fuzz("--seed", str(seed), "--cases", "5000")
    assert proc.returncode == 0, _died(proc)
    summary: dict[str, Any] = orjson.loads(proc.stdout.strip().splitlines()[-1])
    outcomes = summary["outcomes"]
    assert summary["cases"] == summary["merged"] + summary["dead"]
    # Every real envelope merges; every family of mutation was refused at least once, and
    # each sketch kind was both refused and (mutated harmlessly, e.g. a flipped item bit)
    # merged: the inputs reach the deep checks, not only the first byte.
    assert outcomes["real:merged"] == 54 and "real:dead" not in outcomes
    for family in ("checksum", "framing", "json", "payload"):
        assert outcomes[f"{family}:dead"] > 300, family
    assert "checksum:merged" not in outcomes
    for kind in ("count_distinct", "hll_sketch", "approx_quantiles", "top_k"):
        assert outcomes[f"sketch:{kind}:dead"] > 50, kind
        assert outcomes[f"sketch:{kind}:merged"] > 5, kind
    assert set(summary["reasons"]) == {"bad_envelope", "incompatible_envelope", "not_envelope"}


def test_without_the_sketch_checks_the_same_inputs_break_the_process() -> None:
    # What the checks prevent: DataSketches reading these bytes crashes the process or
    # raises out of a merge. (A later DataSketches that refused them itself would make this
    # fail: then the checks guard less than they did, and this test says so.)
    proc = _fuzz("--seed", "2", "--cases", "3000", "--unchecked")
    assert proc.returncode != 0, proc.stdout[-500:]


# ---------------------------------------------------------------------------------------------
# In this process: JSON-level fields and JSON accumulators (no native code to crash)
# ---------------------------------------------------------------------------------------------

JSON_VIEW = parse_view(EXACT)
VIEWS = {JSON_VIEW.name: envelope.Level2(JSON_VIEW)}
PLAN = ViewPlan(JSON_VIEW)
MERGE = rekey._MergeWindow(compile_view(JSON_VIEW.final()))
MERGE.setup()
_REAL = PLAN.combine.encode(PLAN.combine.create_accumulator())
BASE = envelope.envelope(
    PLAN,
    JSON_VIEW.fingerprint(),
    (JSON_VIEW.name, 0, START, START + MINUTE, b'["acme"]', "t/0", 0, _REAL, {"t/0": [0, 9]}),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def accumulators(draw: st.DrawFn) -> bytes:
    """A view accumulator of arbitrary JSON parts, or of one real part changed to any JSON."""
    parts = [
        data[4:]
        for data in _split(_REAL)  # one 4-byte length and part per aggregation
    ]
    for i in draw(st.lists(st.integers(0, len(parts) - 1), min_size=1, max_size=3)):
        parts[i] = bytes([draw(st.sampled_from([1, 2]))]) + orjson.dumps(draw(json_values))
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _split(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos : pos + 4 + size])
        pos += 4 + size
    return out


@settings(derandomize=True, max_examples=400, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
    accumulator=st.none() | accumulators(),
)
def test_any_envelope_fields_and_json_accumulators_decode_or_dead_letter(
    changes: dict[str, Any], accumulator: bytes | None
) -> None:
    env = BASE | changes
    if accumulator is not None:
        env |= {
            "accumulator": base64.b64encode(accumulator).decode(),
            "accumulator_crc32": zlib.crc32(accumulator),
        }
    try:
        _, partial = envelope.decode(orjson.dumps(env), VIEWS)
    except Reject as r:
        assert r.reason in REASONS and type(r.detail) is str
        return
    _, variant, start, end, key, shard, pane, data, _ = partial
    element = ((variant, start, key), [(end, "base", 0, _REAL), (end, shard, pane, data)])
    [row] = MERGE.process(element)
    assert row["window_start"] and row["window_end"]
