"""Line batches from files: byte ranges neither lose nor repeat a line, whatever the split."""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from liveagg.errors import PathError
from liveagg.transforms.sources.files import match, ranges, read_range


def _lines(path: Path, range_bytes: int, batch: int = 7) -> list[bytes]:
    out: list[bytes] = []
    for file, start, end in ranges(match(str(path)), range_bytes):
        for lines in read_range(file, start, end, batch):
            assert 0 < len(lines) <= batch
            out.extend(lines)
    return out


@pytest.mark.parametrize("range_bytes", [1, 2, 3, 17, 64, 1000, 1 << 20])
@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
@pytest.mark.parametrize("final_newline", [True, False])
def test_every_line_once_in_order(
    tmp_path: Path, range_bytes: int, ending: bytes, final_newline: bool
) -> None:
    rng = random.Random(range_bytes)
    lines = [
        b"".join(rng.choice([b"a", b"{", b"}", b" ", b"\xc3\xa9", b"\xff"]) for _ in range(n))
        for n in (rng.randrange(0, 40) for _ in range(300))
    ]
    lines[5] = lines[6] = b""  # blank lines stay lines
    data = ending.join(lines) + (ending if final_newline else b"")
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    expected = lines if final_newline or lines[-1] else lines[:-1]
    assert _lines(path, range_bytes) == expected


def test_compressed_files_are_read_whole_and_globs_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"x":3}\n{"x":4}\n'))
    (tmp_path / "a.jsonl").write_bytes(b'{"x":1}\n{"x":2}')
    files = match(str(tmp_path / "*"))
    assert [r[1:] for r in ranges(files, 4)] == [(0, 4), (4, 8), (8, 12), (12, 15), (0, -1)]
    assert _lines(tmp_path / "*", 4) == [b'{"x":1}', b'{"x":2}', b'{"x":3}', b'{"x":4}']


def test_no_match_says_so(tmp_path: Path) -> None:
    pattern = str(tmp_path / "missing-*.jsonl")
    with pytest.raises(PathError, match=f"^{re.escape(pattern)}: no file matches; give a JSON"):
        match(pattern)


def test_a_folder_is_refused_with_a_glob_to_give(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"{}\n")
    with pytest.raises(PathError, match=f"^{re.escape(str(tmp_path))}: is a folder; give a file"):
        match(str(tmp_path))


LINES = b"".join(b'{"n": %d}\n' % i for i in range(2000))
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": zstandard.ZstdCompressor().compress,
    "deflate": zlib.compress,
}


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_concatenated_members_are_all_read(tmp_path: Path, ext: str) -> None:
    compress = COMPRESSORS[ext]
    path = tmp_path / f"in.jsonl.{ext}"
    path.write_bytes(compress(LINES[:7000]) + compress(LINES[7000:]))
    assert _lines(path, 1 << 20) == LINES.splitlines()


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_a_file_that_ends_inside_a_member_is_truncated(tmp_path: Path, ext: str) -> None:
    """One whole member and the first 30 bytes of a second: never read as complete."""
    compress = COMPRESSORS[ext]
    path = tmp_path / f"in.jsonl.{ext}"
    path.write_bytes(compress(LINES[:7000]) + compress(LINES[7000:])[:30])
    with pytest.raises(PathError, match=f"^{re.escape(str(path))}: truncated .* ends inside a"):
        _lines(path, 1 << 20)


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_an_empty_compressed_file_is_truncated(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"in.jsonl.{ext}"
    path.write_bytes(b"")
    with pytest.raises(PathError, match=f"^{re.escape(str(path))}: truncated "):
        _lines(path, 1 << 20)


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(LINES))
    data[40:90] = b"\xff" * 50
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(PathError, match=f"^{re.escape(str(path))}: corrupt gzip data: Error -3"):
        _lines(path, 1 << 20)
