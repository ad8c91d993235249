"""Synthetic access-log events with Zipf-distributed keys, for the benchmarks.

Every line is one JSON object::

    {"ts": "2024-03-01T10:00:03.120Z", "org": "org-17", "site": "site-3", "country": "DE",
     "user": "u-000412", "url": "/p/881", "status": 200, "bytes": 5312, "latency_ms": 18.4}

Keys are Zipf-skewed (rank ``r`` has weight ``1 / r**zipf_a``), ``user`` over ``users``
distinct values (a million by default), the other dimensions over fewer. Event time moves
evenly from ``start`` over ``span_s`` seconds and is jittered by up to ``disorder_s`` either
way, so lines are out of order. The same seed gives the same file.

    python -m benchmarks.generate --events 1000000 --out .cache/bench/events.jsonl
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

COUNTRIES = ("US", "DE", "IN", "BR", "JP", "GB", "FR", "MX", "CA", "AU", "KR", "NG")


@dataclass(frozen=True)
class Shape:
    """What the generator draws: sizes of the key spaces, skew, disorder and time span."""

    users: int = 1_000_000
    orgs: int = 2_000
    sites: int = 200
    urls: int = 50_000
    zipf_a: float = 1.1
    span_s: int = 6 * 3600
    disorder_s: int = 120
    start: str = "2024-03-01T00:00:00Z"


def _zipf(rng: np.random.Generator, n: int, a: float, size: int) -> np.ndarray:
    """Ranks in ``[0, n)`` with weight ``1 / (rank+1)**a`` (bounded, unlike ``rng.zipf``)."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** a
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(size), side="right")
    # Scatter ranks over the key space so that key order does not follow popularity.
    return rng.permutation(n)[np.minimum(ranks, n - 1)]


def batches(
    events: int, shape: Shape = Shape(), seed: int = 1, batch: int = 100_000
) -> Iterator[list[bytes]]:
    """Yield the events as lists of JSON lines (without newlines), ``batch`` at a time."""
    rng = np.random.default_rng(seed)
    start_ms = int(datetime.fromisoformat(shape.start).timestamp() * 1000)
    for first in range(0, events, batch):
        n = min(batch, events - first)
        position = (np.arange(first, first + n) * (shape.span_s * 1000 / max(events, 1))).astype(
            np.int64
        )
        jitter = rng.integers(-shape.disorder_s * 1000, shape.disorder_s * 1000 + 1, n)
        ts = start_ms + np.maximum(position + jitter, 0)
        orgs = _zipf(rng, shape.orgs, shape.zipf_a, n)
        sites = _zipf(rng, shape.sites, shape.zipf_a, n)
        users = _zipf(rng, shape.users, shape.zipf_a, n)
        urls = _zipf(rng, shape.urls, shape.zipf_a, n)
        countries = rng.integers(0, len(COUNTRIES), n)
        status = rng.choice([200, 200, 200, 200, 304, 404, 500], n)
        size = rng.lognormal(8, 1.2, n).astype(np.int64)
        latency = np.round(rng.gamma(2.0, 12.0, n), 2)
        lines = []
        for i in range(n):
            stamp = datetime.fromtimestamp(ts[i] / 1000, UTC).isoformat(timespec="milliseconds")
            lines.append(
                (
                    f'{{"ts":"{stamp[:-6]}Z","org":"org-{orgs[i]}","site":"site-{sites[i]}",'
                    f'"country":"{COUNTRIES[countries[i]]}","user":"u-{users[i]:07d}",'
                    f'"url":"/p/{urls[i]}","status":{status[i]},"bytes":{size[i]},'
                    f'"latency_ms":{latency[i]}}}'
                ).encode()
            )
        yield lines


def write(path: Path, events: int, shape: Shape = Shape(), seed: int = 1) -> Path:
    """Write ``events`` lines to ``path`` (JSON Lines), unless an identical file is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = path.with_suffix(path.suffix + ".meta")
    meta = f"{events} {shape} {seed}\n"
    if path.exists() and stamp.exists() and stamp.read_text() == meta:
        return path
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as out:
        for lines in batches(events, shape, seed):
            out.write(b"\n".join(lines) + b"\n")
    tmp.replace(path)
    stamp.write_text(meta)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=Shape.users)
    parser.add_argument("--zipf-a", type=float, default=Shape.zipf_a)
    parser.add_argument("--disorder-s", type=int, default=Shape.disorder_s)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    shape = Shape(users=args.users, zipf_a=args.zipf_a, disorder_s=args.disorder_s)
    print(write(args.out, args.events, shape, args.seed))


if __name__ == "__main__":
    main()
