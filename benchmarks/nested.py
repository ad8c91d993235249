"""Nested messages against flat ones: the same events and views, fields moved into objects.

    python -m benchmarks.nested --events 1000000 --views-set rich [--baseline-repo ../prev]

Real telemetry is nested (``{"req": {"org": ...}, "resp": {"bytes": ...}}``) and views name
its fields by dotted paths (``"req.org"``). This writes the benchmark's events once more with
every field but the event time moved into two objects, and the view set once more with its
fields renamed to those paths, runs ``liveagg run`` on both (and on the nested pair with the
``--baseline-repo`` checkout), and prints CPU seconds and whether the rows agree: the nested
rows must be the flat rows, field for field.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import orjson

from benchmarks import compare, generate
from benchmarks.harness import PYTHON, ROOT, VIEW_SETS, measure
from benchmarks.systems._views import plain_views

#: Where each field of the benchmark's events goes in the nested copy.
PATHS = {
    "org": "req.org",
    "site": "req.site",
    "country": "req.geo.country",
    "user": "req.user",
    "url": "req.url",
    "status": "resp.status",
    "bytes": "resp.bytes",
    "latency_ms": "resp.latency_ms",
}


def nest(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in message.items():
        node = out
        *parents, leaf = PATHS.get(name, name).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def nest_file(flat: Path, nested: Path) -> Path:
    if nested.exists() and nested.stat().st_mtime >= flat.stat().st_mtime:
        return nested
    tmp = nested.with_suffix(".tmp")
    with flat.open("rb") as src, tmp.open("wb") as out:
        for line in src:
            out.write(orjson.dumps(nest(orjson.loads(line))) + b"\n")
    tmp.replace(nested)
    return nested


def nest_view(view: Any) -> Any:
    """The view with every field name renamed to its path (output names unchanged)."""
    if isinstance(view, dict):
        out = {}
        for key, value in view.items():
            if key in ("col_name", "field", "column") and isinstance(value, str):
                out[key] = PATHS.get(value, value)
            elif key == "grouping_cols":
                out[key] = [PATHS.get(v, v) for v in value]
            elif key == "grouping_sets":
                out[key] = [[PATHS.get(v, v) for v in s] for s in value]
            else:
                out[key] = nest_view(value)
        return out
    if isinstance(view, list):
        return [nest_view(v) for v in view]
    return view


def flatten_rows(nested: Path, flat: Path) -> Path:
    """A nested run's row files again under ``flat``, grouping values under flat names."""
    back = {path: name for name, path in PATHS.items()}
    for path in nested.glob("*/*.jsonl"):
        if path.parent.name.startswith("_"):
            continue
        out = flat / path.parent.name / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        renamed = [orjson.dumps({back.get(k, k): v for k, v in row.items()}) for row in rows]
        out.write_bytes(b"\n".join(renamed) + b"\n")
    return flat


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--views-set", choices=sorted(VIEW_SETS), default="rich")
    parser.add_argument("--baseline-repo", type=Path)
    args = parser.parse_args(argv)
    cache = ROOT / ".cache" / "bench"
    flat = generate.write(cache / f"events-{args.events}.jsonl", args.events)
    nested = nest_file(flat, cache / f"events-{args.events}-nested.jsonl")
    work = Path(tempfile.mkdtemp(prefix="liveagg-nested-"))
    views = work / "views"
    views.mkdir()
    for path in sorted(VIEW_SETS[args.views_set].glob("*.json")):
        (views / path.name).write_text(json.dumps(nest_view(json.loads(path.read_text()))))
    runs = [("flat", PYTHON, ROOT, VIEW_SETS[args.views_set], flat)]
    runs.append(("nested", PYTHON, ROOT, views, nested))
    if args.baseline_repo is not None:
        base = args.baseline_repo.resolve()
        python = str(base / ".venv" / "bin" / "python")
        runs.append(("nested, baseline", python, base, views, nested))
    print("| input | views | CPU s | events/CPU-s | rows agree with the flat run's |")
    print("|---|---|---:|---:|---|")
    for label, python, cwd, folder, data in runs:
        out = work / label.replace(", ", "-")
        cmd = [python, "-m", "liveagg.cli", "run", "--views", str(folder), "--input", str(data)]
        done = measure([*cmd, "--output", str(out)], cwd=cwd)
        renamed = flatten_rows(out, work / f"{out.name}-flat") if folder == views else out
        problems = [
            problem
            for view in plain_views(VIEW_SETS[args.views_set])
            for problem in compare.differences(work / "flat", renamed, view)
        ]
        same = "yes" if not problems else f"NO: {problems[0]}"
        print(
            f"| {label} | {args.views_set} | {done.cpu_s:.1f} | "
            f"{args.events / done.cpu_s:,.0f} | {same} |"
        )


if __name__ == "__main__":
    main()
