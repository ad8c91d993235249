"""liveagg on the DirectRunner from files: ``liveagg run --views ... --input ... --output ...``.

``run_checkout`` runs another checkout's build the same way (its own ``.venv``, its own
folder as the working directory, so that its editable install is the one imported): the
before/after of an engine change in one benchmark run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.harness import PYTHON, ROOT, Result, measure
from benchmarks.systems import Context

SYSTEM = "liveagg-direct"
BASELINE = "liveagg-baseline"


def run(ctx: Context) -> Result:
    return _run(ctx, Path(PYTHON), ROOT, SYSTEM, "liveagg")


def run_checkout(ctx: Context, checkout: Path) -> Result:
    """``liveagg run`` of the checkout at ``checkout``, with its ``.venv/bin/python``."""
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"{python}: the baseline checkout needs its .venv (scripts/env.sh)")
    result = _run(ctx, python, checkout, BASELINE, "liveagg-baseline")
    result.extra["checkout"] = str(checkout)
    return result


def _run(ctx: Context, python: Path, cwd: Path, system: str, scratch: str) -> Result:
    out = ctx.scratch(scratch)
    shutil.rmtree(out)
    cmd = [str(python), "-m", "liveagg.cli", "run", "--views", str(ctx.views)]
    m = measure([*cmd, "--input", str(ctx.dataset), "--output", str(out)], cwd=cwd)
    rows = {
        v.name: sum(1 for f in v.glob("*.jsonl") for _ in f.open("rb"))
        for v in out.iterdir()
        if v.is_dir() and not v.name.startswith("_")  # not _dead_letter/ nor _SUCCESS
    }
    result = Result(system, ctx.events, m.wall_s, m.cpu_s, m.peak_rss_mb, rows, output=str(out))
    dead = sum(1 for f in (out / "_dead_letter").glob("*.jsonl") for _ in f.open("rb"))
    if dead:
        result.extra["dead_letters"] = dead
    return result
