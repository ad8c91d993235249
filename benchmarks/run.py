"""Run the benchmark: every system on the same generated events, one table, one JSON file.

    python -m benchmarks.run                      # 1M events, the basic views, no service
    python -m benchmarks.run --views-set rich,cube --systems liveagg,duckdb
    python -m benchmarks.run --events 200000 --systems liveagg,beam,duckdb,flink,quix
    python -m benchmarks.run --views-set rich --baseline-repo ../liveagg-before --repeat 3
    python -m benchmarks.run --views-set rich --systems liveagg --scaling --memory

Each system runs in its own processes, one after another, so that CPU seconds and peak
memory are its own. Ratios are to liveagg on the DirectRunner (events per CPU-second).
Rows per view must agree between liveagg, plain Beam and DuckDB (and the baseline build), and
so must their exact aggregates, or the run fails: a fast wrong answer is not a result.

View sets (``benchmarks/views/<set>/``): ``basic`` (the three cheap views of the first
tables), ``rich`` (distinct counts, quantiles, top-k, stddev, histogram, min/max/mean) and
``cube`` (8 grouping sets x 2 granularities); each set is measured on its own.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import compare, generate
from benchmarks.harness import ROOT, VIEW_SETS, Result
from benchmarks.systems import Context
from benchmarks.systems._views import plain_views

SYSTEMS = {
    "liveagg": "benchmarks.systems.liveagg_direct",
    "beam": "benchmarks.systems.beam_plain",
    "duckdb": "benchmarks.systems.duckdb_sql",
    "flink": "benchmarks.systems.liveagg_flink",
    "quix": "benchmarks.systems.quix",
}
LIVEAGG = "liveagg-direct"
BASELINE = "liveagg-baseline"
DUCKDB = "duckdb-1-thread"
#: Systems whose rows come from the same file and must match row for row.
FILE_SYSTEMS = (LIVEAGG, BASELINE, "beam-plain", DUCKDB)
#: What liveagg on the DirectRunner should reach per set: at most this multiple of
#: one-thread DuckDB's CPU, and (when set) at least this many events per CPU-second.
TARGETS: dict[str, tuple[float, int | None]] = {
    "basic": (2.5, 250_000),
    "rich": (2.0, 200_000),
    "cube": (2.5, None),
}
SCALING_EVENTS = (100_000, 300_000, 1_000_000, 3_000_000)
STARTUP_EVENTS = 1_000  # a run this small is (almost) all start-up
CACHE = ROOT / ".cache" / "bench"


def publish(report: dict[str, Any], printed: list[str], path: Path) -> None:
    """Write ``report`` as JSON to ``path`` and print the tables, then the machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print("\n\n".join(printed))
    print(f"\n{report['machine']}\nJSON: {path}")


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
        "| system | events | wall s | CPU s | events/s | events/CPU-s | CPU-us/event | "
        "vs liveagg | peak MiB | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
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
            f"{r.events_per_s:,.0f} | {r.events_per_cpu_s:,.0f} | {r.us_per_event:.1f} | "
            f"{ratio} | {r.peak_rss_mb:,.0f} | {notes} |"
        )
    return "\n".join(lines)


