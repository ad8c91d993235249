"""Random and mutated level-1 envelopes through level 2's decoder and merge, in this process.

Run as ``python -m tests.support.wire_fuzz --seed S --cases N`` by
``tests/transforms/test_wire_fuzz.py``, in a subprocess, so that a crash in native code shows
up as the subprocess's signal instead of killing the test run. Each input goes through
``rekey._Decode`` (as ``liveagg rekey`` reads the intermediate topic) and must come out as
exactly one dead letter or one partial; each partial is then merged with a real partial of
the same window by ``rekey._MergeWindow`` and must give a row. Prints a JSON summary.

Inputs: real envelopes of two views (one of every sketch kind and mode, one of JSON
accumulators), unmutated (all must merge), then mutated:

* ``sketch``: one aggregation's accumulator bytes flipped, overwritten, truncated, extended,
  zeroed or spliced with another real accumulator, re-framed with correct lengths, the
  checksum recomputed (a producer that checksums bad bytes) or dropped;
* ``framing``: the view's accumulator bytes mutated as a whole, lengths included;
* ``checksum``: the accumulator mutated but the checksum kept;
* ``json``: a field removed, or replaced by an odd JSON value (huge ints, deep nesting,
  wrong types, out-of-range windows and panes, keys of the wrong arity);
* ``payload``: bytes that are not an envelope at all.

``--unchecked`` turns the sketch checks off, to show that the same inputs crash the process
without them.
"""

from __future__ import annotations

import argparse
import base64
import random
import sys
import zlib
from collections import Counter
from typing import Any

import orjson

from liveagg.engine.compiled import compile_view
from liveagg.loader import parse_view
from liveagg.transforms import envelope, rekey
from liveagg.transforms.combine import _LEN
from liveagg.transforms.deadletter import REASONS
from liveagg.transforms.deadletter import TAG as DEAD_LETTER
from liveagg.transforms.plan import ViewPlan, view_tag

MINUTE = 60_000_000
START = 1_709_251_200_000_000

SKETCHES = {
    "name": "sketches",
    "event_time": {"field": "ts", "format": "epoch_s"},
    "grouping_cols": ["org", "site"],
    "window": {"size": "1m"},
    "rollup": {"grouping_cols": ["org"], "window": {"size": "5m"}},
    "aggregation_info": [
        {"aggregation": "count_distinct", "col_name": "u", "aggregated_col_name": "d4",
         "params": {"lg_k": 8, "hll_type": "HLL_4"}},
        {"aggregation": "hll_sketch", "col_name": "u", "aggregated_col_name": "h6",
         "params": {"lg_k": 10, "hll_type": "HLL_6"}},
        {"aggregation": "count_distinct", "col_name": "u", "aggregated_col_name": "d8",
         "params": {"lg_k": 5, "hll_type": "HLL_8"}},
        {"aggregation": "approx_quantiles", "col_name": "x", "aggregated_col_name": "q",
         "params": {"k": 20}},
        {"aggregation": "top_k", "col_name": "u", "aggregated_col_name": "t",
         "params": {"k": 3, "lg_max_map_size": 4}},
    ],
}  # fmt: skip
EXACT = {
    "name": "exact",
    "event_time": {"field": "ts", "format": "epoch_s"},
    "grouping_cols": ["org"],
    "window": {"size": "1m"},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "n"},
        {"aggregation": "sum", "col_name": "x", "aggregated_col_name": "s"},
        {"aggregation": "mean", "col_name": "x", "aggregated_col_name": "m"},
        {"aggregation": "min", "col_name": "x", "aggregated_col_name": "lo"},
        {"aggregation": "variance", "col_name": "x", "aggregated_col_name": "v"},
        {"aggregation": "first", "col_name": "u", "aggregated_col_name": "f"},
        {"aggregation": "collect_set", "col_name": "u", "aggregated_col_name": "c",
         "params": {"max_size": 3}},
        {"aggregation": "count_distinct_exact", "col_name": "u", "aggregated_col_name": "e"},
        {"aggregation": "histogram", "col_name": "x", "aggregated_col_name": "hist",
         "params": {"bounds": [0, 1]}},
    ],
}  # fmt: skip
SIZES = (0, 1, 2, 3, 7, 9, 40, 300, 3000)
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1.5, 60.0,
    -1e300, 1e300, "", "x", "t/0", "\u00e9" * 3, "A" * 5000, [], [1], ["acme"], ["acme", "fra1"],
    [["acme"]], [None, None], [1.0, 2], [True, "x", 3], {}, {"t/0": [0, 9]}, {"t/0": [9, 0]},
    {"t/0": "x"}, {"t/0": [0, 2**64 - 1]}, {"a": {"b": None}}, "AAAA", "***", "AA==", "=",
]  # fmt: skip
FIELDS = (
    "envelope", "version", "view", "definition", "granularity", "grouping_set",
    "window_start_us", "window_end_us", "key", "shard", "pane", "accumulator",
    "accumulator_crc32", "offsets",
)  # fmt: skip


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _value(rnd: random.Random, kind: str) -> Any:
    """One input value of a column: ``u`` strings, numbers and booleans, ``x`` numbers."""
    if kind == "u":
        return rnd.choice(
            [str(rnd.randrange(4000)), rnd.randrange(-5, 4000), rnd.random(), True, 2**70, ""]
        )
    return rnd.choice([rnd.random(), float(rnd.randrange(5)), -rnd.random() * 1e6])


