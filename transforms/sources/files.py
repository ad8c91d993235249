"""JSON Lines files read as batches of lines, so that Beam's per-element cost is paid per batch.

``ReadFromText`` emits one element per line; at a few microseconds of runner work per element
that alone caps a pipeline near 100,000 lines per second per core. Here each element is a
:class:`LineBatch` of up to :data:`BATCH_LINES` raw lines (``bytes``, without the newline;
invalid UTF-8 is left for the JSON decoder to reject as a dead letter). Uncompressed files are
split into byte ranges of :data:`RANGE_BYTES` so that several workers share a large file;
compressed files (``.gz``, ``.bz2``, ...) are read whole. A UTF-8 byte order mark at the very
start of a file is dropped, as Python's ``utf-8-sig`` codec does; anywhere else it stays, and
the JSON decoder rejects the line.

Where a line comes from (:data:`Where`) is known cheaply as ``(file, byte offset of its range,
index in the range)``; :func:`locate` turns it into the 1-based line number only for a dead
letter (see :func:`locate` for the cost).

A compressed file must end where a compressed stream ends. Beam's ``CompressedFile`` does not
check that: when the underlying file is exhausted it sets ``self._read_eof = True`` whatever
state its decompressor is in (``apache_beam/io/filesystem.py``,
``CompressedFile._fetch_to_internal_buffer``), so a ``.gz`` cut inside a member reads as
complete, its last lines lost. :func:`open_lines` decompresses here instead, member after
member, and a file that ends inside one, or that does not decompress, fails the run with a
:class:`~liveagg.errors.PathError`, as does a file that cannot be read.
"""

from __future__ import annotations

import bisect
import bz2
import lzma
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, BinaryIO

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from liveagg.engine.lines import Lines
from liveagg.errors import PathError, reason
from liveagg.transforms.sources.progress import PROGRESS

#: Lines per element handed to the aggregation.
BATCH_LINES = 20_000
#: Size of the byte ranges an uncompressed file is split into.
RANGE_BYTES = 64 << 20
_CHUNK = 4 << 20
_BOM = b"\xef\xbb\xbf"
_NEWLINE = ord("\n")

#: A line's origin: (file as matched, byte offset of the range it was read in, its index there).
Where = tuple[str, int, int]


@dataclass(frozen=True)
class LineBatch:
    """Consecutive lines of one byte range, held as the file holds them: ``data`` is the
    ``count`` lines joined by newlines, of which ``lines[i]`` is line ``first + i`` of the
    range that starts at byte ``start`` of ``path``. ``crlf``: a line may end in a carriage
    return, which :attr:`lines` drops, as ``ReadFromText`` does."""

    path: str
    start: int
    first: int
    data: bytes
    count: int
    crlf: bool = False

    @cached_property
    def lines(self) -> list[bytes]:
        """The lines, split (once; not pickled)."""
        lines = self.data.split(b"\n")
        return _strip_cr(lines) if self.crlf else lines

    def __getstate__(self) -> dict[str, Any]:
        return {k: x for k, x in self.__dict__.items() if k != "lines"}

    def payloads(self) -> Sequence[bytes]:
        """The lines as the decoder takes them: left in the buffer when each is one object
        (:class:`~liveagg.engine.lines.Lines`), else split."""
        plain = None if self.crlf else Lines.of(self.data, self.count)
        return self.lines if plain is None else plain

    def where(self, i: int) -> Where:
        return (self.path, self.start, self.first + i)

    def messages(self) -> Iterator[tuple[bytes, Where]]:
        """One ``(line, where)`` element per line, as the streaming path reads them."""
        path, start, first = self.path, self.start, self.first
        for i, line in enumerate(self.lines):
            yield line, (path, start, first + i)


