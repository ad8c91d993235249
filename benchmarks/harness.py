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
import tomllib
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


#: Runs argv[2:] and writes its CPU seconds and peak RSS to the file argv[1]: see ``measure``.
_LAUNCHER = """\
import os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_utime} {usage.ru_stime} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


#: Checkouts whose packages :func:`compile_packages` has compiled in this process.
_COMPILED: set[Path] = set()


def compile_packages(python: str, checkout: Path) -> None:
    """Write the bytecode of ``checkout``'s packages (its ``pyproject.toml`` package-dir),
    once per process, so that a measured run imports them as an installed package does.

    An editable install has no bytecode until a run writes it, and none is ever written where
    ``PYTHONDONTWRITEBYTECODE`` is set (as on some CI machines): every run then compiles
    liveagg's sixty modules from source, about 0.1 CPU-s that a wheel's install pays once.
    """
    checkout = checkout.resolve()
    project = checkout / "pyproject.toml"
    if checkout in _COMPILED or not project.exists():
        return
    _COMPILED.add(checkout)
    with project.open("rb") as f:
        folders = tomllib.load(f).get("tool", {}).get("setuptools", {}).get("package-dir", {})
    paths = [str(checkout / folder) for folder in folders.values()]
    if paths:
        subprocess.run([python, "-m", "compileall", "-q", *paths], check=True, cwd=checkout)


def measure(cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> Measured:
    """Run ``cmd`` to completion: its wall time, CPU time and peak RSS (children included).

    The packages of the checkout at ``cwd`` are compiled first (:func:`compile_packages`).

    ``cmd`` is started by a small launcher process, not by the harness: a process's
    ``ru_maxrss`` starts from the high-water mark of the address space it replaced at
    ``exec`` (Linux ``fs/exec.c``, ``exec_mmap``:
    ``setmax_mm_hiwater_rss(&tsk->signal->maxrss, old_mm)``), which for a child of the harness
    is the harness's own, hundreds of MiB once it has compared rows. The launcher's is a
    bare interpreter's; its own CPU (a few milliseconds) is left out.
    """
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r") as usage,
    ):
        compile_packages(cmd[0], cwd)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, usage.name, *cmd],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=err,
            check=False,
        )
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err.read()[-4000:]}")
        user, system, maxrss_kib = usage.read().split()
        return Measured(wall, float(user) + float(system), int(maxrss_kib) / 1024, out.read())


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
