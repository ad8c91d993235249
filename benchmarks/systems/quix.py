"""Quix Streams computing the benchmark views from the Kafka topic, as a Quix user would.

The application (its own process, ``--app``) reads the backlog with ``ts`` as event time,
re-keys each view with ``group_by`` (a repartition topic per view), aggregates in tumbling
windows with the view's lateness as grace, emits closed windows only (``.final()``) and
writes the rows to an output topic. State is in RocksDB with changelog topics (Quix's
defaults); at-least-once. ``count_distinct`` has no Quix built-in: it is exact, a set built
when the window closes from the values a ``Collector`` kept, not a HyperLogLog.

Quix closes windows only as later event times arrive, never at end of input. The harness
appends an end marker to every input partition; once all have been read (every event has
been re-keyed), the application sends a message past every window to each partition of each
repartition topic, and stops once all of those have been processed.

Quix has no watermark across partitions: a partition's window time is the latest event time
it has processed, so anything more than the grace behind it is dropped. The backlog is
therefore spread round-robin in small batches and read in small fetches, so that partitions
advance together as with a live source (see ``_produce_backlog``).

    python -m benchmarks.systems.quix --events 200000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import PYTHON, ROOT, Result, measure
from benchmarks.systems import Context
from benchmarks.systems._views import plain_only
from benchmarks.systems.kafka_topic import create_topic, lines, produce

PARTITIONS = 4
END = "_end"  # marks end markers and closing messages
BATCH = "25"  # events per producer batch and partition
CONSUMER = '{"max.partition.fetch.bytes": 4096}'  # about one batch per partition and fetch
UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}


def _ms(duration: str) -> int:
    return int(duration[:-1]) * UNITS_MS[duration[-1]]


def _event_time(value: dict[str, Any], headers: Any, timestamp: int, kind: Any) -> int:
    return round(datetime.fromisoformat(value["ts"]).timestamp() * 1000)


def _murmur2(data: bytes) -> int:
    """Kafka's key hash (the ``murmur2`` partitioner Quix's producer is configured with)."""
    mask, m = 0xFFFFFFFF, 0x5BD1E995
    h = 0x9747B28C ^ len(data)
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little") * m & mask
        k = (k ^ (k >> 24)) * m & mask
        h = (h * m & mask) ^ k
    tail = data[whole:]
    if tail:
        for i in reversed(range(len(tail))):
            h ^= tail[i] << (8 * i)
        h = h * m & mask
    h = (h ^ (h >> 13)) * m & mask
    return h ^ (h >> 15)


def _partition_of(key: str, partitions: int) -> int:
    """The partition of a JSON-serialised string key (how ``group_by`` keys are written)."""
    return (_murmur2(json.dumps(key).encode()) & 0x7FFFFFFF) % partitions


def _key_func(cols: list[str]) -> Callable[[dict[str, Any]], str]:
    if len(cols) == 1:
        col = cols[0]
        return lambda value: value[col]
    return lambda value: "|".join(str(value[col]) for col in cols)


def _closers(views: list[dict[str, Any]], partitions: int) -> list[dict[str, Any]]:
    """One message per partition whose key under every view lands on that partition."""
    messages = []
    for target in range(partitions):
        message: dict[str, Any] = {END: True}
        for view in views:
            for spec in view["aggregation_info"]:
                if "col_name" in spec:
                    distinct = spec["aggregation"] == "count_distinct"
                    message.setdefault(spec["col_name"], "" if distinct else 0)
            cols, key = view["grouping_cols"], _key_func(view["grouping_cols"])
            n = 0
            while True:
                candidate = {col: f"~{target}-{n}" for col in cols}
                if _partition_of(key(candidate), partitions) == target:
                    break
                n += 1
            message.update(candidate)
        messages.append(message)
    return messages


def _app(args: argparse.Namespace) -> None:
    """The measured process: the Quix Streams application itself."""
    started = time.perf_counter()
    first: list[float] = []  # when the first event was processed
    from quixstreams import Application
    from quixstreams.context import message_context
    from quixstreams.dataframe.windows import Collector, Count, Mean, Sum

    class CountDistinct(Collector):
        """Exact distinct count of a column over the window's collected values."""

        def result(self, items: Iterable[Any]) -> int:
            return len(set(items))

    aggregators: dict[str, Callable[[dict[str, Any]], Any]] = {
        "count": lambda spec: Count(),
        "sum": lambda spec: Sum(spec["col_name"]),
        "mean": lambda spec: Mean(spec["col_name"]),
        "count_distinct": lambda spec: CountDistinct(spec["col_name"]),
    }
    views = [json.loads((args.views / f"{name}.json").read_text()) for name in args.view]
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
        consumer_extra_config=json.loads(args.consumer_config),
    )
    source = app.dataframe(app.topic(args.input, timestamp_extractor=_event_time))
    output = app.topic(args.output, key_serializer="json")

    closers = _closers(views, args.partitions)
    ended: set[int] = set()

    def hold_back_end(value: dict[str, Any]) -> list[dict[str, Any]]:
        """Events pass; after the last partition's end marker, send the closing messages."""
        if END not in value:
            if not first:
                first.append(time.perf_counter())
            return [value]
        ended.add(message_context().partition)
        if len(ended) < args.partitions:
            return []
        return [{**closer, "ts": value["ts"]} for closer in closers]

    source = source.apply(hold_back_end, expand=True)

    closed: set[tuple[str, int]] = set()
    late: dict[str, int] = {view["name"]: 0 for view in views}

    def count_late(name: str) -> bool:
        late[name] += 1
        return False  # counted, not logged

    def stop_when_closed(value: dict[str, Any], name: str) -> None:
        if END in value:
            closed.add((name, message_context().partition))
            if len(closed) == len(views) * args.partitions:
                app.stop()  # after this message: its closed windows are still emitted

    for view in views:
        name, cols = view["name"], view["grouping_cols"]
        rows = source.group_by(_key_func(cols), name=name)
        rows = rows.update(lambda value, name=name: stop_when_closed(value, name))
        rows = rows.tumbling_window(
            _ms(view["window"]["size"]),
            grace_ms=_ms(view["allowed_lateness"]),
            name=name,
            on_late=lambda *_, name=name: count_late(name),
        ).agg(
            **{
                s["aggregated_col_name"]: aggregators[s["aggregation"]](s)
                for s in view["aggregation_info"]
            }
        )
        rows = rows.final(closing_strategy="partition")

        def to_row(
            row: dict[str, Any],
            key: Any,
            ts: int,
            headers: Any,
            name: str = name,
            cols: list[str] = cols,
        ) -> dict[str, Any]:
            return {"view": name, **dict(zip(cols, key.split("|"), strict=True)), **row}

        rows.apply(to_row, metadata=True).to_topic(output)

    app.run(timeout=args.idle_timeout_s)
    startup = first[0] - started if first else None
    print(json.dumps({"late": late, "closed": len(closed), "startup_s": startup}))


