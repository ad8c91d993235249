"""The benchmarked systems. Each module has ``run(ctx: Context) -> Result``.

Every system computes the views in ``benchmarks/views`` (or the subset it can express, said
in ``Result.extra["views"]``) over the same generated events, and writes its rows somewhere
real (files, Cassandra or Kafka), so that no system is timed doing less than the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import VIEWS


@dataclass
class Context:
    """One benchmark run's input and scratch space, shared by all systems."""

    dataset: Path  # JSON Lines written by benchmarks.generate
    events: int
    work: Path  # scratch folder; each system writes under work/<system>/
    views: Path = VIEWS
    rate: int = 50_000  # events/s for the paced (latency) runs on Kafka
    options: dict[str, str] = field(default_factory=dict)

    def scratch(self, system: str) -> Path:
        path = self.work / system
        path.mkdir(parents=True, exist_ok=True)
        return path