def match(pattern: str) -> list[tuple[str, int]]:
    """``(path, size)`` of every file ``pattern`` matches, sorted.

    Raises :class:`~liveagg.errors.PathError` when nothing matches, when a local pattern
    names a folder (a folder may hold other files, a previous run's ``_SUCCESS`` say: give a
    glob of the files to read), or when a matched local file cannot be opened, so that these
    fail before anything runs.
    """
    if FileSystems.get_scheme(pattern) is None and os.path.isdir(pattern):
        glob = os.path.join(pattern, "*.jsonl")
        raise PathError(pattern, f"is a folder; give a file or a glob of its files, e.g. {glob}")
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except BeamIOError as e:
        raise PathError(pattern, f"cannot be listed: {reason(e)}") from None
    if not found:
        raise PathError(
            pattern,
            "no file matches; give a JSON Lines file, a glob such as 'logs/*.jsonl', or an "
            "s3:// or gs:// path",
        )
    files = sorted((m.path, m.size_in_bytes) for m in found)
    for path, _ in files:
        if FileSystems.get_scheme(path) is not None:
            continue
        if not os.path.isfile(path):  # a pipe (/dev/stdin, <(...), a FIFO) or a device
            raise PathError(
                path,
                "is not a regular file (a pipe or a device): a file is read in ranges by its "
                "size, which a stream does not have; write the stream to a file first",
            )
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise PathError(path, f"cannot be read: {reason(e)}") from None
    return files


def ranges(files: list[tuple[str, int]], size: int = RANGE_BYTES) -> list[tuple[str, int, int]]:
    """Split files into ``(path, start, end)`` byte ranges; a compressed file is one range."""
    out = []
    for path, length in files:
        if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
            out.append((path, 0, -1))
            continue
        out.extend((path, start, min(start + size, length)) for start in range(0, length, size))
    return out


def read_range(path: str, start: int, end: int, batch: int = BATCH_LINES) -> Iterator[LineBatch]:
    """The lines that *start* in ``[start, end)`` (``end=-1``: to the end), in batches.

    A line belongs to the range it starts in, so adjacent ranges neither lose nor repeat
    a line that crosses their border.
    """
    with open_lines(path, whole=end < 0) as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the rest of a line that started in the previous range
            pos = f.tell()
        else:
            pos = 0
        parts: list[bytes] = []  # lines not yet yielded, in newline-joined runs
        held = 0  # lines in ``parts``
        carry = b""
        first_line = start == 0  # its BOM, if any, is dropped
        done = 0  # lines of the range yielded so far
        crlf = False  # a chunk held a carriage return: lines may end in one
        while end < 0 or pos < end:
            chunk = f.read(_CHUNK if end < 0 else min(_CHUNK, end - pos))
            if not chunk:
                if end >= 0:  # the file was longer when the run matched it
                    raise PathError(
                        path,
                        "was truncated while it was read (a log rotated with copytruncate?): "
                        f"it held at least {end} bytes when the run started, and reading "
                        f"found its end at byte {pos}; its lines past that are lost, so the "
                        "run stops rather than report part of it as complete",
                    )
                break
            pos += len(chunk)
            data = carry + chunk if carry else chunk
            newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE)
            PROGRESS.add(lines=len(newlines))  # ``carry`` holds none
            crlf = crlf or b"\r" in data  # one search per chunk spares most files a pass
            if not len(newlines):
                carry = data
                continue
            if first_line:
                if data.startswith(_BOM):
                    data, newlines = data[len(_BOM) :], newlines - len(_BOM)
                first_line = False
            carry = data[int(newlines[-1]) + 1 :]
            begin, i, n = 0, 0, len(newlines)
            while held + n - i >= batch:
                last = i + batch - held - 1  # the newline that ends this batch's last line
                stop = int(newlines[last])
                parts.append(data[begin:stop])
                yield LineBatch(path, start, done, b"\n".join(parts), batch, crlf)
                done += batch
                parts, held = [], 0
                begin, i = stop + 1, last + 1
            if i < n:
                parts.append(data[begin : int(newlines[-1])])
                held += n - i
        if carry and end >= 0 and pos >= end:
            carry += f.readline().rstrip(b"\n")  # the last line started before ``end``
        if carry:
            parts.append(_strip_bom(carry) if first_line else carry)
            held += 1
            crlf = crlf or b"\r" in carry
        if held:
            yield LineBatch(path, start, done, b"\n".join(parts), held, crlf)


