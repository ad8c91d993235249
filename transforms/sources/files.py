"""JSON Lines files read as batches of lines, so that Beam's per-element cost is paid per batch.

``ReadFromText`` emits one element per line; at a few microseconds of runner work per element
that alone caps a pipeline near 100,000 lines per second per core. Here each element is a
list of up to :data:`BATCH_LINES` raw lines (``bytes``, without the newline; invalid UTF-8 is
left for the JSON decoder to reject as a dead letter). Uncompressed files are split into
byte ranges of :data:`RANGE_BYTES` so that several workers share a large file; compressed
files (``.gz``, ``.bz2``, ...) are read whole.

A compressed file must end where a compressed stream ends. Beam's ``CompressedFile`` does not
check that: when the underlying file is exhausted it sets ``self._read_eof = True`` whatever
state its decompressor is in (``apache_beam/io/filesystem.py``,
``CompressedFile._fetch_to_internal_buffer``), so a ``.gz`` cut inside a member reads as
complete, its last lines lost. :func:`open_lines` decompresses here instead, member after
member, and a file that ends inside one, or that does not decompress, fails the run with a
:class:`~liveagg.errors.PathError`, as does a file that cannot be read.
"""

from __future__ import annotations

import bz2
import lzma
import os
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from liveagg.errors import PathError, reason
from liveagg.transforms.sources.progress import PROGRESS

#: Lines per element handed to the aggregation.
BATCH_LINES = 20_000
#: Size of the byte ranges an uncompressed file is split into.
RANGE_BYTES = 64 << 20
_CHUNK = 4 << 20


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
        if FileSystems.get_scheme(path) is None and os.path.isfile(path):  # not a FIFO, say
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


def read_range(path: str, start: int, end: int, batch: int = BATCH_LINES) -> Iterator[list[bytes]]:
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
        pending: list[bytes] = []
        carry = b""
        while end < 0 or pos < end:
            chunk = f.read(_CHUNK if end < 0 else min(_CHUNK, end - pos))
            if not chunk:
                break
            pos += len(chunk)
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            pending.extend(lines)
            while len(pending) >= batch:
                yield _strip_cr(pending[:batch])
                del pending[:batch]
        if carry and end >= 0 and pos >= end:
            carry += f.readline().rstrip(b"\n")  # the last line started before ``end``
        if carry:
            pending.append(carry)
        if pending:
            yield _strip_cr(pending)


def _strip_cr(lines: list[bytes]) -> list[bytes]:
    """Drop the ``\\r`` of CRLF line ends, as ``ReadFromText`` does."""
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


class _ReadRange(beam.DoFn):
    def process(self, element: tuple[str, int, int]) -> Iterator[list[bytes]]:
        yield from read_range(*element)


class ReadLineBatches(beam.PTransform):
    """Read files matching ``pattern`` as a PCollection of line batches (``list[bytes]``).

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
    ``seek``, ``tell``; only ``read`` when compressed), counting progress and turning
    failures into :class:`~liveagg.errors.PathError`.

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
            data = self._raw_read(size)
            PROGRESS.add(lines=data.count(b"\n"))
            return data
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
                PROGRESS.add(lines=out.count(b"\n"))
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
