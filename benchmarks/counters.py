"""Running counters against the same aggregations in fixed windows, and state-TTL churn.

    python -m benchmarks.counters                          # 1M events, 3M churn events
    python -m benchmarks.counters --repeat 3 --events 1000000 --churn-events 3000000
    python -m benchmarks.counters --only streaming-churn --churn-events 3000000

**Counters.** liveagg on the DirectRunner, bounded input, over the events of
:mod:`benchmarks.generate` (its ``user`` field stands for a post: about a million keys,
Zipf-skewed): ``views/counters/global`` (a global window with ``emit.eager``, ``state_ttl``
and milestones at 10 to 100,000) against ``views/counters/fixed`` (the same aggregations per
post and hour). Target: the running counters at no less than 80% of the fixed windows' events
per CPU-second. Both runs' totals per post must agree, or the run fails.

**Churn.** Millions of events over a million keys, each key active for a moment of a 30-day
span (:func:`write_churn`), through a global view with ``state_ttl`` 1h and one whose TTL
outlives the data (36500d: never), on the bounded path: its watermark reaches the end only
after all input, so no key leaves state early and both rows hold every key to the end, by
design. TTL eviction itself is the streaming window operator's (docs/semantics.md, "On
the streaming path"): the streaming rows run the same views through it, driven in one
process as on an unbounded read (:mod:`benchmarks.streaming_churn`), and report its live
keys and the bytes its state holds as the stream goes on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from benchmarks import generate
from benchmarks.harness import PYTHON, ROOT, Result, measure
from benchmarks.run import CACHE, machine, publish
from benchmarks.systems import Context, liveagg_direct

VIEWS = ROOT / "benchmarks" / "views" / "counters"
#: Running counters should reach at least this share of fixed windows' events per CPU-second.
TARGET = 0.80
CHURN_KEYS = 1_000_000
CHURN_SPAN = timedelta(days=30)
CHURN_START = datetime(2024, 3, 1, tzinfo=UTC)
CHURN_VIEW: dict[str, Any] = {
    "event_time": {"field": "ts", "format": "epoch_ms"},
    "grouping_cols": ["post"],
    "window": {"type": "global"},
    "emit": {"early": "10s"},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "likes"},
        {"aggregation": "sum", "col_name": "weight", "aggregated_col_name": "weight"},
    ],
}
#: The churn views: the TTL that evicts, and one that never does.
CHURN_TTLS = {"ttl_1h": "1h", "ttl_never": "36500d"}


def totals(folder: Path) -> dict[str, tuple[int, int]]:
    """(events, bytes) per post over a view's rows, summed over its windows."""
    out: dict[str, list[int]] = {}
    for path in folder.glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            row = orjson.loads(line)
            total = out.setdefault(row["user"], [0, 0])
            total[0] += row["events"]
            total[1] += row["total_bytes"] or 0
    return {k: (v[0], v[1]) for k, v in out.items()}


