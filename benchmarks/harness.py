"""What every benchmarked system reports, and how a process's time and memory are measured.

Each system runs in its own process so that its CPU time (user + system, from ``wait4``) and
peak resident memory are its own, not the harness's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The benchmark's view sets, one folder each; ``basic`` is the default.
VIEW_SETS = {name: ROOT / "benchmarks" / "views" / name for name in ("basic", "rich", "cube")}
VIEWS = VIEW_SETS["basic"]
PYTHON = os.environ.get("LIVEAGG_BENCH_PYTHON") or sys.executable


@dataclass
class Result:
    """One system's figures for one input. ``cpu_s`` counts every process of the system."""

    system: str
    events: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    rows: dict[str, int] = field(default_factory=dict)  # output rows per view
    extra: dict[str, Any] = field(default_factory=dict)  # latency percentiles, notes, ...
    output: str = ""  # the folder its rows were written to, when they are files

    @property
    def us_per_event(self) -> float:
        """CPU microseconds per event."""
        return self.cpu_s / self.events * 1e6 if self.events else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s else 0.0

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.cpu_s if self.cpu_s else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_s"] = round(self.events_per_s)
        out["events_per_cpu_s"] = round(self.events_per_cpu_s)
        out["cpu_us_per_event"] = round(self.us_per_event, 2)
        return out


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str


def measure(cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> Measured:
    """Run ``cmd`` to completion: its wall time, CPU time and peak RSS (children included)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err.read()[-4000:]}")
        return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read())


def process_cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds so far of running processes (for long-lived services)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def process_rss_mb(pids: Sequence[int]) -> float:
    """Current resident memory of running processes, in MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024