def _row(rnd: random.Random, plan: ViewPlan, columns: list[str]) -> tuple[Any, ...]:
    """A view's input row as the runtime feeds it: coerced values, timed where needed."""
    row = []
    for fn, col in zip(plan.fns, columns, strict=True):
        value = 1 if fn.counts_rows else fn.coerce(_value(rnd, col))
        row.append((START + rnd.randrange(MINUTE), value) if fn.needs_event_time else value)
    return tuple(row)


class Corpus:
    """Real envelopes of each view, and each aggregation's real accumulator parts."""

    def __init__(self, rnd: random.Random) -> None:
        self.specs = [parse_view(SKETCHES), parse_view(EXACT)]
        self.envelopes: list[tuple[dict[str, Any], ViewPlan]] = []
        self.parts: dict[str, list[bytes]] = {}
        for spec in self.specs:
            plan = ViewPlan(spec)
            combine = plan.combine
            columns = [a.column or "n" for a in spec.aggregations]
            for size in SIZES:
                shards = []
                for _ in range(2):
                    acc = combine.create_accumulator()
                    rows = [_row(rnd, plan, columns) for _ in range(size)]
                    shards.append(combine.add_inputs(acc, rows) if rows else acc)
                encoded = [combine.encode(acc) for acc in shards]  # merging reuses shards[0]
                encoded.append(combine.encode(combine.merge_accumulators(shards)))
                for data in encoded:
                    self.envelopes.append((self._envelope(spec, plan, rnd, data), plan))
                    for fn, part in zip(plan.fns, _frames(data), strict=True):
                        self.parts.setdefault(fn.name, []).append(part)

    @staticmethod
    def _envelope(spec: Any, plan: ViewPlan, rnd: random.Random, data: bytes) -> dict:
        start = START + rnd.randrange(10) * MINUTE
        key = ["acme", "fra1"][: len(spec.grouping_cols)]
        partial = (spec.name, 0, start, start + MINUTE, orjson.dumps(key), "t/0", 0, data,
                   {"t/0": [0, 9]})  # fmt: skip
        return envelope.envelope(plan, spec.fingerprint(), partial)


def _frames(data: bytes) -> list[bytes]:
    parts, pos = [], 0
    while pos < len(data):
        (size,) = _LEN.unpack_from(data, pos)
        parts.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return parts


def _frame(parts: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(p)) + p for p in parts)


def mutate_bytes(rnd: random.Random, data: bytes, donors: list[bytes]) -> bytes:
    """Flipped, overwritten, truncated, extended, zeroed or spliced bytes."""
    out = bytearray(data)
    op = rnd.randrange(8)
    if op == 0 and out:  # flip bits
        for _ in range(rnd.randint(1, 4)):
            out[rnd.randrange(len(out))] ^= 1 << rnd.randrange(8)
    elif op == 1 and out:  # overwrite bytes, preamble more often
        for _ in range(rnd.randint(1, 3)):
            at = rnd.randrange(min(len(out), 48) if rnd.random() < 0.7 else len(out))
            out[at] = rnd.choice([0, 1, 0x7F, 0x80, 0xFF, rnd.randrange(256)])
    elif op == 2:  # truncate
        out = out[: rnd.randrange(len(out) + 1)]
    elif op == 3:  # extend
        out += bytes(rnd.randrange(256) for _ in range(rnd.choice([1, 2, 4, 8, 64])))
    elif op == 4 and out:  # zero or fill a region
        at = rnd.randrange(len(out))
        out[at : at + rnd.randint(1, 16)] = bytes([rnd.choice([0, 0xFF])]) * len(
            out[at : at + rnd.randint(1, 16)]
        )
    elif op == 5:  # splice with another real accumulator
        donor = rnd.choice(donors)
        out = out[: rnd.randrange(len(out) + 1)] + donor[rnd.randrange(len(donor) + 1) :]
    elif op == 6:  # another real accumulator of this or another aggregation, whole
        out = bytearray(rnd.choice(donors))
    else:  # a 32-bit field set to an extreme
        if len(out) >= 4:
            at = rnd.randrange(len(out) - 3)
            out[at : at + 4] = rnd.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", b"\0" * 4])
    return bytes(out)


def _with_accumulator(env: dict, data: bytes, rnd: random.Random, keep_crc: bool) -> dict:
    env = dict(env)
    env["accumulator"] = base64.b64encode(data).decode()
    if not keep_crc:
        if rnd.random() < 0.5:
            env["accumulator_crc32"] = zlib.crc32(data)
        else:
            env.pop("accumulator_crc32", None)
    return env


