"""Local streaming on Prism, step by step, on the real Kafka: ``liveagg run --runner prism
--kafka-topic ... --unbounded`` with ``emit.early``, allowed lateness and too-late dead
letters; then Ctrl-C.

The topic has one partition and the run an idle timeout of an hour, so the watermark is the
largest event time read so far (``PartitionWatermark``): each step below writes messages,
then waits for the pane that shows the run got there before the next step writes more.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.services import KafkaConnection
from liveagg.loader import load_views
from tests.conformance.streams import (
    Topic,
    alive,
    create_topics,
    ctrl_c,
    descendants,
    latest_panes,
    produce,
    running,
    unique,
    without_panes,
)
from tests.support.compare import assert_rows_match
from tests.support.oracle import expected_rows

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

VIEW = {
    "name": "prism_counts",
    "event_time": {"field": "ts"},
    "grouping_cols": ["k"],
    "window": {"type": "fixed", "size": "1m"},
    "allowed_lateness": "2m",
    "emit": {"early": "1s"},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "n"},
        {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "total"},
    ],
}
STEP_TIMEOUT_S = 180.0


def _line(key: str, second: int, value: int) -> bytes:
    """A message at ``second`` seconds after 2024-05-01T00:00:00Z."""
    return orjson.dumps({"k": key, "ts": f"2024-05-01T00:{second // 60:02d}:{second % 60:02d}Z",
                         "v": value})  # fmt: skip


def _eventually(check: Callable[[], Any], proc: subprocess.Popen, log: Path) -> Any:
    """``check()``'s value once it stops raising AssertionError; fails after the timeout or
    when the run has exited."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        assert proc.poll() is None, f"liveagg exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_early_on_time_late_and_too_late_then_ctrl_c(
    tmp_path: Path, kafka: KafkaConnection, prism: Path
) -> None:
    view_file = tmp_path / "prism_counts.json"
    view_file.write_bytes(orjson.dumps(VIEW))
    (view,) = load_views([view_file])
    topic, rows_topic, dead_topic = (unique(f"liveagg-prism-{p}-") for p in ("in", "rows", "dead"))
    create_topics(kafka, 1, topic, rows_topic, dead_topic)
    args = [
        *("run", "--views", str(view_file), "--kafka-topic", topic, "--unbounded"),
        *("--kafka-bootstrap", kafka.bootstrap_servers, "--kafka-start", "earliest"),
        *("--kafka-group-id", unique("liveagg-prism-"), "--idle-timeout-s", "3600"),
        *("--sink", orjson.dumps({"type": "kafka", "topic": rows_topic}).decode()),
        *("--dead-letter-topic", dead_topic),
        *("--runner", "prism", "--prism-location", str(prism)),
    ]
    used: list[bytes] = []  # every message but the too-late ones: what the oracle reads
    too_late: list[bytes] = []
    rows, letters = Topic(kafka, rows_topic), Topic(kafka, dead_topic)
    log = tmp_path / "stderr.log"

    def send(lines: Sequence[bytes], *, late: bool = False) -> None:
        (too_late if late else used).extend(lines)
        produce(kafka, topic, lines)

    def pane(key: str, start: str, timing: str, n: int, total: int) -> Callable[[], None]:
        """The newest ``timing`` pane of ``key``'s window at 00:``start`` holds ``n`` and
        ``total``."""

        def check() -> None:
            found = [
                r
                for r in rows.poll()
                if r["k"] == key
                and r["window_start"] == f"2024-05-01T00:{start}:00Z"
                and r["pane_timing"] == timing
            ]
            assert found, f"no {timing} pane of {key} at 00:{start} yet"
            newest = max(found, key=lambda r: r["pane_index"])
            assert (newest["n"], newest["total"]) == (n, total), newest

        return check

    try:
        with log.open("wb") as err, running(args, subprocess.PIPE, err) as proc:
            # The watermark stays at 00:00:15: before [00:00, 00:01) ends, only EARLY panes,
            # every second of processing time while the window has new data.
            send([_line("a", 10, 1), _line("a", 11, 2), _line("b", 15, 4)])
            _eventually(pane("a", "00", "EARLY", 2, 3), proc, log)
            # 00:01:10 passes the end of [00:00, 00:01): its ON_TIME pane.
            send([_line("a", 70, 8)])
            _eventually(pane("a", "00", "ON_TIME", 2, 3), proc, log)
            # Late, within the allowed lateness (closes at 00:01 + 2m): a LATE pane.
            send([_line("a", 20, 16)])
            _eventually(pane("a", "00", "LATE", 3, 19), proc, log)
            # 00:03:05 passes 00:03, where [00:00, 00:01) closes. Each key's [00:02, 00:03)
            # fires in the same timer callback that closes the key's [00:00, 00:01) (one
            # state cell per key bucket): its ON_TIME pane shows the window is closed.
            send([_line("a", 130, 32), _line("b", 140, 64), _line("a", 185, 128)])
            _eventually(pane("a", "02", "ON_TIME", 1, 32), proc, log)
            _eventually(pane("b", "02", "ON_TIME", 1, 64), proc, log)
            # Too late: their windows have closed.
            send([_line("a", 30, 256), _line("b", 40, 512)], late=True)

            def all_too_late() -> list[dict[str, Any]]:
                dead = letters.poll()
                assert len(dead) >= len(too_late), dead
                return dead

            dead = _eventually(all_too_late, proc, log)
            events = tmp_path / "used.jsonl"
            events.write_bytes(b"\n".join(used) + b"\n")
            expected = without_panes(expected_rows(view, events))

            def final_panes_match() -> None:
                final = without_panes(latest_panes(rows.poll(), view))
                assert_rows_match(final, expected, view)

            _eventually(final_panes_match, proc, log)
            prisms = {p: c for p, c in descendants(proc.pid).items() if str(prism) in c}
            assert prisms, f"no Prism process under liveagg: {descendants(proc.pid)}"
            code = ctrl_c(proc)
            assert proc.stdout is not None
            stdout = proc.stdout.read()
        stderr = log.read_text()
        assert code == 130, stderr[-4000:]
        assert stderr == "interrupted: the sinks may hold part of the results\n", stderr[-4000:]
        assert stdout == b""  # no summary: the run did not finish
        assert not [p for p in prisms if alive(p)], prisms
        assert sorted((d["view"], d["reason"], d["payload"]) for d in dead) == sorted(
            (view.name, "too_late", line.decode()) for line in too_late
        )
        timings = {r["pane_timing"] for r in rows.poll()}
        assert timings == {"EARLY", "ON_TIME", "LATE"}, timings
    finally:
        rows.close()
        letters.close()
