"""A batch of messages held as the file held them: one buffer of newline-separated lines.

Arrow's JSON reader takes a batch as one buffer of lines, and a file's bytes are already
that buffer. Splitting a 4 MiB chunk into a ``bytes`` object per line and joining the lines
again for the reader cost about 0.27 CPU-s per million benchmark lines (split 0.17, the
per-line strip and blank check 0.04, the join 0.04, the lengths 0.03), close to a third of
what the reader itself costs. :class:`Lines` finds the lines' bounds with one numpy pass
(0.03) and cuts a line out of the buffer only when one is asked for: a message that takes the
exact path, a dead letter's payload.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

_NEWLINE = ord("\n")
_OPEN = ord("{")
_CLOSE = ord("}")


class Lines(Sequence[bytes]):
    """Messages that are lines of one buffer, separated by single newlines, each starting
    with ``{`` and ending with ``}``: none blank, none padded with whitespace, as
    :func:`liveagg.engine.columns.message_lines` would leave them. ``starts`` and ``ends``
    bound each line in ``data``."""

    __slots__ = ("data", "ends", "starts")

    def __init__(self, data: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        self.data = data
        self.starts = starts
        self.ends = ends

    @classmethod
    def of(cls, data: bytes, count: int) -> Lines | None:
        """``data``'s ``count`` lines, or None when one of them is not framed as an object
        (blank, padded, ended by a carriage return, ...): those batches are split into
        lines and stripped as before."""
        if count < 1:
            return None
        buffer = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(buffer == _NEWLINE)
        if len(newlines) != count - 1:
            return None
        starts = np.empty(count, dtype=np.int64)
        starts[0] = 0
        starts[1:] = newlines + 1
        ends = np.empty(count, dtype=np.int64)
        ends[:-1] = newlines
        ends[-1] = len(data)
        if (ends - starts < 2).any():
            return None
        if not ((buffer[starts] == _OPEN) & (buffer[ends - 1] == _CLOSE)).all():
            return None
        return cls(data, starts, ends)

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...

    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(i, slice):
            if i.step not in (None, 1):
                return list(self)[i]
            return Lines(self.data, self.starts[i], self.ends[i])
        return self.data[self.starts[i] : self.ends[i]]

    def __iter__(self) -> Iterator[bytes]:
        data = self.data
        return (data[s:e] for s, e in zip(self.starts.tolist(), self.ends.tolist(), strict=True))

    def joined(self) -> bytes:
        """The lines joined by newlines: the part of the buffer they span, as consecutive
        lines are separated by one newline."""
        if not len(self.starts):
            return b""
        start, end = int(self.starts[0]), int(self.ends[-1])
        return self.data if start == 0 and end == len(self.data) else self.data[start:end]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Each line's start in :meth:`joined` and its length."""
        return self.starts - self.starts[0], self.ends - self.starts


def joined(lines: Sequence[bytes]) -> bytes:
    """Lines joined by newlines, as Arrow's reader takes a batch."""
    return lines.joined() if type(lines) is Lines else b"\n".join(lines)
