"""The Kafka read through liveagg, this build beside another checkout's: CPU per event.

A backlog of ``--events`` benchmark events is put once on a 4-partition topic (round-robin,
as the Flink benchmark does), then read by ``liveagg run --kafka-topic`` with the three
basic views, by this build and by the checkout given with ``--baseline-repo`` (its own
``.venv``), alternating, ``--runs`` times each:

* ``bounded``: the DirectRunner's bounded path, up to the end offsets seen at start;
* ``prism``: ``--runner prism --unbounded --max-records N``, the streaming window operator
  on Beam's Prism runner (this repository's build of it), as the Flink job runs it.

CPU is that of ``liveagg run`` and its children (Prism included), start-up included; Kafka's
is not counted. Each run reads from the earliest offset with a consumer group of its own,
and the rows per view must be the same in both builds (``benchmarks.compare``).

    .venv/bin/python -m benchmarks.kafka_read --events 300000 --baseline-repo ../prev
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import tempfile
import uuid
from pathlib import Path

from benchmarks import compare, generate
from benchmarks.harness import PYTHON, ROOT, measure
from benchmarks.run import CACHE
from benchmarks.systems._views import plain_views
from benchmarks.systems.kafka_topic import create_topic, lines, produce
from integration import services
from integration.services import prism

VIEWS = ROOT / "benchmarks" / "views" / "basic"
PARTITIONS = 4
MODES = ("bounded", "prism")


def _command(python: Path, mode: str, topic: str, events: int, out: Path) -> list[str]:
    bootstrap = services.connection("kafka").bootstrap_servers
    cmd = [str(python), "-m", "liveagg.cli", "run", "--views", str(VIEWS)]
    cmd += ["--kafka-topic", topic, "--kafka-bootstrap", bootstrap, "--kafka-start", "earliest"]
    cmd += ["--kafka-group-id", f"bench-{uuid.uuid4().hex[:8]}", "--output", str(out)]
    if mode == "prism":
        cmd += ["--runner", "prism", "--unbounded", "--max-records", str(events)]
        cmd += ["--idle-timeout-s", "1", "--prism-location", str(prism.ensure_binary())]
    return cmd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-repo", type=Path, required=True)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    handle = services.ensure("kafka")
    try:
        _bench(args.events, args.runs, args.baseline_repo.resolve(), args.modes.split(","))
    finally:
        services.release(handle)


def _bench(events: int, runs: int, baseline: Path, modes: list[str]) -> None:
    dataset = generate.write(CACHE / f"events-{events}.jsonl", events)
    topic = f"bench-read-{uuid.uuid4().hex[:8]}"
    bootstrap = services.connection("kafka").bootstrap_servers
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, lines(dataset), partitions=PARTITIONS)
    builds = {
        "this build": (Path(PYTHON), ROOT),
        "baseline": (baseline / ".venv" / "bin" / "python", baseline),
    }
    scratch = Path(tempfile.mkdtemp(prefix="kafka-read-"))
    print(f"{events:,} events on topic {topic}; baseline {baseline}")
    print("| mode | build | CPU s (runs) | median | events/CPU-s | wall s (median) |")
    print("|---|---|---|---:|---:|---:|")
    try:
        for mode in modes:
            cpu: dict[str, list[float]] = {name: [] for name in builds}
            wall: dict[str, list[float]] = {name: [] for name in builds}
            outputs: dict[str, Path] = {}
            for run, name in itertools.product(range(runs), builds):
                python, cwd = builds[name]
                out = scratch / f"{mode}-{name.replace(' ', '-')}-{run}"
                m = measure(_command(python, mode, topic, events, out), cwd=cwd)
                cpu[name].append(m.cpu_s)
                wall[name].append(m.wall_s)
                outputs[name] = out
            found = [
                difference
                for view in plain_views(VIEWS)
                for difference in compare.differences(
                    outputs["this build"], outputs["baseline"], view
                )
            ]
            for name in builds:
                median = statistics.median(cpu[name])
                runs_text = ", ".join(f"{x:.1f}" for x in cpu[name])
                print(
                    f"| {mode} | {name} | {runs_text} | {median:.1f} | {events / median:,.0f} "
                    f"| {statistics.median(wall[name]):.1f} |"
                )
            print(f"rows of the two builds ({mode}): {'the same' if not found else found[:5]}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
