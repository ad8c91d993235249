"""liveagg on the DirectRunner from files: ``liveagg run --views ... --input ... --output ...``."""

from __future__ import annotations

import shutil

from benchmarks.harness import PYTHON, Result, measure
from benchmarks.systems import Context


def run(ctx: Context) -> Result:
    out = ctx.scratch("liveagg")
    shutil.rmtree(out)
    cmd = [PYTHON, "-m", "liveagg.cli", "run", "--views", str(ctx.views)]
    m = measure([*cmd, "--input", str(ctx.dataset), "--output", str(out)])
    rows = {
        v.name: sum(1 for f in v.glob("*.jsonl") for _ in f.open("rb"))
        for v in out.iterdir()
        if v.is_dir() and not v.name.startswith("_")  # not _dead_letter/ nor _SUCCESS
    }
    return Result("liveagg-direct", ctx.events, m.wall_s, m.cpu_s, m.peak_rss_mb, rows)
