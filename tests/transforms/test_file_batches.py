"""Line batches from files: byte ranges neither lose nor repeat a line, whatever the split."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

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
    with pytest.raises(FileNotFoundError, match="no file matches"):
        match(str(tmp_path / "missing-*.jsonl"))
