"""Local streaming on Prism, step by step, on the real Kafka: ``liveagg run --runner prism
--kafka-topic ... --unbounded`` with ``emit.early``, allowed lateness and too-late dead
letters; then Ctrl-C.

The topic has one partition and the run an idle timeout of an hour, so the watermark is the
largest event time read so far (``PartitionWatermark``): each step below writes messages,
then waits for the pane that shows the run got there before the next step writes more.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from integration.services import KafkaConnection
from liveagg.loader import load_views
from tests.conformance.streams import (
    Topic,
    alive,
    ctrl_c,
    descendants,
    live_prism_run,
    minute_line,
    running,
    unique,
    while_running,
)
from tests.support.compare import assert_rows_match, latest_panes, without_panes
from tests.support.kafka_topics import create_topics, produce
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
T = TypeVar("T")


def test_early_on_time_late_and_too_late_then_ctrl_c(
    tmp_path: Path, kafka: KafkaConnection, prism: Path
) -> None:
    view_file = tmp_path / "prism_counts.json"
    view_file.write_bytes(orjson.dumps(VIEW))
    (view,) = load_views([view_file])
    topic, rows_topic, dead_topic = (unique(f"liveagg-prism-{p}-") for p in ("in", "rows", "dead"))
    create_topics(kafka.client_config(), [topic, rows_topic, dead_topic], 1)
    more = ("--dead-letter-topic", dead_topic)
    args = live_prism_run(view_file, kafka, prism, topic, rows_topic, *more)
    used: list[bytes] = []  # every message but the too-late ones: what the oracle reads
    too_late: list[bytes] = []
    rows, letters = Topic(kafka, rows_topic), Topic(kafka, dead_topic)
    log = tmp_path / "stderr.log"

    def send(lines: Sequence[bytes], *, late: bool = False) -> None:
        (too_late if late else used).extend(lines)
        produce(kafka.client_config(), topic, lines)

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

            def wait(check: Callable[[], T], what: str) -> T:
                return while_running(check, proc, log, what=what, timeout_s=STEP_TIMEOUT_S)

            # The watermark stays at 00:00:15: before [00:00, 00:01) ends, only EARLY panes,
            # every second of processing time while the window has new data.
            send([minute_line("a", 10, 1), minute_line("a", 11, 2), minute_line("b", 15, 4)])
            wait(pane("a", "00", "EARLY", 2, 3), "the EARLY pane of a at 00:00")
            # 00:01:10 passes the end of [00:00, 00:01): its ON_TIME pane.
            send([minute_line("a", 70, 8)])
            wait(pane("a", "00", "ON_TIME", 2, 3), "the ON_TIME pane of a at 00:00")
            # Late, within the allowed lateness (closes at 00:01 + 2m): a LATE pane.
            send([minute_line("a", 20, 16)])
            wait(pane("a", "00", "LATE", 3, 19), "the LATE pane of a at 00:00")
            # 00:03:05 passes 00:03, where [00:00, 00:01) closes. Each key's [00:02, 00:03)
            # fires in the same timer callback that closes the key's [00:00, 00:01) (one
            # state cell per key bucket): its ON_TIME pane shows the window is closed.
            send([minute_line("a", 130, 32), minute_line("b", 140, 64), minute_line("a", 185, 128)])
            wait(pane("a", "02", "ON_TIME", 1, 32), "the ON_TIME pane of a at 00:02")
            wait(pane("b", "02", "ON_TIME", 1, 64), "the ON_TIME pane of b at 00:02")
            # Too late: their windows have closed.
            send([minute_line("a", 30, 256), minute_line("b", 40, 512)], late=True)

            def all_too_late() -> list[dict[str, Any]]:
                dead = letters.poll()
                assert len(dead) >= len(too_late), dead
                return dead

            dead = wait(all_too_late, "the too-late dead letters")
            events = tmp_path / "used.jsonl"
            events.write_bytes(b"\n".join(used) + b"\n")
            expected = without_panes(expected_rows(view, events))

            def final_panes_match() -> None:
                final = without_panes(latest_panes(rows.poll(), view))
                assert_rows_match(final, expected, view)

            wait(final_panes_match, "the final panes")
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
