"""Line batches from files: byte ranges neither lose nor repeat a line, whatever the split,
and each line knows its file and 1-based line number."""

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

from liveagg.engine.lines import Lines
from liveagg.errors import PathError
from liveagg.transforms.sources import files
from liveagg.transforms.sources.files import locate, match, ranges, read_range


def _lines(path: Path, range_bytes: int, batch: int = 7) -> list[bytes]:
    """Every line read, checking that each one's ``locate`` is its line number in its file
    (counted here by splitting the whole file)."""
    out: list[bytes] = []
    files._MARKS.clear()
    seen: dict[str, int] = {}
    for file, start, end in ranges(match(str(path)), range_bytes):
        for lines in read_range(file, start, end, batch):
            assert 0 < len(lines.lines) <= batch
            for i, line in enumerate(lines.lines):
                seen[file] = number = seen.get(file, 0) + 1
                assert locate(lines.where(i)) == {"file": file, "line": number}, line
            out.extend(lines.lines)
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


def test_line_numbers_are_counted_once_per_range(tmp_path: Path, monkeypatch: object) -> None:
    """A range that starts mid-file counts the newlines before it once, not per dead letter;
    counts are kept at every chunk, so the ranges after the first (in any order) read at
    most one chunk each."""
    monkeypatch.setattr(files, "_CHUNK", 16)  # type: ignore[attr-defined]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b"%d\n" % i for i in range(1, 201)))  # line n holds n
    files._MARKS.clear()
    reads: list[int] = []
    real_open = files.FileSystems.open

    def counting_open(*args: object, **kwargs: object) -> object:
        f = real_open(*args, **kwargs)
        real_read = f.read
        f.read = lambda n=-1: reads.append(n) or real_read(n)  # type: ignore[method-assign]
        return f

    split = ranges(match(str(path)), 50)
    batches = [b for r in reversed(split) for b in read_range(*r, 1000)]
    reads.clear()
    monkeypatch.setattr(files.FileSystems, "open", counting_open)  # type: ignore[attr-defined]
    for batch in batches:
        for i, line in enumerate(batch.lines):
            assert locate(batch.where(i))["line"] == int(line)
    last_start = split[-1][1]
    assert sum(reads) <= last_start + 16 * (len(split) - 2)
    assert set(range(0, last_start, 16)) <= set(files._MARKS[str(path)][0])


def test_bom_is_dropped_at_the_start_of_a_file_only(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.jsonl").write_bytes(bom + b'{"x":1}\n' + bom + b'{"x":2}\n')
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(bom + b'{"x":3}'))
    for range_bytes in (1, 2, 4, 1000):
        assert _lines(tmp_path / "*", range_bytes) == [b'{"x":1}', bom + b'{"x":2}', b'{"x":3}']


@pytest.mark.parametrize("range_bytes", [5, 64, 1 << 20])
def test_a_carriage_return_first_seen_in_a_later_chunk_is_dropped(
    tmp_path: Path, range_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines are checked for a CR only once a chunk read holds one; a file whose first CRLF
    line comes chunks after its start still loses every CR of its line ends."""
    monkeypatch.setattr(files, "_CHUNK", 32)
    lines = [b'{"n":%d}' % i for i in range(200)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b"".join(line + (b"\r\n" if i >= 150 else b"\n") for i, line in enumerate(lines))
    )
    assert _lines(path, range_bytes) == lines


@pytest.mark.parametrize("cut", [0, 5, 50, 89])
@pytest.mark.parametrize("range_bytes", [40, 1000])
def test_a_file_truncated_while_it_is_read_fails_the_read(
    tmp_path: Path, cut: int, range_bytes: int
) -> None:
    """A log rotated with copytruncate: the ranges were made for the whole file, and a run
    that read what was left would write ``_SUCCESS`` over part of the input."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b'{"n": %d}\n' % i for i in range(10)))  # 90 bytes
    spans = ranges(match(str(path)), range_bytes)
    with path.open("r+b") as f:
        f.truncate(cut)
    with pytest.raises(PathError, match=r"truncated while it was read") as info:
        for file, start, end in spans:
            list(read_range(file, start, end))
    assert str(path) in str(info.value)


def test_a_file_that_grows_while_it_is_read_is_read_as_it_was_matched(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b'{"n": %d}\n' % i for i in range(10)))
    spans = ranges(match(str(path)), 40)
    with path.open("ab") as f:
        f.write(b'{"n": 10}\n')
    read = [
        line for file, start, end in spans for b in read_range(file, start, end) for line in b.lines
    ]
    assert read == [b'{"n": %d}' % i for i in range(10)]


@pytest.mark.parametrize("chunk", [1, 2, 5, 16, 64, 4096])
@pytest.mark.parametrize("batch", [1, 3, 20, 1000])
def test_batches_cut_across_chunks_hold_every_line_once(
    tmp_path: Path, chunk: int, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is cut from the chunks read at the newline that ends its last line, wherever
    the chunks end; each batch holds ``batch`` lines but the last, and its lines are left in
    their buffer when each is an object."""
    monkeypatch.setattr(files, "_CHUNK", chunk)
    rng = random.Random(chunk * 1000 + batch)
    lines = [b'{"n": %d, "p": "%s"}' % (i, b"x" * rng.randrange(30)) for i in range(250)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    got: list[bytes] = []
    for part in read_range(str(path), 0, -1, batch):
        assert part.first == len(got)
        assert part.count == len(part.lines) == (batch if len(got) + batch <= 250 else 250 % batch)
        payloads = part.payloads()
        assert type(payloads) is Lines and list(payloads) == part.lines
        got += part.lines
    assert got == lines
    size = path.stat().st_size
    for cut in (1, 3, size // 3, size - 1):
        first = [x for part in read_range(str(path), 0, cut, batch) for x in part.lines]
        rest = [x for part in read_range(str(path), cut, -1, batch) for x in part.lines]
        assert first + rest == lines, cut
