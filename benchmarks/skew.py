"""Key skew on Kafka partitions: one-level (keyed by org) against two-level liveagg.

    python -m benchmarks.skew --events 100000 [--partitions 8] [--json]

A keyed pipeline partitions by its grouping key (as Kafka Streams' repartition topic does),
so with Zipf-skewed orgs one partition carries much more than the mean, and that partition's
consumer bounds the job. Two levels read the events round-robin (balanced), aggregate per
bundle and send partials keyed by view + window + key, which balance too. This run measures
both topologies' partition balance (max/mean messages) and cost on the same events, and fails
unless both give the same rows.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks import generate
from benchmarks.harness import PYTHON, VIEWS, Measured, measure
from benchmarks.run import CACHE, machine
from benchmarks.systems import kafka_topic

VIEW = VIEWS / "org_traffic.json"
GROUP = "org"  # org_traffic's grouping column, the key a one-level pipeline partitions by
EXACT = ("requests", "total_bytes")  # count and sum; unique_users is a HyperLogLog estimate


@dataclass
class Row:
    """One table row: a pipeline step, the topic it reads, that topic's balance and cost."""

    pipeline: str
    topic: str
    counts: list[int]  # messages per partition of ``topic``
    wall_s: float
    cpu_s: float
    events: int

    @property
    def max_over_mean(self) -> float:
        mean = sum(self.counts) / len(self.counts) if self.counts else 0
        return max(self.counts) / mean if mean else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "max_over_mean": round(self.max_over_mean, 3)}


def org_key(message: bytes) -> bytes:
    """The key a keyed pipeline partitions an event by: its org."""
    return json.loads(message)[GROUP].encode()


def partition_counts(bootstrap: str, topic: str) -> list[int]:
    """Messages per partition (high - low watermark), without consuming anything."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"skew-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        counts = []
        for p in sorted(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            counts.append(high - low)
        return counts
    finally:
        consumer.close()


def liveagg(args: list[str], out: Path | None, bootstrap: str) -> Measured:
    """One liveagg step on the DirectRunner, timed; a fresh consumer group every time."""
    cmd = [PYTHON, "-m", "liveagg.cli", *args, "--views", str(VIEW), "--kafka-start", "earliest"]
    cmd += ["--kafka-group-id", f"skew-{uuid.uuid4().hex}"]
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
        cmd += ["--output", str(out)]
    return measure(cmd, env={"LIVEAGG_KAFKA_BOOTSTRAP": bootstrap})


def rows(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """org_traffic's rows by (window_start, org); a second pane of a key is an error here."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((out / "org_traffic").glob("*.jsonl")):
        for line in path.open("rb"):
            row = json.loads(line)
            key = (row["window_start"], row[GROUP])
            if key in found:
                raise SystemExit(f"{out}: two rows for {key}")
            found[key] = row
    dead = out / "_dead_letter"
    if dead.exists() and any(line for f in dead.rglob("*") if f.is_file() for line in f.open()):
        raise SystemExit(f"{out}: dead letters in {dead}")
    return found


def check_same(one: dict[tuple[str, str], dict[str, Any]], two: dict[tuple[str, str], Any]) -> None:
    """Two-level rows must be one-level rows: same keys, equal counts and sums, close means."""
    if one.keys() != two.keys():
        missing, extra = sorted(one.keys() - two.keys()), sorted(two.keys() - one.keys())
        raise SystemExit(f"two-level keys differ: missing {missing[:5]}, extra {extra[:5]}")
    for key, row in one.items():
        other = two[key]
        if any(row[c] != other[c] for c in EXACT) or not math.isclose(
            row["mean_latency_ms"], other["mean_latency_ms"], rel_tol=1e-9
        ):
            raise SystemExit(f"two-level row differs for {key}: {row} != {other}")


def table(table_rows: list[Row]) -> str:
    lines = [
        "| pipeline | topic | partitions max/mean | max msgs | mean msgs | wall s | CPU s | "
        "events/s | events/CPU-s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table_rows:
        balance = (
            f"{r.max_over_mean:.2f} | {max(r.counts):,} | {sum(r.counts) / len(r.counts):,.0f}"
            if r.counts
            else " | | "
        )
        lines.append(
            f"| {r.pipeline} | {r.topic} | {balance} | {r.wall_s:.1f} | {r.cpu_s:.1f} | "
            f"{r.events / r.wall_s:,.0f} | {r.events / r.cpu_s:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--json", action="store_true", help=f"write {CACHE / 'skew.json'}")
    args = parser.parse_args(argv)
    from integration import services

    services.ensure("kafka")
    bootstrap = services.connection("kafka").bootstrap_servers
    dataset = generate.write(CACHE / f"events-{args.events}.jsonl", args.events)
    work = CACHE / "work" / "skew"
    run_id = uuid.uuid4().hex[:8]
    keyed, rr, inter = (f"skew-{run_id}-{t}" for t in ("keyed", "rr", "inter"))
    n, p = args.events, args.partitions
    try:
        print(f"one level: {n:,} events keyed by {GROUP} ...", file=sys.stderr, flush=True)
        kafka_topic.create_topic(bootstrap, keyed, p)
        kafka_topic.produce(
            bootstrap, keyed, kafka_topic.lines(dataset), partitions=args.partitions, key=org_key
        )
        m1 = liveagg(["run", "--kafka-topic", keyed], work / "one", bootstrap)
        one = Row("one level (keyed)", "input, keyed by org", [], m1.wall_s, m1.cpu_s, n)
        one.counts = partition_counts(bootstrap, keyed)

        print(f"two levels: {n:,} events round-robin ...", file=sys.stderr, flush=True)
        kafka_topic.create_topic(bootstrap, rr, p)
        kafka_topic.create_topic(bootstrap, inter, p)
        kafka_topic.produce(bootstrap, rr, kafka_topic.lines(dataset), partitions=p)
        m2 = liveagg(
            ["run", "--kafka-topic", rr, "--intermediate-topic", inter], work / "level1", bootstrap
        )
        m3 = liveagg(["rekey", "--intermediate-topic", inter], work / "two", bootstrap)
        level1 = Row("two levels: 1 (local)", "input, round-robin", [], m2.wall_s, m2.cpu_s, n)
        level1.counts = partition_counts(bootstrap, rr)
        level2 = Row("two levels: 2 (rekey)", "intermediate", [], m3.wall_s, m3.cpu_s, n)
        level2.counts = partition_counts(bootstrap, inter)
        both = Row("two levels: 1 + 2", "", [], m2.wall_s + m3.wall_s, m2.cpu_s + m3.cpu_s, n)
    finally:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        existing = admin.list_topics(timeout=10).topics
        doomed = [t for t in (keyed, rr, inter) if t in existing]
        for future in admin.delete_topics(doomed).values() if doomed else ():
            future.result()
        services.stop_started()  # only a Kafka this run started

    one_rows, two_rows = rows(work / "one"), rows(work / "two")
    check_same(one_rows, two_rows)
    requests = sum(r["requests"] for r in one_rows.values())
    if requests != n or sum(one.counts) != n or sum(level1.counts) != n:
        raise SystemExit(f"lost events: {requests} requests, {sum(one.counts)} keyed messages")
    result = [one, level1, level2, both]
    print(table(result))
    print(f"\n{len(one_rows):,} rows, equal in both; partials: {sum(level2.counts):,}")
    print(f"machine: {machine()}")
    if args.json:
        path = CACHE / "skew.json"
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "events": n,
            "partitions": p,
            "rows": len(one_rows),
            "results": [r.to_json() for r in result],
        }
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON: {path}")


if __name__ == "__main__":
    main()