def _strip_bom(line: bytes) -> bytes:
    return line[3:] if line.startswith(_BOM) else line


def _strip_cr(lines: list[bytes]) -> list[bytes]:
    """Drop the ``\\r`` of CRLF line ends, as ``ReadFromText`` does."""
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


#: Per worker process: path -> sorted offsets (multiples of _CHUNK) and the newlines before
#: each, so that the line numbers of a file's ranges are counted once, however many there are.
_MARKS: dict[str, tuple[list[int], list[int]]] = {}
_MARKS_LOCK = threading.Lock()


def locate(where: Where) -> dict[str, Any]:
    """A dead letter's ``source``: ``{"file": path, "line": 1-based line number}``.

    A range that starts at byte 0 (every compressed file, every file smaller than
    :data:`RANGE_BYTES`) knows its line numbers. One that starts mid-file counts the newlines
    before it, the first time one of its lines is dead-lettered: a read of the file up to the
    range, at the speed of ``bytes.count`` (about 0.15 s per 64 MiB from the page cache on a
    2-core machine). Counts are kept per worker process at every 4 MiB and at each range
    located, so a worker reads a file at most once more, plus at most 4 MiB per range that
    holds dead letters, however many it holds; a run without dead letters pays nothing.
    """
    path, start, index = where
    before = 0 if start == 0 else 1 + _newlines_before(path, start - 1)
    return {"file": path, "line": before + index + 1}


def _newlines_before(path: str, offset: int) -> int:
    """Newlines in bytes ``[0, offset)`` of an uncompressed file.

    Lines that start before a range's first byte ``s`` are the first line and one per newline
    in ``[0, s - 1)``: ``read_range`` skips the line that holds byte ``s - 1``.
    """
    with _MARKS_LOCK:  # a worker process may run several threads
        offsets, counts = _MARKS.setdefault(path, ([0], [0]))
        i = bisect.bisect_right(offsets, offset) - 1
        pos, count = offsets[i], counts[i]
        if pos == offset:
            return count
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.seek(pos)
            while pos < offset:
                chunk = f.read(min(_CHUNK - pos % _CHUNK, offset - pos))
                if not chunk:
                    break
                pos += len(chunk)
                count += chunk.count(b"\n")
                if pos % _CHUNK == 0 or pos == offset:  # kept: each chunk, and the range's
                    j = bisect.bisect_left(offsets, pos)
                    if j == len(offsets) or offsets[j] != pos:
                        offsets.insert(j, pos)
                        counts.insert(j, count)
        return count


class _ReadRange(beam.DoFn):
    def process(self, element: tuple[str, int, int]) -> Iterator[LineBatch]:
        yield from read_range(*element)


class ReadLineBatches(beam.PTransform):
    """Read files matching ``pattern`` as a PCollection of :class:`LineBatch` elements.

    The pattern is matched when the pipeline is built, so a missing input fails before
    anything runs.
    """

    def __init__(self, pattern: str) -> None:
        super().__init__()
        files = match(pattern)
        PROGRESS.expect(sum(size for _, size in files))
        self._ranges = ranges(files)

    def expand(self, pipeline: beam.PBegin) -> beam.PCollection:
        return (
            pipeline
            | "Ranges" >> beam.Create(self._ranges)
            | "Spread" >> beam.Reshuffle()
            | "Lines" >> beam.ParDo(_ReadRange())
        )


# --- reading a file, checked ------------------------------------------------------------------