def _read_rows(bootstrap: str, topic: str) -> dict[str, tuple[int, int]]:
    """Rows and summed ``requests`` per view on the output topic, read to its end."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}-check", "enable.auto.commit": False}
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in meta.partitions
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    todo = {p for p, end in ends.items() if end > 0}
    seen: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + 120
    while todo:
        if time.monotonic() > deadline:
            raise TimeoutError(f"output partitions {todo} not read to their end")
        for message in consumer.consume(10_000, timeout=5):
            if message.error():
                raise RuntimeError(message.error())
            row = json.loads(message.value())
            rows, requests = seen.get(row["view"], (0, 0))
            seen[row["view"]] = (rows + 1, requests + row["requests"])
            if message.offset() + 1 >= ends[message.partition()]:
                todo.discard(message.partition())
    consumer.close()
    return seen


def _keep_forever(bootstrap: str, topics: list[str]) -> None:
    """No time retention: the rows carry 2024 event times, which the broker's retention
    (24 h here) would delete at its next check. Quix copies this to the repartition topics."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    entry = ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [ConfigResource("TOPIC", topic, incremental_configs=[entry]) for topic in topics]
    for future in admin.incremental_alter_configs(resources).values():
        future.result()


def _produce_backlog(
    bootstrap: str, topic: str, dataset: Path, partitions: int, end_ms: int, batch: int
) -> int:
    """Put the events on ``topic`` round-robin in batches of ``batch``, then an end marker
    per partition stamped ``end_ms`` (at most an hour ahead of the clock: the broker rejects
    later timestamps). Quix judges lateness per partition, so partitions must advance in
    event time together, as with a live source."""
    sent = produce(bootstrap, topic, lines(dataset), partitions=partitions, batch=batch)
    stamp = datetime.fromtimestamp(end_ms / 1000, UTC).isoformat(timespec="milliseconds")
    end = json.dumps({"ts": stamp.replace("+00:00", "Z"), END: True}).encode()
    produce(bootstrap, topic, [end] * partitions, partitions=partitions)
    return sent