def milestones(out: Path, view: str) -> int:
    path = out / "_milestones" / f"{view}.jsonl"
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def _median(runs: list[Result]) -> Result:
    chosen = sorted(runs, key=lambda r: r.cpu_s)[(len(runs) - 1) // 2]
    if len(runs) > 1:
        chosen.extra["cpu_s_runs"] = [round(r.cpu_s, 1) for r in runs]
    return chosen


def counters(dataset: Path, events: int, repeat: int, work: Path) -> tuple[Result, Result]:
    """The running counters and the fixed windows on ``dataset`` (``events`` lines of
    :mod:`benchmarks.generate`), ``repeat`` times in turn; the median run of each by CPU.
    Raises ``SystemExit`` when their totals per post differ."""
    runs: dict[str, list[Result]] = {"global": [], "fixed": []}
    for turn in range(repeat):
        for name in runs:
            print(f"counters: {name}, {events:,} events ({turn + 1}/{repeat}) ...", file=sys.stderr)
            result = liveagg_direct.run(Context(dataset, events, work / name, VIEWS / name))
            result.system = f"liveagg-direct {name}"
            runs[name].append(result)
    running, fixed = _median(runs["global"]), _median(runs["fixed"])
    out_global, out_fixed = Path(running.output), Path(fixed.output)
    if totals(out_global / "running_counters") != totals(out_fixed / "fixed_counters"):
        raise SystemExit("running counters and fixed windows disagree on totals per post")
    running.extra["milestones"] = milestones(out_global, "running_counters")
    running.extra["keys"] = running.rows["running_counters"]
    fixed.extra["keys_x_hours"] = fixed.rows["fixed_counters"]
    return running, fixed


def write_churn(path: Path, events: int, keys: int = CHURN_KEYS) -> Path:
    """``events`` likes over ``keys`` posts: event ``i`` is post ``i * keys // events``, at an
    even pace over :data:`CHURN_SPAN`, so each post is liked a few times in a row and never
    again: a state that only TTL keeps small."""
    stamp = path.with_suffix(path.suffix + ".meta")
    meta = f"churn {events} {keys} {CHURN_SPAN} {CHURN_START.isoformat()}\n"
    if path.exists() and stamp.exists() and stamp.read_text() == meta:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    start_ms = int(CHURN_START.timestamp() * 1000)
    step_ms = CHURN_SPAN / timedelta(milliseconds=1) / events
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        for first in range(0, events, 100_000):
            lines = [
                b'{"ts":%d,"post":"p%07d","weight":%d}'
                % (start_ms + int(i * step_ms), i * keys // events, i % 7)
                for i in range(first, min(first + 100_000, events))
            ]
            out.write(b"\n".join(lines) + b"\n")
    tmp.replace(path)
    stamp.write_text(meta)
    return path


def _churn_views(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    views = [CHURN_VIEW | {"name": name, "state_ttl": ttl} for name, ttl in CHURN_TTLS.items()]
    for name, view in zip(CHURN_TTLS, views, strict=True):
        (folder / f"{name}.json").write_text(json.dumps(view))
    return folder


def churn(dataset: Path, events: int, work: Path) -> list[Result]:
    """Each churn view alone on ``dataset`` (:func:`write_churn`), on the bounded path."""
    views = _churn_views(work / "churn-views")
    out = []
    for name in CHURN_TTLS:
        print(f"churn: {name}, {events:,} events ...", file=sys.stderr)
        target = work / f"churn-{name}"
        shutil.rmtree(target, ignore_errors=True)
        cmd = [PYTHON, "-m", "liveagg.cli", "run", "--views", str(views / f"{name}.json")]
        m = measure([*cmd, "--input", str(dataset), "--output", str(target)])
        rows = sum(1 for f in (target / name).glob("*.jsonl") for _ in f.open("rb"))
        result = Result(f"liveagg-direct bounded {name}", events, m.wall_s, m.cpu_s, m.peak_rss_mb)
        result.rows = {name: rows}
        result.extra["state_ttl"] = CHURN_TTLS[name]
        out.append(result)
    return out


def streaming_churn(dataset: Path, events: int, work: Path) -> list[Result]:
    """Each churn view alone on ``dataset`` through the streaming window operator
    (:mod:`benchmarks.streaming_churn`): its CPU and peak memory, and its live keys and
    state bytes at their peak and at the end of the input."""
    views = _churn_views(work / "churn-views")
    out = []
    for name in CHURN_TTLS:
        print(f"churn: {name}, streaming operator, {events:,} events ...", file=sys.stderr)
        cmd = [PYTHON, "-m", "benchmarks.streaming_churn", "--input", str(dataset)]
        m = measure([*cmd, "--view", str(views / f"{name}.json")])
        report = json.loads(m.stdout)
        result = Result(
            f"liveagg operator streaming {name}", events, m.wall_s, m.cpu_s, m.peak_rss_mb
        )
        result.rows = {name: report["rows"]}
        result.extra["state_ttl"] = CHURN_TTLS[name]
        for what in ("live_keys", "state_bytes"):
            result.extra[f"{what} peak"] = f"{report[f'{what}_peak']:,}"
            result.extra[f"{what} end"] = f"{report[f'{what}_end']:,}"
        result.extra["timer firings"] = f"{report['timer_firings']:,}"
        result.extra["timer rounds per advance, max"] = report["timer_rounds_max"]
        result.extra["samples"] = report["samples"]
        out.append(result)
    return out


def table(rows: list[Result], ratio: float | None) -> str:
    lines = [
        "| run | events | wall s | CPU s | events/CPU-s | CPU-us/event | rows | peak MiB | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        notes = "; ".join(f"{k}: {v}" for k, v in r.extra.items() if k != "samples")
        lines.append(
            f"| {r.system} | {r.events:,} | {r.wall_s:.1f} | {r.cpu_s:.1f} | "
            f"{r.events_per_cpu_s:,.0f} | {r.us_per_event:.1f} | {sum(r.rows.values()):,} | "
            f"{r.peak_rss_mb:,.0f} | {notes} |"
        )
    if ratio is not None:
        verdict = "met" if ratio >= TARGET else "missed"
        lines.append(
            f"\nrunning counters / fixed windows, events per CPU-second: {ratio:.2f} "
            f"(target >= {TARGET:.2f}: {verdict})"
        )
    return "\n".join(lines)


PARTS = ("counters", "churn", "streaming-churn")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--churn-events", type=int, default=3_000_000, help="0: no churn rows")
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run only this part (repeatable)"
    )
    parser.add_argument("--json", type=Path, default=CACHE / "counters.json")
    args = parser.parse_args(argv)
    parts = set(args.only or PARTS)
    if not args.churn_events:
        parts -= {"churn", "streaming-churn"}
    work = CACHE / "work" / "counters"
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    printed = []
    if "counters" in parts:
        dataset = generate.write(CACHE / f"events-{args.events}.jsonl", args.events)
        running, fixed = counters(dataset, args.events, args.repeat, work)
        ratio = running.events_per_cpu_s / fixed.events_per_cpu_s
        report |= {
            "counters": [running.to_json(), fixed.to_json()],
            "ratio": round(ratio, 3),
            "target": TARGET,
            "target_met": ratio >= TARGET,
        }
        printed.append(
            f"## running counters against fixed windows\n\n{table([running, fixed], ratio)}"
        )
    if parts & {"churn", "streaming-churn"}:
        churn_data = write_churn(CACHE / f"churn-{args.churn_events}.jsonl", args.churn_events)
    if "churn" in parts:
        rows = churn(churn_data, args.churn_events, work)
        report["churn"] = [r.to_json() for r in rows]
        printed.append(f"## state TTL churn (bounded)\n\n{table(rows, None)}")
    if "streaming-churn" in parts:
        streaming = streaming_churn(churn_data, args.churn_events, work)
        report["churn_streaming"] = [r.to_json() for r in streaming]
        printed.append(f"## state TTL churn (streaming operator)\n\n{table(streaming, None)}")
    publish(report, printed, args.json)


if __name__ == "__main__":
    main()
