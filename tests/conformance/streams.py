"""Long-running ``liveagg run`` processes, and the topics they write read as they grow, for the
streaming checks of the conformance suite."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import orjson
import pytest

from integration.services import KafkaConnection
from tests.support.cli import ROOT, command
from tests.support.waiting import eventually

ck = pytest.importorskip("confluent_kafka")
from tests.support.kafka_topics import kafka_records  # noqa: E402

T = TypeVar("T")


def unique(prefix: str) -> str:
    """A topic or consumer group name of its own."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


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
        """Everything read so far, after reading what has arrived since the last call."""
        while batch := self._consumer.consume(5000, timeout=1.0):
            self.messages += [orjson.loads(m.value()) for m in kafka_records(batch)]
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


def while_running(
    check: Callable[[], T],
    proc: subprocess.Popen,
    log: Path,
    *,
    what: str,
    timeout_s: float,
    every_s: float = 0.5,
) -> T:
    """``check()`` until it holds (``tests.support.waiting.eventually``); fails at once, with
    the end of ``log``, when the run has exited."""

    def step() -> T:
        if proc.poll() is not None:
            pytest.fail(f"liveagg exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        return check()

    return eventually(step, what=what, timeout_s=timeout_s, every_s=every_s)


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


def minute_line(key: str, second: int, value: int) -> bytes:
    """A message ``{"k", "ts", "v"}`` at ``second`` seconds after 2024-05-01T00:00:00Z."""
    return orjson.dumps({"k": key, "ts": f"2024-05-01T00:{second // 60:02d}:{second % 60:02d}Z",
                         "v": value})  # fmt: skip


def live_prism_run(
    view_file: Path, kafka: KafkaConnection, prism: Path, topic: str, rows_topic: str, *more: str
) -> list[str]:
    """``liveagg`` arguments of a live read of ``topic`` on Prism from its start, rows to
    ``rows_topic``; the watermark is the largest event time read (an idle timeout of an
    hour). ``more``: options of the test's own (the dead-letter topic, say)."""
    return [
        *("run", "--views", str(view_file), "--kafka-topic", topic, "--unbounded"),
        *("--kafka-bootstrap", kafka.bootstrap_servers, "--kafka-start", "earliest"),
        *("--kafka-group-id", unique("liveagg-prism-"), "--idle-timeout-s", "3600"),
        *("--sink", orjson.dumps({"type": "kafka", "topic": rows_topic}).decode()),
        *("--runner", "prism", "--prism-location", str(prism)),
        *more,
    ]
