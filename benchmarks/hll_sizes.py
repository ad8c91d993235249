"""Bytes per key of a ``count_distinct`` sketch, by distinct values seen, lg_k and HLL type.

A sketch starts as a list of hashes (4 bytes each), becomes a hash set, and only then the
dense array of ``2**lg_k`` buckets whose size the HLL type sets (8, 6 or 4 bits each). Most
keys of a Zipf-skewed grouping see few distinct values, so most sketches stay small.

    python -m benchmarks.hll_sizes
"""

from __future__ import annotations

from datasketches import hll_sketch, tgt_hll_type

DISTINCT = (1, 10, 100, 300, 1_000, 10_000, 100_000)
TYPES = ("HLL_4", "HLL_6", "HLL_8")


def sizes(lg_k: int = 12) -> list[tuple[int, dict[str, tuple[int, int]]]]:
    """Per distinct count: {type: (compact bytes, updatable bytes)}."""
    out = []
    for n in DISTINCT:
        row = {}
        for name in TYPES:
            sketch = hll_sketch(lg_k, getattr(tgt_hll_type, name))
            for i in range(n):
                sketch.update(f"user-{i}")
            row[name] = (
                sketch.get_compact_serialization_bytes(),
                sketch.get_updatable_serialization_bytes(),
            )
        out.append((n, row))
    return out


def main() -> None:
    for lg_k in (12, 14):
        print(f"\nlg_k={lg_k}: bytes per sketch, compact (shuffle, Kafka) / updatable (state)")
        print("| distinct | " + " | ".join(TYPES) + " |")
        print("|---:|" + "---:|" * len(TYPES))
        for n, row in sizes(lg_k):
            cells = " | ".join(f"{c:,} / {u:,}" for c, u in (row[t] for t in TYPES))
            print(f"| {n:,} | {cells} |")


if __name__ == "__main__":
    main()
