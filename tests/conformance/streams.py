"""Kafka topics and long-running ``liveagg run`` processes for the streaming checks of the
conformance suite."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pytest

from integration.services import KafkaConnection
from liveagg.spec import ViewSpec
from tests.support.cli import ROOT, command
from tests.support.compare import row_key

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def unique(prefix: str) -> str:
    """A topic or consumer group name of its own."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def create_topics(kafka: KafkaConnection, partitions: int, *names: str) -> None:
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(t, partitions, 1) for t in names]).values():
        future.result(30)


def produce(kafka: KafkaConnection, topic: str, lines: Sequence[bytes]) -> None:
    """Write ``lines`` to ``topic`` (one message each), in order, and wait until stored."""
    producer = ck.Producer({**kafka.client_config(), "linger.ms": 20})
    for line in lines:
        producer.produce(topic, value=line)
        producer.poll(0)
    assert producer.flush(60) == 0


class Topic:
    """Reads a topic from the start, keeping what it has read between calls."""

    def __init__(self, kafka: KafkaConnection, topic: str) -> None:
        self.messages: list[Any] = []
        self._consumer = ck.Consumer(
            {
                **kafka.client_config(),
                "group.id": unique("conformance-check-"),
                "auto.offset.reset": "earliest",
            }
        )
        self._consumer.subscribe([topic])

    def poll(self) -> list[Any]:
        while batch := self._consumer.consume(5000, timeout=1.0):
            self.messages += [orjson.loads(m.value()) for m in batch if m.error() is None]
        return self.messages

    def close(self) -> None:
        self._consumer.close()


@contextlib.contextmanager
def running(
    args: Sequence[str], stdout: BinaryIO | int, stderr: BinaryIO | int
) -> Iterator[subprocess.Popen]:
    """``liveagg ARGS`` in its own process group, stopped at the end as a terminal's Ctrl-C
    would (SIGINT to the whole group), and killed if that does not end it."""
    proc = subprocess.Popen(
        command(*args),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


def ctrl_c(proc: subprocess.Popen, timeout_s: float = 120.0) -> int:
    """SIGINT to the process group, as a terminal's Ctrl-C; the exit code."""
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout_s)


def descendants(pid: int) -> dict[int, str]:
    """The live processes under ``pid`` (children, theirs...) and their command lines."""
    children: dict[int, list[int]] = {}
    lines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry.name))
            lines[int(entry.name)] = cmdline
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = lines[child]
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def latest_panes(rows: Sequence[Mapping[str, Any]], view: ViewSpec) -> list[dict[str, Any]]:
    """The last pane of each window: the window's value so far."""
    latest: dict[Any, Mapping[str, Any]] = {}
    for row in rows:
        key = row_key(row, view)
        if key not in latest or row["pane_index"] >= latest[key]["pane_index"]:
            latest[key] = row
    return [dict(r) for r in latest.values()]


def without_panes(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows without ``pane_timing`` and ``pane_index``, which depend on arrival order."""
    return [{k: v for k, v in r.items() if k not in ("pane_timing", "pane_index")} for r in rows]
