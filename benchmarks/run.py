"""Run the benchmark: every system on the same generated events, one table, one JSON file.

    python -m benchmarks.run                      # 1M events, the systems that need no service
    python -m benchmarks.run --events 200000 --systems liveagg,beam,duckdb,flink,quix

Each system runs in its own processes, one after another, so that CPU seconds and peak
memory are its own. Ratios are to liveagg on the DirectRunner (events per CPU-second).
Rows per view must agree between liveagg, plain Beam and DuckDB, or the run fails: a fast
wrong answer is not a result.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import generate
from benchmarks.harness import ROOT, VIEWS, Result
from benchmarks.systems import Context

SYSTEMS = {
    "liveagg": "benchmarks.systems.liveagg_direct",
    "beam": "benchmarks.systems.beam_plain",
    "duckdb": "benchmarks.systems.duckdb_sql",
    "flink": "benchmarks.systems.liveagg_flink",
    "quix": "benchmarks.systems.quix",
}
#: Systems whose rows come from the same file and must match row for row in count.
FILE_SYSTEMS = ("liveagg-direct", "beam-plain", "duckdb-1-thread")
CACHE = ROOT / ".cache" / "bench"


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def table(results: list[Result], base: Result | None) -> str:
    """A Markdown table; ratio = events per CPU-second relative to liveagg's."""
    head = (
        "| system | events | wall s | CPU s | events/s | events/CPU-s | vs liveagg | "
        "peak MiB | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [head]
    for r in results:
        ratio = (
            f"{r.events_per_cpu_s / base.events_per_cpu_s:.2f}x"
            if base and base.events_per_cpu_s
            else ""
        )
        notes = "; ".join(f"{k}: {_short(v)}" for k, v in r.extra.items())
        lines.append(
            f"| {r.system} | {r.events:,} | {r.wall_s:.1f} | {r.cpu_s:.1f} | "
            f"{r.events_per_s:,.0f} | {r.events_per_cpu_s:,.0f} | {ratio} | "
            f"{r.peak_rss_mb:,.0f} | {notes} |"
        )
    return "\n".join(lines)


def _short(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def check_rows(results: list[Result]) -> None:
    """Rows per view must agree between the systems that read the same file."""
    by_system = {r.system: r.rows for r in results if r.system in FILE_SYSTEMS}
    if len({json.dumps(rows, sort_keys=True) for rows in by_system.values()}) > 1:
        raise SystemExit(f"systems disagree on rows per view: {by_system}")


def memory_scaling(events: int, views: Path) -> list[Result]:
    """liveagg on 1/4, 1/2 and all of the events, drawn from the same keys and time span."""
    from benchmarks.systems import liveagg_direct

    out = []
    for n in (events // 4, events // 2, events):
        dataset = generate.write(CACHE / f"events-{n}.jsonl", n)
        out.append(liveagg_direct.run(Context(dataset, n, CACHE / "work", views)))
    return out


def scaling_table(results: list[Result]) -> str:
    """Peak memory against events and against live (key, window) pairs (= output rows)."""
    lines = [
        "| events | (key, window) pairs | peak MiB | MiB per 100,000 pairs |",
        "|---:|---:|---:|---:|",
    ]
    for r in results:
        pairs = sum(r.rows.values())
        lines.append(
            f"| {r.events:,} | {pairs:,} | {r.peak_rss_mb:,.0f} | "
            f"{r.peak_rss_mb / pairs * 100_000:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--systems", default="liveagg,beam,duckdb")
    parser.add_argument("--views", type=Path, default=VIEWS)
    parser.add_argument("--rate", type=int, default=50_000, help="paced runs on Kafka")
    parser.add_argument("--json", type=Path, default=CACHE / "results.json")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="also run liveagg on 1/4 and 1/2 of the events (same keys and time span): "
        "peak memory against events and against (key, window) pairs",
    )
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    dataset = generate.write(CACHE / f"events-{args.events}.jsonl", args.events)
    ctx = Context(dataset, args.events, CACHE / "work", args.views, args.rate)
    results: list[Result] = []
    try:
        for name in names:
            print(f"running {name} on {args.events:,} events ...", file=sys.stderr, flush=True)
            module = importlib.import_module(SYSTEMS[name])
            results.append(module.run(ctx))
    finally:
        if {"flink", "quix"} & set(names):  # stop the services this run started
            from integration import services

            services.stop_started()
    check_rows(results)
    base = next((r for r in results if r.system == "liveagg-direct"), None)
    scaling = memory_scaling(args.events, args.views) if args.scaling else []
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "events": args.events,
        "views": sorted(p.stem for p in args.views.glob("*.json")),
        "results": [r.to_json() for r in results],
        "memory_scaling": [r.to_json() for r in scaling],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results, base))
    if scaling:
        print("\n" + scaling_table(scaling))
    print(f"\n{report['machine']}\nJSON: {args.json}")


if __name__ == "__main__":
    main()
