"""The window operator's cost per bundle against the number of live keys it holds.

    python -m benchmarks.operator_state [--keys 10000,100000,1000000] [--json]

Drives the streaming path's own code (the router's batches into the window operator's
``_process``) on one process, with the state cells kept as the SDK's state cache keeps them:
a read returns the very objects stored, and each element a bundle adds to a cell is encoded
with the cell's coder, which is what the SDK sends to the runner when the bundle commits
(``SynchronousBagRuntimeState.commit`` -> ``CachingStateHandler.extend``). What is left out
is the runner's side (gRPC, Flink's state backend), whose cost per bundle follows the bytes
sent.

First every key gets a window (the fill), then bundles of ``--touched`` messages on random
keys are timed. Flat figures from 10,000 to 1,000,000 keys are what the state layout of
``transforms/windowstate.py`` is for.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

import orjson

from liveagg.loader import parse_view
from liveagg.transforms.streaming import _Route, window_operator
from liveagg.transforms.windowstate import BucketCoder

VIEW = parse_view(
    {
        "name": "counts",
        "event_time": {"field": "t", "format": "epoch_s"},
        "grouping_cols": ["k"],
        "window": {"size": "1h"},
        "allowed_lateness": "1h",
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "n"},
            {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "total"},
        ],
    }
)


class CachedCell:
    """A bag state cell behind the SDK's state cache; counts the bytes a commit sends
    (``sent``) and the bytes the runner's state then holds for the cell (``held``)."""

    coder = BucketCoder()

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.sent = 0
        self.held = 0

    def read(self) -> list[Any]:
        return self.parts

    def add(self, value: Any) -> None:
        self.parts.append(value)
        size = len(self.coder.encode(value))
        self.sent += size
        self.held += size

    def clear(self) -> None:
        self.parts = []
        self.held = 0


class NoTimers:
    def set(self, *args: Any, **kwargs: Any) -> None:
        pass

    def clear(self, *args: Any, **kwargs: Any) -> None:
        pass


def _bundle(router: _Route, lines: list[bytes]) -> list[Any]:
    router.start_bundle()
    out = [o for line in lines for o in router.process(line)]
    out += list(router.finish_bundle())
    return [o.value.value for o in out if o.tag != "dead_letter"]


def measure(keys: int, touched: int, bundles: int, seed: int = 7) -> dict[str, Any]:
    router, operator = _Route([VIEW]), window_operator(VIEW)
    router.setup()
    operator.setup()
    cells: dict[tuple, CachedCell] = {}
    timers = NoTimers()

    def run(elements: list[Any]) -> None:
        for state_key, items in elements:
            cell = cells.setdefault(state_key, CachedCell())
            for _ in operator._process((state_key, items), cell, timers, None):
                pass

    def lines(ks: list[int]) -> list[bytes]:
        return [orjson.dumps({"k": f"k{k}", "t": 1800, "v": 1}) for k in ks]

    for start in range(0, keys, 10_000):  # the fill: every key opens its window
        run(_bundle(router, lines(list(range(start, min(keys, start + 10_000))))))
    rng = random.Random(seed)
    route_s = operator_s = 0.0
    sent = sum(cell.sent for cell in cells.values())
    for _ in range(bundles):
        batch = lines([rng.randrange(keys) for _ in range(touched)])
        t0 = time.process_time()
        elements = _bundle(router, batch)
        t1 = time.process_time()
        run(elements)
        route_s += t1 - t0
        operator_s += time.process_time() - t1
    sent = sum(cell.sent for cell in cells.values()) - sent
    return {
        "live_keys": keys,
        "cells": len(cells),
        "bundles": bundles,
        "messages_per_bundle": touched,
        "router_us_per_message": round(route_s / bundles / touched * 1e6, 2),
        "operator_us_per_message": round(operator_s / bundles / touched * 1e6, 2),
        "state_bytes_sent_per_bundle": round(sent / bundles),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", default="10000,100000,1000000")
    parser.add_argument("--touched", type=int, default=2_000, help="messages per bundle")
    parser.add_argument("--bundles", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = [
        measure(int(k), args.touched, args.bundles) for k in args.keys.split(",") if k.strip()
    ]
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    print("| live keys | router us/message | operator us/message | state bytes sent/bundle |")
    print("|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['live_keys']:,} | {r['router_us_per_message']} | "
            f"{r['operator_us_per_message']} | {r['state_bytes_sent_per_bundle']:,} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
