"""What level 2's accumulator checks cost, next to reading and merging the accumulator.

For each sketch aggregation, at a few sizes: the accumulator's bytes, ``check_accumulator``,
``decode_accumulator`` (DataSketches' deserialize), and decode + merge with a second
accumulator + extract (what level 2 does with a partial). Then a whole envelope through
``envelope.decode`` (JSON, base64, checksum, field and accumulator checks) for a view of
several aggregations. Microseconds per call, the best of several runs.

    python -m benchmarks.accumulator_checks
"""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable
from typing import Any

import orjson

from liveagg.combiners import create
from liveagg.loader import parse_view
from liveagg.transforms import envelope
from liveagg.transforms.plan import ViewPlan

CASES = [
    ("count_distinct", {}, (3, 200, 100_000)),
    ("count_distinct", {"hll_type": "HLL_4"}, (100_000,)),
    ("approx_quantiles", {}, (1, 100, 100_000)),
    ("top_k", {}, (5, 200, 100_000)),
]


def best_us(call: Callable[[], Any], number: int = 200) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def _values(kind: str, n: int, rnd: random.Random) -> list[Any]:
    if kind == "approx_quantiles":
        return [rnd.random() for _ in range(n)]
    if kind == "top_k":  # Zipf-like: a few frequent values, a long tail
        return [str(int(rnd.paretovariate(1.2))) for _ in range(n)]
    return [f"user-{i}" for i in range(n)]


def accumulator_rows() -> list[tuple[str, str, int, float, float, float]]:
    rnd = random.Random(1)
    rows = []
    for kind, params, sizes in CASES:
        fn = create(kind, params)
        label = kind + "".join(f" {v}" for v in params.values())
        for n in sizes:
            data, other = (
                fn.encode_accumulator(
                    fn.add_inputs(
                        fn.create_accumulator(), [fn.coerce(v) for v in _values(kind, n, rnd)]
                    )
                )
                for _ in range(2)
            )
            rows.append(
                (
                    label,
                    f"{n:,} inputs",
                    len(data),
                    best_us(lambda fn=fn, data=data: fn.check_accumulator(data)),
                    best_us(lambda fn=fn, data=data: fn.decode_accumulator(data)),
                    best_us(lambda fn=fn, data=data, other=other: _merge(fn, data, other)),
                )
            )
    return rows


def _merge(fn: Any, data: bytes, other: bytes) -> Any:
    merged = fn.merge_accumulators([fn.decode_accumulator(other), fn.decode_accumulator(data)])
    return fn.extract_output(merged)


VIEW = {
    "name": "bench",
    "event_time": {"field": "ts"},
    "grouping_cols": ["org", "site"],
    "window": {"size": "1m"},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "n"},
        {"aggregation": "sum", "col_name": "x", "aggregated_col_name": "s"},
        {"aggregation": "count_distinct", "col_name": "u", "aggregated_col_name": "d"},
        {"aggregation": "approx_quantiles", "col_name": "x", "aggregated_col_name": "q"},
        {"aggregation": "top_k", "col_name": "u", "aggregated_col_name": "t"},
    ],
}


def envelope_rows() -> list[tuple[str, float, float, float]]:
    """Per envelope: the whole decode, the sketch checks within it, and the merge."""
    rnd = random.Random(2)
    spec = parse_view(VIEW)
    plan = ViewPlan(spec)
    views = {spec.name: envelope.Level2(spec)}
    combine = plan.combine
    rows = []
    for n in (10, 1_000, 100_000):
        inputs = [
            (1, v, f"user-{rnd.randrange(n)}", v, str(int(rnd.paretovariate(1.2))))
            for v in (rnd.random() for _ in range(n))
        ]
        acc = combine.encode(combine.add_inputs(combine.create_accumulator(), inputs))
        partial = (spec.name, 0, 0, 60_000_000, b'["acme","fra1"]', "t/0", 0, acc, {})
        payload = orjson.dumps(envelope.envelope(plan, spec.fingerprint(), partial))
        parts, pos = [], 0
        for _ in plan.fns:
            size = int.from_bytes(acc[pos : pos + 4], "big")
            parts.append(acc[pos + 4 : pos + 4 + size])
            pos += 4 + size

        def checks(parts: list[bytes] = parts) -> None:
            for fn, part in zip(plan.fns, parts, strict=True):
                fn.check_accumulator(part)

        def merge(acc: bytes = acc) -> Any:
            return combine.extract_output(
                combine.merge_accumulators([combine.decode(acc), combine.decode(acc)])
            )

        rows.append(
            (
                f"{n:,} inputs, {len(payload):,} bytes",
                best_us(lambda payload=payload: envelope.decode(payload, views), 100),
                best_us(checks, 100),
                best_us(merge, 100),
            )
        )
    return rows


def main() -> None:
    print(
        "| aggregation | accumulator | bytes | check µs | deserialize µs "
        "| decode+merge+extract µs |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for label, size, nbytes, check, decode, merge in accumulator_rows():
        print(f"| {label} | {size} | {nbytes:,} | {check:.1f} | {decode:.1f} | {merge:.1f} |")
    print("\nA whole envelope of count, sum, count_distinct, approx_quantiles and top_k:")
    print("| envelope | envelope.decode µs | its sketch checks µs | decode+merge+extract µs |")
    print("|---|---:|---:|---:|")
    for label, decode, checks, merge in envelope_rows():
        print(f"| {label} | {decode:.1f} | {checks:.1f} | {merge:.1f} |")


if __name__ == "__main__":
    main()
