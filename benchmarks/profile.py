"""Where liveagg's time goes on the DirectRunner: py-spy samples grouped into stages.

    python -m benchmarks.profile --events 300000
    python -m benchmarks.profile --events 1000000 --views-set rich

Runs ``liveagg run`` on a set of the benchmark views (``basic`` by default) under
``py-spy record`` (all threads) and sorts every sample into the first stage its stack
reaches, innermost frame first, so that each sample counts once.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks import generate
from benchmarks.harness import PYTHON, ROOT, VIEW_SETS

#: (stage, substrings of a frame that place a sample in it), tried from the innermost frame.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "read files",
        ("_ReadRange", "read_range", "ReadFromText", "textio.py", "sources/files", "engine/lines"),
    ),
    (
        "decode JSON",
        (
            "orjson.loads",
            "_add_batch.<locals>.<listcomp>",
            "decode (transforms/plan",
            "exact (transforms/plan",
            "long_digits (transforms",
            "read_table (engine/columns",  # Arrow's JSON reader runs in this frame
            "misread (engine/columns",  # the bytes Arrow's reader would misread
            "message_lines (engine/columns",
            "_loads (engine/columns",
            "Decoder._fast (engine/columns",
            "Decoder.decode (engine/columns",
        ),
    ),
    (
        "event time",
        (
            "event_time",
            "eventtime.py",
            "Decoder._times",
            "column_times",
            "zulu_times",
            "_cast_times",
        ),
    ),
    (
        "extract columns",
        (
            "extract_batch",
            "extract (transforms",
            "route ",
            "fields.py",
            "(engine/columns",
            "concat_inputs",
        ),
    ),
    (
        "encode partials",
        (
            "ViewCombineFn.encode",
            "_encoded (transforms",
            "encode_key (",
            "shuffle.py",
            "ViewAggregator.dumps",
            "ViewAggregator.shard",
        ),
    ),
    ("extract results", ("ViewAggregator.extract",)),
    (
        "pre-aggregate",
        (
            "_PreAggregate",
            "add_inputs",
            "add_input",
            "ViewAggregator.preaggregate",
            "ViewAggregator._batch_states",
            "ViewAggregator._sessions",
            "ViewAggregator.rollup",
            "ViewAggregator._rollup_one",
            "ViewAggregator._reduce",
        ),
    ),
    (
        "merge partials",
        (
            "_MergeShard",
            "merge_accumulators",
            "ViewCombineFn.decode",
            "Merge",
            "ViewAggregator.merge",
            "ViewAggregator.loads",
        ),
    ),
    ("rows and files", ("ViewPlan.row", "sinks/files", "_Rows")),
    ("startup: imports", ("<frozen importlib", "_find_and_load")),
    ("startup: build pipeline", ("Pipeline.__init__", "compile.py", "to_runner_api", "loader")),
)


#: Innermost frames of a thread that waits: py-spy's idle filter lets some through.
WAITING = ("Condition.wait (", "Event.wait (", "Thread.run (threading.py", "_serve (")


def stage_of(stack: str) -> str:
    frames = stack.split(";")
    if not frames[-1].strip() or frames[-1].startswith(WAITING):
        return WAIT
    for frame in reversed(frames):
        for stage, needles in STAGES:
            if any(n in frame for n in needles):
                return stage
    return "Beam runner and threads"


WAIT = "waiting"


def summarize(raw: Path) -> tuple[list[tuple[str, float]], float]:
    """Share of the busy samples per stage, largest first, from py-spy's ``--format raw``
    output; and the share of all samples that were threads waiting, left out of the rest."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[stage_of(stack)] += int(n)
    waiting = counts.pop(WAIT, 0)
    busy = sum(counts.values()) or 1
    shares = [(stage, 100 * n / busy) for stage, n in counts.most_common()]
    return shares, 100 * waiting / (busy + waiting)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--views-set", choices=sorted(VIEW_SETS), default="basic")
    parser.add_argument("--raw", type=Path, help="summarize this py-spy raw file instead")
    args = parser.parse_args(argv)
    raw = args.raw
    if raw is None:
        dataset = generate.write(
            ROOT / ".cache" / "bench" / f"events-{args.events}.jsonl", args.events
        )
        work = Path(tempfile.mkdtemp(prefix="liveagg-profile-"))
        raw = work / "profile.txt"
        views = str(VIEW_SETS[args.views_set])
        cmd = [PYTHON, "-m", "liveagg.cli", "run", "--views", views, "--input", str(dataset)]
        subprocess.run(
            [
                str(Path(PYTHON).parent / "py-spy"),
                "record",
                "-f",
                "raw",
                "-r",
                "100",
                "-o",
                str(raw),
                "--",
                *cmd,
                "--output",
                str(work / "out"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    shares, waiting = summarize(raw)
    print("| stage | share of busy samples |\n|---|---:|")
    for stage, share in shares:
        print(f"| {stage} | {share:.1f}% |")
    print(f"\n{waiting:.1f}% of all samples were threads waiting, left out above")
    print(f"\nraw samples: {raw}", file=sys.stderr)


if __name__ == "__main__":
    main()