def _clean_up(bootstrap: str, tag: str) -> None:
    """Drop the run's topics (input, output, repartition, changelog: all named after ``tag``)
    and its consumer group."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    mine = [name for name in admin.list_topics(timeout=10).topics if tag in name]
    for future in admin.delete_topics(mine).values() if mine else ():
        future.result()
    for future in admin.delete_consumer_groups([tag]).values():
        with contextlib.suppress(Exception):  # none if the application never joined
            future.result()


def supports(views: Path) -> str | None:
    """Why the application cannot compute ``views`` (``None`` when it can): it maps count,
    sum, mean and count_distinct to Quix's window aggregations, one window size per view."""
    return plain_only(views, {"count", "sum", "mean", "count_distinct"})


def run(ctx: Context) -> Result:
    """Produce the backlog (untimed), time the Quix application over it, check the counts."""
    import quixstreams

    from integration import services

    services.ensure("kafka")
    bootstrap = services.connection("kafka").bootstrap_servers
    specs = {path.stem: json.loads(path.read_text()) for path in ctx.views.glob("*.json")}
    views = sorted(specs)
    tag = f"bench-quix-{os.getpid()}-{int(time.time())}"
    source, output = tag, f"{tag}-out"
    state = ctx.scratch("quix") / tag
    create_topic(bootstrap, source, PARTITIONS)
    create_topic(bootstrap, output, PARTITIONS)
    try:
        _keep_forever(bootstrap, [source, output])
        end = max(_event_time(json.loads(line), None, 0, None) for line in lines(ctx.dataset))
        end += 60_000 + max(
            _ms(v["window"]["size"]) + _ms(v["allowed_lateness"]) for v in specs.values()
        )
        batch = ctx.options.get("quix_batch", BATCH)
        sent = _produce_backlog(bootstrap, source, ctx.dataset, PARTITIONS, end, int(batch))
        if sent != ctx.events:
            raise RuntimeError(f"produced {sent} events, expected {ctx.events}")
        cmd = [PYTHON, "-m", "benchmarks.systems.quix", "--app", "--bootstrap", bootstrap]
        cmd += ["--input", source, "--output", output, "--group", tag, "--state-dir", str(state)]
        cmd += ["--consumer-config", ctx.options.get("quix_consumer", CONSUMER)]
        cmd += ["--views", str(ctx.views), "--partitions", str(PARTITIONS), "--view", *views]
        measured = measure(cmd)
        report = json.loads(measured.stdout.strip().splitlines()[-1])
        seen = _read_rows(bootstrap, output)
    finally:
        _clean_up(bootstrap, tag)
        shutil.rmtree(state, ignore_errors=True)
    counted = {view: seen.get(view, (0, 0))[1] for view in views}
    if report["closed"] != len(views) * PARTITIONS:
        raise RuntimeError(f"stopped before every window was closed: {report}")
    lost = {view: ctx.events - n for view, n in counted.items() if n != ctx.events}
    if lost:
        raise RuntimeError(
            f"events missing from the closed windows: {lost}, reported late: {report['late']}; "
            "the others were late too: with closing_strategy='partition' Quix checks lateness "
            "against the last closed window's end, so it adds events to windows it has "
            "already emitted, and never emits them again"
        )
    return Result(
        system="quix-streams",
        events=ctx.events,
        wall_s=measured.wall_s,
        cpu_s=measured.cpu_s,
        peak_rss_mb=measured.peak_rss_mb,
        rows={view: seen.get(view, (0, 0))[0] for view in views},
        extra={
            "views": views,
            "version": quixstreams.__version__,
            "startup_s": report["startup_s"],
            "producer_batch": batch,
            "consumer": json.loads(ctx.options.get("quix_consumer", CONSUMER)),
            "notes": (
                "count_distinct is exact (a set per window from a Collector), not HyperLogLog; "
                "group_by through a repartition topic per view; RocksDB state with changelog "
                "topics; at-least-once; windows closed after the end of input by a message "
                "per repartition partition; backlog round-robin in small batches, read in "
                "small fetches (Quix drops as late what lags its partition's latest time); "
                "wall and CPU include start-up (startup_s: topic creation, group join) and "
                "not the Kafka broker"
            ),
        },
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench" / "work")
    parser.add_argument("--app", action="store_true", help="run the Quix application itself")
    parser.add_argument("--bootstrap")
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--group")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--views", type=Path)
    parser.add_argument("--view", nargs="+", default=[])
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--consumer-config", default=CONSUMER, help="librdkafka settings")
    parser.add_argument("--idle-timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.app:
        _app(args)
        return
    from benchmarks.generate import write

    dataset = write(ROOT / ".cache" / "bench" / f"events-{args.events}.jsonl", args.events)
    result = run(Context(dataset=dataset, events=args.events, work=args.work))
    json.dump(result.to_json(), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