def open_lines(path: str, *, whole: bool) -> _CheckedFile:
    """Open ``path`` for :func:`read_range`: decompressed when ``whole`` and the name says it
    is compressed (as ``CompressionTypes.AUTO`` detects it), raw otherwise. Reads add to the
    progress counters; read errors, corrupt and truncated data raise
    :class:`~liveagg.errors.PathError`."""
    compression = CompressionTypes.detect_compression_type(path)
    try:
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:
        raise PathError(path, f"cannot be read: {reason(e)}") from None
    if not whole or compression == CompressionTypes.UNCOMPRESSED:
        compression = CompressionTypes.UNCOMPRESSED
    return _CheckedFile(raw, path, compression)


def _decompressor(compression: str) -> Any:
    """A decompressor for one member (stream) of a file, of the kind Beam's
    ``CompressedFile._initialize_decompressor`` makes."""
    if compression == CompressionTypes.GZIP:
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if compression == CompressionTypes.DEFLATE:
        return zlib.decompressobj()
    if compression == CompressionTypes.BZIP2:
        return bz2.BZ2Decompressor()
    if compression == CompressionTypes.LZMA:
        return lzma.LZMADecompressor()
    if compression == CompressionTypes.ZSTD:
        import zstandard  # a dependency of apache-beam

        return zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj()
    raise ValueError(f"{compression!r} is not a compression type")


def _corrupt_data_errors() -> tuple[type[BaseException], ...]:
    """What the decompressors raise on bad data (``bz2`` raises ``OSError``)."""
    errors: tuple[type[BaseException], ...] = (zlib.error, OSError, lzma.LZMAError, EOFError)
    try:
        import zstandard
    except ImportError:
        return errors
    return (*errors, zstandard.ZstdError)


class _CheckedFile:
    """The part of a binary file that :func:`read_range` uses (``read``, ``readline``,
    ``seek``, ``tell``; only ``read`` when compressed), counting the bytes read (``read_range``
    counts the lines it splits) and turning failures into :class:`~liveagg.errors.PathError`.

    A compressed file is decompressed member after member (gzip, bzip2, xz and zstd files
    may hold several, as ``cat a.gz b.gz`` makes); the file must end where a member ends.
    An empty compressed file is truncated too, as ``gzip -t`` says of one.
    """

    def __init__(self, raw: BinaryIO, path: str, compression: str) -> None:
        self._raw = raw
        self._path = path
        self._compression = compression
        self._decompressor = (
            None if compression == CompressionTypes.UNCOMPRESSED else _decompressor(compression)
        )

    def __enter__(self) -> _CheckedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    def _raw_read(self, size: int) -> bytes:
        try:
            data = self._raw.read(size)
        except OSError as e:
            raise PathError(self._path, f"cannot be read: {reason(e)}") from None
        PROGRESS.add(len(data))
        return data

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (more when a compressed chunk inflates); ``b""`` only at the
        end of the file."""
        if self._decompressor is None:
            return self._raw_read(size)
        while True:
            if self._decompressor.eof:  # a member ended: what follows starts another
                data = self._decompressor.unused_data
                self._decompressor = _decompressor(self._compression)
                if not data:
                    data = self._raw_read(size)
                    if not data:
                        return b""
            else:
                data = self._raw_read(size)
                if not data:
                    raise PathError(
                        self._path,
                        f"truncated {self._compression} data: the file ends inside a "
                        "compressed stream, so its last lines are missing",
                    )
            try:
                out = self._decompressor.decompress(data)
            except _corrupt_data_errors() as e:
                raise PathError(self._path, f"corrupt {self._compression} data: {e}") from None
            if out:
                return out

    def readline(self) -> bytes:
        try:
            line = self._raw.readline()
        except OSError as e:
            raise PathError(self._path, f"cannot be read: {reason(e)}") from None
        PROGRESS.add(len(line), 1 if line.endswith(b"\n") else 0)
        return line

    def seek(self, offset: int) -> None:
        self._raw.seek(offset)

    def tell(self) -> int:
        return self._raw.tell()
