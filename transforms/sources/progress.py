"""How much of a run's input files this process has read, for the progress line on a terminal.

The file reader adds what it reads here; ``liveagg run`` shows it while the pipeline runs.
Only readers in the launching process count: the DirectRunner's in-memory mode (the
default) reads there, while its multi-processing mode and Flink read in workers whose
progress this process cannot see (Flink reports its own metrics).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """Bytes and lines read so far, and the bytes of every file matched."""

    bytes_read: int
    lines_read: int
    bytes_total: int


class ReadProgress:
    """Counters that readers add to and one reporter reads; thread safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes_read = 0
        self._lines_read = 0
        self._bytes_total = 0

    def expect(self, nbytes: int) -> None:
        """Add matched files of ``nbytes`` (compressed sizes for compressed files)."""
        with self._lock:
            self._bytes_total += nbytes

    def add(self, nbytes: int = 0, lines: int = 0) -> None:
        with self._lock:
            self._bytes_read += nbytes
            self._lines_read += lines

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._bytes_read, self._lines_read, self._bytes_total)

    def reset(self) -> None:
        with self._lock:
            self._bytes_read = self._lines_read = self._bytes_total = 0


#: The process's counters.
PROGRESS = ReadProgress()
