"""``hot_key_fanout`` on Prism, live from Kafka: a hot key's messages are aggregated by four
sub-keys and merged by a second operator, with EARLY, ON_TIME and LATE panes and milestones.

The merge must close a window only after the sub-keys' ON_TIME panes reached it: each key's
panes count up from 0 without a gap, one ON_TIME pane each, every pane after it LATE, the
final ones equal to the oracle, and each milestone fires once. (The DirectRunner aggregates
such a view unsharded: docs/two-level.md.)
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.services import KafkaConnection
from liveagg.loader import load_views
from tests.conformance.streams import (
    Topic,
    ctrl_c,
    live_prism_run,
    minute_line,
    running,
    unique,
    while_running,
)
from tests.conformance.test_prism_streaming import VIEW as STREAMING_VIEW
from tests.support.compare import (
    assert_milestones_match,
    assert_rows_match,
    latest_panes,
    without_panes,
)
from tests.support.kafka_topics import create_topics, produce
from tests.support.oracle import expected_milestones, expected_rows

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

#: The counts of test_prism_streaming.py, with the hot-key fan-out and milestones.
VIEW = {
    **STREAMING_VIEW,
    "name": "prism_hot",
    "hot_key_fanout": 4,
    "milestones": [{"column": "n", "at": [1, 5, 10, 21, 22]}],
}
STEP_TIMEOUT_S = 180.0


def _closed(record: dict[str, Any]) -> bool:
    """A row or milestone of a window the test closes (before 00:03)."""
    return record["window_start"] < "2024-05-01T00:03"


def _assert_pane_sequences(rows: Sequence[dict[str, Any]]) -> None:
    """Per key and window: pane indexes 0, 1, 2 ... once each; EARLY panes, one ON_TIME,
    then LATE ones, in that order of index; values never decrease (accumulating)."""
    panes: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        panes[(row["k"], row["window_start"])].append(row)
    for where, found in panes.items():
        found.sort(key=lambda r: r["pane_index"])
        assert [r["pane_index"] for r in found] == list(range(len(found))), (where, found)
        timings = [r["pane_timing"] for r in found]
        on_time = timings.index("ON_TIME")
        assert set(timings[:on_time]) <= {"EARLY"}, (where, timings)
        assert set(timings[on_time + 1 :]) <= {"LATE"}, (where, timings)
        counts = [r["n"] for r in found]
        assert counts == sorted(counts), (where, counts)


def test_hot_keys_fan_out_and_merge_with_every_pane_once(
    tmp_path: Path, kafka: KafkaConnection, prism: Path
) -> None:
    view_file = tmp_path / "prism_hot.json"
    view_file.write_bytes(orjson.dumps(VIEW))
    (view,) = load_views([view_file])
    topic, rows_topic, dead_topic, events_topic = (
        unique(f"liveagg-fanout-{p}-") for p in ("in", "rows", "dead", "milestones")
    )
    create_topics(kafka.client_config(), [topic, rows_topic, dead_topic, events_topic], 1)
    more = ("--dead-letter-topic", dead_topic, "--milestone-topic", events_topic)
    args = live_prism_run(view_file, kafka, prism, topic, rows_topic, *more)
    sent: list[bytes] = []
    rows, milestones = Topic(kafka, rows_topic), Topic(kafka, events_topic)
    log = tmp_path / "stderr.log"

    def send(lines: Sequence[bytes]) -> None:
        sent.extend(lines)
        produce(kafka.client_config(), topic, lines)

    def newest(key: str, start: str, timing: str, n: int) -> Any:
        def check() -> None:
            found = [
                r
                for r in rows.poll()
                if r["k"] == key
                and r["window_start"] == f"2024-05-01T00:{start}:00Z"
                and r["pane_timing"] == timing
            ]
            assert found, f"no {timing} pane of {key} at 00:{start} yet"
            assert max(r["n"] for r in found) == n, found

        return check

    try:
        with log.open("wb") as err, running(args, subprocess.PIPE, err) as proc:

            def wait(check: Any, what: str) -> Any:
                return while_running(check, proc, log, what=what, timeout_s=STEP_TIMEOUT_S)

            # The hot key "a" spreads over the four sub-keys; "b" is one message.
            send([minute_line("a", 1 + i, i) for i in range(12)] + [minute_line("b", 20, 100)])
            wait(newest("a", "00", "EARLY", 12), "the EARLY pane of a at 00:00 with 12")
            send([minute_line("a", 30 + i, 1) for i in range(8)])
            # 00:01:10 passes the end of [00:00, 00:01): the merged ON_TIME pane.
            send([minute_line("a", 70, 5)])
            wait(newest("a", "00", "ON_TIME", 20), "the ON_TIME pane of a at 00:00")
            wait(newest("b", "00", "ON_TIME", 1), "the ON_TIME pane of b at 00:00")
            # Late, within the allowed lateness: LATE panes with the whole value.
            send([minute_line("a", 50, 7), minute_line("a", 51, 7)])
            wait(newest("a", "00", "LATE", 22), "the LATE pane of a at 00:00 with 22")
            # 00:03:05 closes [00:00, 00:01) and fires [00:01, 00:02) and [00:02, 00:03).
            send([minute_line("a", 130, 1), minute_line("a", 185, 1)])
            wait(newest("a", "02", "ON_TIME", 1), "the ON_TIME pane of a at 00:02")
            events = tmp_path / "sent.jsonl"
            events.write_bytes(b"\n".join(sent) + b"\n")
            # [00:03, 00:04) is still open when the run stops: left out of every check.
            oracle = [r for r in expected_rows(view, events) if _closed(r)]
            expected = without_panes(oracle)

            def final_panes_match() -> None:
                done = [r for r in rows.poll() if _closed(r)]
                assert_rows_match(without_panes(latest_panes(done, view)), expected, view)

            wait(final_panes_match, "the final panes")
            ctrl_c(proc)
        _assert_pane_sequences([r for r in rows.poll() if _closed(r)])
        fired = [e for e in milestones.poll() if _closed(e)]
        assert len({e["milestone_id"] for e in fired}) == len(fired), fired
        assert_milestones_match(fired, expected_milestones(view, oracle), values=False)
    finally:
        rows.close()
        milestones.close()