def _short(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def check_rows(results: list[Result]) -> None:
    """Rows per view must agree between the systems that read the same file."""
    by_system = {r.system: r.rows for r in results if r.system in FILE_SYSTEMS}
    if len({json.dumps(rows, sort_keys=True) for rows in by_system.values()}) > 1:
        raise SystemExit(f"systems disagree on rows per view: {by_system}")


def check_values(results: list[Result], views: Path) -> None:
    """Exact aggregates (and floats, nearly) must agree with liveagg's, row by row."""
    written = [r for r in results if r.system in FILE_SYSTEMS and r.output]
    if len(written) < 2:
        return
    reference = next((r for r in written if r.system == LIVEAGG), written[0])
    problems = [
        f"{reference.system} vs {r.system}: {problem}"
        for r in written
        if r is not reference
        for view in plain_views(views)
        for problem in compare.differences(Path(reference.output), Path(r.output), view)
    ]
    if problems:
        raise SystemExit("systems disagree on values:\n" + "\n".join(problems))


def _median(runs: list[Result]) -> Result:
    """The run with the median CPU time (the lower middle one of an even number); every
    run's CPU time in its notes."""
    chosen = sorted(runs, key=lambda r: r.cpu_s)[(len(runs) - 1) // 2]
    if len(runs) > 1:
        chosen.extra["cpu_s_runs"] = [round(r.cpu_s, 1) for r in runs]
    return chosen


def run_set(
    ctx: Context, names: list[str], baseline: Path | None, repeat: int
) -> tuple[list[Result], dict[str, str]]:
    """Every runnable system on one view set, ``repeat`` times in turn (the baseline build
    right beside liveagg, in alternating order); each system's median run by CPU."""
    runners: list[tuple[str, Callable[[Context], Result]]] = []
    skipped: dict[str, str] = {}
    for name in names:
        module = importlib.import_module(SYSTEMS[name])
        supports = getattr(module, "supports", None)
        reason = supports(ctx.views) if supports else None
        if reason:
            skipped[name] = reason
            print(f"skipping {name}: {reason}", file=sys.stderr, flush=True)
            continue
        runners.append((name, module.run))
        if name == "liveagg" and baseline is not None:
            from benchmarks.systems import liveagg_direct

            runners.append(("baseline", lambda c: liveagg_direct.run_checkout(c, baseline)))
    runs: dict[str, list[Result]] = {name: [] for name, _ in runners}
    for turn in range(repeat):
        order = list(runners)
        if turn % 2 and baseline is not None:  # the build that ran second now runs first
            order.sort(key=lambda item: item[0] != "baseline")
        for name, runner in order:
            print(
                f"running {name} on {ctx.views.name} views, {ctx.events:,} events "
                f"({turn + 1}/{repeat}) ...",
                file=sys.stderr,
                flush=True,
            )
            runs[name].append(runner(ctx))
    return [_median(runs[name]) for name, _ in runners], skipped


def summary(name: str, results: list[Result]) -> dict[str, Any]:
    """liveagg against DuckDB (and the baseline build) for one set, with the set's targets."""
    by = {r.system: r for r in results}
    out: dict[str, Any] = {}
    live, duck, before = by.get(LIVEAGG), by.get(DUCKDB), by.get(BASELINE)
    if live:
        out["liveagg_events_per_cpu_s"] = round(live.events_per_cpu_s)
        out["liveagg_peak_mib"] = round(live.peak_rss_mb)
    if duck:
        out["duckdb_events_per_cpu_s"] = round(duck.events_per_cpu_s)
        out["duckdb_peak_mib"] = round(duck.peak_rss_mb)
    if live and duck:
        out["liveagg_over_duckdb_cpu"] = round(live.cpu_s / duck.cpu_s, 2)
    if before:
        out["baseline_events_per_cpu_s"] = round(before.events_per_cpu_s)
        if duck:
            out["baseline_over_duckdb_cpu"] = round(before.cpu_s / duck.cpu_s, 2)
        if live:
            out["baseline_over_liveagg_cpu"] = round(before.cpu_s / live.cpu_s, 2)
    if name in TARGETS:
        ratio, rate = TARGETS[name]
        out["target_over_duckdb_cpu"] = ratio
        if "liveagg_over_duckdb_cpu" in out:
            out["ratio_target_met"] = out["liveagg_over_duckdb_cpu"] <= ratio
        if rate is not None:
            out["target_events_per_cpu_s"] = rate
            if live:
                out["rate_target_met"] = live.events_per_cpu_s >= rate
    return out


def summary_table(summaries: dict[str, dict[str, Any]]) -> str:
    """One line per set: liveagg against DuckDB and the baseline, with the targets."""

    def cell(s: dict[str, Any], key: str, unit: str = "") -> str:
        value = s.get(key)
        if value is None:
            return ""
        return f"{value:,.2f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"

    lines = [
        "| set | liveagg events/CPU-s | DuckDB events/CPU-s | liveagg/DuckDB CPU | target | "
        "baseline/DuckDB CPU | baseline/liveagg CPU | liveagg peak MiB | DuckDB peak MiB |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, s in summaries.items():
        target = ""
        if "target_over_duckdb_cpu" in s:
            target = f"<= {s['target_over_duckdb_cpu']}x"
            if "ratio_target_met" in s:
                target += " met" if s["ratio_target_met"] else " missed"
            if "target_events_per_cpu_s" in s:
                target += f"; >= {s['target_events_per_cpu_s']:,} events/CPU-s"
                if "rate_target_met" in s:
                    target += " met" if s["rate_target_met"] else " missed"
        lines.append(
            f"| {name} | {cell(s, 'liveagg_events_per_cpu_s')} | "
            f"{cell(s, 'duckdb_events_per_cpu_s')} | {cell(s, 'liveagg_over_duckdb_cpu', 'x')} | "
            f"{target} | {cell(s, 'baseline_over_duckdb_cpu', 'x')} | "
            f"{cell(s, 'baseline_over_liveagg_cpu', 'x')} | {cell(s, 'liveagg_peak_mib')} | "
            f"{cell(s, 'duckdb_peak_mib')} |"
        )
    return "\n".join(lines)


def _liveagg_runs(ctx: Context, baseline: Path | None) -> list[Result]:
    """liveagg (and the baseline build) on ``ctx``; their exact values must agree."""
    from benchmarks.systems import liveagg_direct

    out = [liveagg_direct.run(ctx)]
    if baseline is not None:
        out.append(liveagg_direct.run_checkout(ctx, baseline))
        check_rows(out)
        check_values(out, ctx.views)
    return out


def scaling(
    views: Path, sizes: list[int], work: Path, baseline: Path | None
) -> dict[str, list[Result]]:
    """liveagg on inputs of each size (same keys, same six hours), and on a tiny one for the
    start-up cost."""
    out: dict[str, list[Result]] = {"startup": [], "runs": []}
    for n in [STARTUP_EVENTS, *sizes]:
        print(f"scaling: {views.name} views, {n:,} events ...", file=sys.stderr, flush=True)
        dataset = generate.write(CACHE / f"events-{n}.jsonl", n)
        runs = _liveagg_runs(Context(dataset, n, work, views), baseline)
        out["startup" if n == STARTUP_EVENTS else "runs"].extend(runs)
    return out


def _pairs(r: Result) -> int:
    return sum(r.rows.values())


def scaling_table(runs: list[Result], startup: list[Result]) -> str:
    """Cost per event and peak memory against events, for liveagg (and the baseline)."""
    start = {r.system: r.cpu_s for r in startup}
    lines = [
        "| system | events | (key, window) pairs | CPU s | CPU-us/event | "
        "CPU-us/event after start-up | peak MiB | MiB per 100,000 pairs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in startup:
        lines.append(
            f"| {r.system} (start-up) | {r.events:,} | {_pairs(r):,} | {r.cpu_s:.1f} | | | "
            f"{r.peak_rss_mb:,.0f} | |"
        )
    for r in sorted(runs, key=lambda r: (r.system != LIVEAGG, r.events)):
        after = (r.cpu_s - start.get(r.system, 0.0)) / r.events * 1e6
        lines.append(
            f"| {r.system} | {r.events:,} | {_pairs(r):,} | {r.cpu_s:.1f} | "
            f"{r.us_per_event:.1f} | {after:.1f} | {r.peak_rss_mb:,.0f} | "
            f"{r.peak_rss_mb / max(_pairs(r), 1) * 100_000:,.0f} |"
        )
    return "\n".join(lines)


def repeated(source: Path, times: int) -> Path:
    """``source`` with each line written ``times`` times in a row: the same (key, window)
    pairs, the same event-time span and disorder, ``times`` as many events."""
    target = source.with_name(f"{source.stem}-x{times}.jsonl")
    stamp = target.with_suffix(".jsonl.meta")
    meta = f"{source.name} {source.stat().st_size} {source.stat().st_mtime_ns} x{times}\n"
    if target.exists() and stamp.exists() and stamp.read_text() == meta:
        return target
    tmp = target.with_suffix(".tmp")
    with source.open("rb") as lines, tmp.open("wb") as out:
        for line in lines:
            out.write(line * times)
    tmp.replace(target)
    stamp.write_text(meta)
    return target


def memory(views: Path, events: int, work: Path, baseline: Path | None) -> list[Result]:
    """Peak memory with the same (key, window) pairs and three times the events (each line
    three times), beside three times the events drawn afresh (as many pairs or more, and more
    distinct values)."""
    one = generate.write(CACHE / f"events-{events}.jsonl", events)
    inputs = [
        ("generated", one, events),
        ("each line 3 times", repeated(one, 3), 3 * events),
        ("generated", generate.write(CACHE / f"events-{3 * events}.jsonl", 3 * events), 3 * events),
    ]
    out = []
    for label, dataset, n in inputs:
        print(f"memory: {views.name} views, {n:,} events, {label} ...", file=sys.stderr)
        for r in _liveagg_runs(Context(dataset, n, work, views), baseline):
            r.extra["input"] = label
            out.append(r)
    return out


def memory_table(runs: list[Result]) -> str:
    lines = [
        "| system | input | events | (key, window) pairs | events per pair | CPU s | "
        "peak MiB | MiB per 100,000 pairs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        pairs = max(_pairs(r), 1)
        lines.append(
            f"| {r.system} | {r.extra['input']} | {r.events:,} | {pairs:,} | "
            f"{r.events / pairs:.1f} | {r.cpu_s:.1f} | {r.peak_rss_mb:,.0f} | "
            f"{r.peak_rss_mb / pairs * 100_000:,.0f} |"
        )
    return "\n".join(lines)


def _sets(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Path]:
    if args.views is not None:
        return {args.views.name: args.views}
    chosen = [s.strip() for s in args.views_set.split(",") if s.strip()]
    if chosen == ["all"]:
        chosen = list(VIEW_SETS)
    unknown = [s for s in chosen if s not in VIEW_SETS]
    if unknown or not chosen:
        parser.error(f"unknown view sets {unknown}; known: {', '.join(VIEW_SETS)}, all")
    return {s: VIEW_SETS[s] for s in chosen}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--systems", default="liveagg,beam,duckdb")
    parser.add_argument(
        "--views-set",
        default="basic",
        help=f"comma-separated view sets ({', '.join(VIEW_SETS)}) or all; each is measured "
        "on its own",
    )
    parser.add_argument("--views", type=Path, help="a folder of views instead of --views-set")
    parser.add_argument("--rate", type=int, default=50_000, help="paced runs on Kafka")
    parser.add_argument("--json", type=Path, default=CACHE / "results.json")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per system, in turn; the median is reported"
    )
    parser.add_argument(
        "--baseline-repo",
        type=Path,
        help="another checkout of liveagg with its own .venv (scripts/env.sh): its "
        "`liveagg run` is measured beside this one's as liveagg-baseline",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="also run liveagg on --scaling-events events (same keys and time span) and on "
        f"{STARTUP_EVENTS:,} for its start-up: cost per event and peak memory against events",
    )
    parser.add_argument(
        "--scaling-events", default=",".join(str(n) for n in SCALING_EVENTS), help="sizes"
    )
    parser.add_argument(
        "--scaling-set", help="the view set of --scaling and --memory (default: the first)"
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also run liveagg on --events events, on the same events with each line three "
        "times (same pairs, 3x events) and on 3x --events generated (fresh values): peak memory",
    )
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    sets = _sets(args, parser)
    if args.scaling_set and args.scaling_set not in {*sets, *VIEW_SETS}:
        parser.error(f"--scaling-set {args.scaling_set}: known: {', '.join(VIEW_SETS)}")
    baseline = args.baseline_repo.resolve() if args.baseline_repo else None
    if baseline is not None and not (baseline / ".venv" / "bin" / "python").exists():
        parser.error(f"--baseline-repo {baseline}: no .venv there; run its scripts/env.sh")
    dataset = generate.write(CACHE / f"events-{args.events}.jsonl", args.events)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "events": args.events,
        "repeat": args.repeat,
        "baseline_repo": str(baseline) if baseline else None,
        "sets": {},
    }
    printed: list[str] = []
    summaries: dict[str, dict[str, Any]] = {}
    try:
        for set_name, folder in sets.items():
            ctx = Context(dataset, args.events, CACHE / "work" / set_name, folder, args.rate)
            results, skipped = run_set(ctx, names, baseline, args.repeat)
            check_rows(results)
            check_values(results, folder)
            summaries[set_name] = summary(set_name, results)
            base = next((r for r in results if r.system == LIVEAGG), None)
            report["sets"][set_name] = {
                "views": sorted(v.name for v in plain_views(folder)),
                "results": [r.to_json() for r in results],
                "skipped": skipped,
                "summary": summaries[set_name],
            }
            skips = "".join(f"\n* {n} skipped: {why}" for n, why in skipped.items())
            printed.append(f"## {set_name}\n\n{table(results, base)}\n{skips}".rstrip())
    finally:
        if {"flink", "quix"} & set(names):  # stop the services this run started
            from integration import services

            services.stop_started()
    printed.append(f"## liveagg against one-thread DuckDB\n\n{summary_table(summaries)}")
    target = args.scaling_set or next(iter(sets))
    folder = sets.get(target) or VIEW_SETS[target]
    if args.scaling:
        sizes = [int(n) for n in args.scaling_events.split(",") if n.strip()]
        runs = scaling(folder, sizes, CACHE / "work" / "scaling", baseline)
        report["scaling"] = {
            "set": target,
            "startup": [r.to_json() for r in runs["startup"]],
            "results": [r.to_json() for r in runs["runs"]],
        }
        table_text = scaling_table(runs["runs"], runs["startup"])
        printed.append(f"## scaling ({target})\n\n{table_text}")
    if args.memory:
        runs_m = memory(folder, args.events, CACHE / "work" / "memory", baseline)
        report["memory"] = {"set": target, "results": [r.to_json() for r in runs_m]}
        printed.append(f"## memory ({target})\n\n{memory_table(runs_m)}")
    publish(report, printed, args.json)


if __name__ == "__main__":
    main()