def mutate(rnd: random.Random, corpus: Corpus) -> tuple[str, bytes]:
    """One mutated input: ``(family, payload)``."""
    env, plan = rnd.choice(corpus.envelopes)
    data = base64.b64decode(env["accumulator"])
    all_parts = [p for parts in corpus.parts.values() for p in parts]
    family = rnd.choice(["sketch", "sketch", "sketch", "framing", "checksum", "json", "payload"])
    if family == "sketch":
        parts = _frames(data)
        i = rnd.randrange(len(parts))
        donors = corpus.parts[plan.fns[i].name] if rnd.random() < 0.7 else all_parts
        parts[i] = mutate_bytes(rnd, parts[i], donors)
        out = _with_accumulator(env, _frame(parts), rnd, keep_crc=False)
        return f"sketch:{plan.fns[i].name}", orjson.dumps(out)
    if family == "framing":
        out = _with_accumulator(env, mutate_bytes(rnd, data, all_parts), rnd, keep_crc=False)
        return family, orjson.dumps(out)
    if family == "checksum":
        mutated = mutate_bytes(rnd, data, all_parts)
        if mutated == data:
            mutated += b"\0"
        return family, orjson.dumps(_with_accumulator(env, mutated, rnd, keep_crc=True))
    if family == "json":
        out = dict(env)
        for _ in range(rnd.randint(1, 2)):
            field = rnd.choice(FIELDS)
            if rnd.random() < 0.2:
                out.pop(field, None)
            elif field in ("window_start_us", "window_end_us") and rnd.random() < 0.5:
                out[field] = env[field] + rnd.choice([-1, 1, MINUTE, -MINUTE, 2**62, -(2**62)])
            else:
                out[field] = rnd.choice([*ODD_VALUES, _deep(rnd.choice([100, 250]))])
        return family, orjson.dumps(out)
    text = orjson.dumps(env)
    return family, rnd.choice(
        [
            text[: rnd.randrange(len(text))],
            bytes(rnd.randrange(256) for _ in range(rnd.randrange(64))),
            b"",
            b"null",
            b"[1, 2]",
            b'"liveagg.partial"',
            b"\xff\xfe" + text,
            orjson.dumps({"envelope": "liveagg.partial"}),
            b"[" * 2000,
        ]
    )


def run(seed: int, cases: int) -> dict[str, Any]:
    rnd = random.Random(seed)
    corpus = Corpus(rnd)
    decoder = rekey._Decode(rekey.RekeyAggregate(corpus.specs, streaming=False).views)
    decoder.setup()
    mergers = {s.name: rekey._MergeWindow(compile_view(s.final())) for s in corpus.specs}
    for merger in mergers.values():
        merger.setup()
    # A real partial of each view, to merge every accepted one with.
    base: dict[str, bytes] = {}
    for env, _ in corpus.envelopes:
        if env["view"] not in base:
            base[env["view"]] = envelope.decode(orjson.dumps(env), decoder._views)[1][7]

    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    inputs = [("real", orjson.dumps(env)) for env, _ in corpus.envelopes]
    inputs += [mutate(rnd, corpus) for _ in range(cases)]
    for family, payload in inputs:
        source = {"topic": "partials", "partition": 0, "offset": 1}
        out = list(decoder.process((payload, source)))
        assert len(out) == 1, (family, payload[:200], out)
        tag, value = out[0].tag, out[0].value
        if tag == DEAD_LETTER:
            assert value["reason"] in REASONS and type(value["detail"]) is str, value
            assert family != "real", value  # what level 1 writes always merges
            outcomes[f"{family}:dead"] += 1
            reasons[value["reason"]] += 1
            continue
        (view, variant, _), [(key, start, end, (shard, pane, data), _)] = value
        assert tag == view_tag(view)
        # Merged as level 2's bounded merge does: latest pane per shard, then one row.
        element = (
            (variant, start, key),
            [(end, "baseline", 0, base[view]), (end, shard, pane, data)],
        )
        rows = list(mergers[view].process(element))
        assert len(rows) == 1 and rows[0]["window_start"], rows
        outcomes[f"{family}:merged"] += 1
    return {
        "cases": len(inputs),
        "merged": sum(n for k, n in outcomes.items() if k.endswith(":merged")),
        "dead": sum(n for k, n in outcomes.items() if k.endswith(":dead")),
        "outcomes": dict(sorted(outcomes.items())),
        "reasons": dict(sorted(reasons.items())),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--unchecked", action="store_true", help="no sketch checks")
    args = parser.parse_args(argv)
    if args.unchecked:
        from liveagg.combiners.hll import _HllFn
        from liveagg.combiners.kll import ApproxQuantilesFn
        from liveagg.combiners.topk import TopKFn

        for cls in (_HllFn, ApproxQuantilesFn, TopKFn):
            cls.check_accumulator = lambda self, data: None  # type: ignore[method-assign]
    summary = run(args.seed, args.cases)
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    main()
