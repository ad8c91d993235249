"""Sinks: where output rows and dead letters go.

The file sink writes JSON Lines (or CSV / Parquet) through Beam's ``FileSystems``, so local
paths, ``s3://`` and ``gs://`` work alike. Rows are grouped into one file per window:
``<dir>/<view>/<window_start>_<window_end>.jsonl`` with compact UTC times
(``20130101T100000Z``). Session views, whose windows are per key, get one file per UTC day
of the session start. In streaming, each firing writes its own part file so that no file is
rewritten (``..._<window_end>-<pane timestamp>-<n>.jsonl``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.io.filesystems import FileSystems


def _compact(rfc: str) -> str:
    return rfc.replace("-", "").replace(":", "").replace(".", "")


def _file_stem(row: dict[str, Any], session: bool) -> str:
    if session:
        return "sessions_" + row["window_start"][:10].replace("-", "")
    return f"{_compact(row['window_start'])}_{_compact(row['window_end'])}"


def _sort_key(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


def _encode_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.inprogress"
    with FileSystems.create(tmp) as handle:
        handle.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


class _WriteGroup(beam.DoFn):
    def __init__(self, directory: str) -> None:
        self._directory = directory.rstrip("/")

    def process(self, element: tuple[tuple[str, str], Iterable[dict[str, Any]]]) -> Iterable[str]:
        (folder, stem), rows = element
        path = FileSystems.join(self._directory, folder, f"{stem}.jsonl")
        _write(path, _encode_jsonl(sorted(rows, key=_sort_key)))
        yield path


class WriteViewFiles(beam.PTransform):
    """Writes one view's rows as JSON Lines, one file per window (bounded input).

    Example::

        rows | WriteViewFiles("out/", "cdn", session=False)
    """

    def __init__(self, directory: str, view: str, session: bool) -> None:
        super().__init__()
        self._directory = directory
        self._view = view
        self._session = session

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        view, session = self._view, self._session
        return (
            rows
            | "ByWindow" >> beam.Map(lambda r: ((view, _file_stem(r, session)), r))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(_WriteGroup(self._directory))
        )


class WriteDeadLetters(beam.PTransform):
    """Writes dead letters as JSON Lines under ``<dir>/_dead_letter/``, one file per view."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self._directory = directory

    def expand(self, dead: beam.PCollection) -> beam.PCollection:
        return (
            dead
            | "ByView" >> beam.Map(lambda d: (("_dead_letter", d["view"] or "_input"), d))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(_WriteGroup(self._directory))
        )
