"""File sinks: rows as JSON Lines, CSV or Parquet files, locally, on S3 or on GCS.

Every file goes through a Beam filesystem (see :mod:`.objectstores`), so a local folder,
``s3://bucket/prefix`` and ``gs://bucket/prefix`` behave alike. Under the sink's path::

    <view>/<window_start>_<window_end>.<ext>   bounded input: one file per window
    <view>/sessions_<yyyymmdd>.<ext>           session windows: one file per UTC day
    <view>/global-<NN>.<ext>                   the global window: running totals, 16 files by key
    <view>/<stem>-<bundle id>.<ext>            unbounded input: one part file per bundle
    _dead_letter/<view>.jsonl                  dead letters (``input`` when no view)
    _milestones/<view>.jsonl                   milestone events (docs/semantics.md)
    _SUCCESS                                   empty, written last by a run that finished

Times are compact UTC (``20130101T100000Z``). No data file's name starts with ``_`` or
``.``, which Spark, Hive and Hadoop readers skip; a file being written on a local disk is
``<folder>/.<name>.<random>.inprogress``, which they skip, and is renamed when complete.
:class:`OutputFolder` is what a run does around the pipeline: check the folder can be
written, remove ``_SUCCESS`` (and, for bounded input, the previous run's files of the folders
it writes), and write ``_SUCCESS`` once everything else is written.

A bounded file holds the window's rows in a
stable order and is replaced whole when the pipeline runs again. Unbounded input never
reaches the end of the global window, where a ``GroupByKey`` would fire, so each bundle
writes one new file per window it saw: every pane lands in a file of its own and no file is
rewritten. A window then has several part files, and a retried bundle may repeat rows;
readers keep, per grouping key and window, the row with the highest ``pane_index``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import io
import json
import os
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.io.filesystem import BeamIOError, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from liveagg.engine.compiled import KEY, TIMESTAMP, Column, CompiledView, as_compiled
from liveagg.errors import PathError, reason
from liveagg.settings import Connections
from liveagg.spec import DEFAULT_FILE_FORMAT, INPUT_DEAD_LETTERS, Sink, ViewSpec
from liveagg.transforms.shuffle import pack, unpack
from liveagg.transforms.sinks import objectstores, register_sink

#: File formats; each is also the file extension.
FORMATS = ("jsonl", "csv", "parquet")
_MIME_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}
#: The folder of dead letters (their file is the view's name, or INPUT_DEAD_LETTERS).
DEAD_LETTER_FOLDER = "_dead_letter"
#: The folder of milestone events, a file per view.
MILESTONE_FOLDER = "_milestones"
#: The file stem of a view's rows in the global window (they have no window bounds), and how
#: many files they are spread over by key, so that no one worker writes every key.
GLOBAL_STEM = "global"
GLOBAL_FILES = 16
#: The empty file a finished run writes last.
SUCCESS = "_SUCCESS"
_IN_PROGRESS = ".inprogress"


def view_columns(view: CompiledView | ViewSpec) -> tuple[Column, ...]:
    """The columns of the view's rows, in row order (SPEC section 3): the compiled view's."""
    return as_compiled(view).columns


# --- formats ------------------------------------------------------------------------------


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits, which orjson refuses; json writes it exactly
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _text(value: Any) -> str | None:
    """Strings as they are, anything else as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    return _json(value).decode()


def _json_text(value: Any) -> str:
    """JSON text, strings included: a ``json`` column may hold ``"5"`` as well as ``5``."""
    return _json(value).decode()


def encode_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return _jsonl(map(_json, rows))


def _jsonl(lines: Iterable[bytes]) -> bytes:
    """Encoded rows as a JSON Lines file."""
    return b"".join(line + b"\n" for line in lines)


def encode_csv(rows: Iterable[dict[str, Any]], columns: Sequence[Column]) -> bytes:
    """A header row, then one line per row: strings as they are (JSON text in ``json``
    columns), other values as JSON text, null as an empty field.

    Lines end with LF, and a field holding a comma, a quote, CR or LF is quoted (RFC 4180).
    The writer keeps the excel dialect's CRLF row ending (csv.py: ``lineterminator =
    '\\r\\n'``) because csv quotes a field for the characters of the line terminator: with
    ``lineterminator="\\n"`` a bare CR went out unquoted and readers split the record there.
    Each row's CRLF is then cut to LF.
    """
    out = io.StringIO()
    writer = csv.writer(out)

    def write_line(cells: list[str]) -> None:
        writer.writerow(cells)
        out.seek(out.tell() - 2)  # the row's "\r\n"
        out.write("\n")
        out.truncate()

    write_line([c.name for c in columns])
    cell = [_json_text if c.type == "json" else _text for c in columns]
    for row in rows:
        write_line(
            [
                "" if (v := row.get(c.name)) is None else text(v)
                for c, text in zip(columns, cell, strict=True)
            ]
        )
    return out.getvalue().encode()


def _arrow_types() -> dict[str, Any]:
    import pyarrow as pa

    return {
        "text": pa.string(),
        "bigint": pa.int64(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "list<double>": pa.list_(pa.float64()),
        "list<bigint>": pa.list_(pa.int64()),
        "list<text>": pa.list_(pa.string()),
        "json": pa.string(),
        KEY: pa.string(),
        TIMESTAMP: pa.timestamp("us", tz="UTC"),
    }


def _timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value)  # RFC 3339 with "Z": UTC-aware


_PARQUET_VALUE: dict[str, Callable[[Any], Any]] = {
    KEY: _text,
    "json": _json_text,
    TIMESTAMP: _timestamp,
    "double": float,
}


def arrow_schema(columns: Sequence[Column]) -> Any:
    """The Parquet schema of a view's rows; an unknown column type lists the known ones."""
    import pyarrow as pa

    types = _arrow_types()
    fields = []
    for column in columns:
        if column.type not in types:
            raise ValueError(
                f"column {column.name!r} has output type {column.type!r}, which parquet files "
                f"cannot store; known: {', '.join(sorted(types))}"
            )
        fields.append(pa.field(column.name, types[column.type]))
    return pa.schema(fields)


def encode_parquet(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(columns)
    arrays = []
    for column, field in zip(columns, schema, strict=True):
        convert = _PARQUET_VALUE.get(column.type)
        values = [row.get(column.name) for row in rows]
        try:
            if convert is not None:
                values = [None if v is None else convert(v) for v in values]
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as e:
            raise ValueError(
                f"column {column.name!r} is declared {column.type} but holds a value that "
                f"does not fit: {e}"
            ) from e
    out = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), out)
    return out.getvalue().to_pybytes()


def encode(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[Column] | None) -> bytes:
    if fmt == "jsonl":
        return encode_jsonl(rows)
    if columns is None:
        raise ValueError(f"format {fmt!r} needs the view's columns")
    return encode_csv(rows, columns) if fmt == "csv" else encode_parquet(rows, columns)


def check_format(fmt: str, columns: Sequence[Column] | None = None) -> None:
    """Fail at graph construction on an unknown format, a missing library, or (given the
    columns) a column type the format cannot store."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown file format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ImportError("parquet files need pyarrow: pip install 'liveagg[parquet]'")
    if columns is not None and fmt == "parquet":
        arrow_schema(columns)


# --- writing ------------------------------------------------------------------------------


def _compact(rfc: str) -> str:
    return rfc.replace("-", "").replace(":", "").replace(".", "")


def file_stem(row: dict[str, Any], session: bool, global_keys: Sequence[str] | None = None) -> str:
    """``<window_start>_<window_end>``, ``sessions_<yyyymmdd>`` for session windows, or
    ``global-<NN>`` for the global window, whose rows have no bounds: ``NN`` is the CRC-32 of
    the JSON array of the row's ``global_keys`` values (its grouping columns and grouping set)
    modulo :data:`GLOBAL_FILES`, so that a key's row is in the same file from run to run."""
    if global_keys is not None:
        return _GLOBAL_STEMS[zlib.crc32(_json([row[c] for c in global_keys])) % GLOBAL_FILES]
    return _stem(row["window_start"], row["window_end"], session)


_GLOBAL_STEMS = [f"{GLOBAL_STEM}-{i:02d}" for i in range(GLOBAL_FILES)]


@functools.lru_cache(maxsize=4096)
def _stem(start: str, end: str, session: bool) -> str:
    """Cached: every row of a window names the same file."""
    if session:
        return "sessions_" + start[:10].replace("-", "")
    return f"{_compact(start)}_{_compact(end)}"


def _row_order(row: dict[str, Any]) -> bytes:
    return _json(list(row.values()))


def _remove(fs: FileSystem, paths: Sequence[str]) -> None:
    """Remove exactly these files, whose paths may hold the glob characters ``*?[``.

    ``FileSystem.delete`` removes what a path matches as a glob pattern on Beam's local and
    GCS filesystems (localfilesystem.py: ``for match_result in self.match(paths):``,
    gcsfilesystem.py: ``match_result = self.match([path_to_use])[0]``), so ``out[1]/_SUCCESS``
    matched nothing and failed, and ``out*x/_SUCCESS`` removed ``outAx/_SUCCESS`` too. Beam's
    S3 filesystem deletes the keys as given (s3io.py: ``buckets, keys =
    zip(*[parse_s3_path(path) for path in paths])``).
    """
    if not paths:
        return
    if isinstance(fs, LocalFileSystem):
        for path in paths:
            os.remove(path)
    elif FileSystems.get_scheme(paths[0]) == "gs":
        # What GCSFileSystem.delete does with the paths its match found.
        results = fs._gcsIO().delete_batch(list(paths))
        failed = {path: error for path, error in results if error is not None}
        if failed:
            raise BeamIOError("Delete operation failed", failed)
    else:
        fs.delete(list(paths))


class _Files:
    """Where and how a sink writes. Pickled with the DoFn; the filesystem opens on the worker."""

    def __init__(
        self,
        directory: str,
        fmt: str,
        columns: Sequence[Column] | None,
        connections: Connections | None,
    ) -> None:
        self.directory = directory.rstrip("/") or directory
        self.fmt = fmt
        self.columns = tuple(columns) if columns is not None else None
        self.connections = connections

    @property
    def line(self) -> Callable[[dict[str, Any]], bytes] | None:
        """How a row becomes its line where the format is lines of JSON (None otherwise):
        bounded rows then travel to their file as lines, encoded once."""
        return _json if self.fmt == "jsonl" else None

    def open(self) -> None:
        self._fs = objectstores.filesystem(self.directory, self.connections)
        self._object_store = objectstores.is_object_store(self.directory)

    def write(self, folder: str, name: str, rows: Sequence[dict[str, Any]], replace: bool) -> str:
        return self.write_data(folder, name, encode(rows, self.fmt, self.columns), replace)

    def write_data(self, folder: str, name: str, data: bytes, replace: bool) -> str:
        """Write an encoded file; the path written.

        A failure (a full disk, a refused upload) raises :class:`PathError` naming the file,
        after removing what was half written.
        """
        path = self._fs.join(self.directory, folder, f"{name}.{self.fmt}")
        mime_type = _MIME_TYPES[self.fmt]
        if self._object_store:  # an object appears whole when its upload completes
            try:
                with self._fs.create(path, mime_type=mime_type) as handle:
                    handle.write(data)
            except Exception as e:
                raise PathError(path, f"cannot be written: {reason(e)}") from None
            return path
        # Readers never see a half-written file: they skip names starting with ".".
        tmp = self._fs.join(
            self.directory, folder, f".{name}.{self.fmt}.{uuid.uuid4().hex[:8]}{_IN_PROGRESS}"
        )
        try:
            with self._fs.create(tmp, mime_type=mime_type) as handle:
                handle.write(data)
            if replace and self._fs.exists(path):
                _remove(self._fs, [path])
            self._fs.rename([tmp], [path])
        except BaseException as e:  # Ctrl-C too: no in-progress file is left behind
            with contextlib.suppress(Exception):
                if self._fs.exists(tmp):
                    _remove(self._fs, [tmp])
            if isinstance(e, Exception):
                raise PathError(path, f"cannot be written: {reason(e)}") from None
            raise
        return path


class _WriteWindowFiles(beam.DoFn):
    """Bounded input: one file per grouped (folder, stem), rows in a stable order.

    JSON Lines rows arrive as their lines (encoded once, by ``_GroupInBundle``), sorted here
    as bytes: the rows of one file have the same keys in the same order, so their lines sort
    as the JSON arrays of their values do, which is the order of the other formats.
    """

    def __init__(self, files: _Files) -> None:
        self._files = files

    def setup(self) -> None:
        self._files.open()

    def process(self, element: tuple[tuple[str, str], Iterable[bytes]]) -> Iterator[str]:
        (folder, stem), packed = element
        items = [item for part in packed for item in unpack(part)]
        if self._files.line is not None:  # the rows' lines
            yield self._files.write_data(folder, stem, _jsonl(sorted(items)), replace=True)
            return
        yield self._files.write(folder, stem, sorted(items, key=_row_order), replace=True)


class _WritePartFiles(beam.DoFn):
    """Unbounded input: rows buffered per (folder, stem) in a bundle, one new file each."""

    def __init__(self, files: _Files) -> None:
        self._files = files

    def setup(self) -> None:
        self._files.open()

    def start_bundle(self) -> None:
        self._bundle = uuid.uuid4().hex
        self._rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)

    def process(self, element: tuple[tuple[str, str], dict[str, Any]]) -> None:
        key, row = element
        self._rows[key].append(row)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for (folder, stem), rows in self._rows.items():
            path = self._files.write(folder, f"{stem}-{self._bundle}", rows, replace=False)
            yield GlobalWindows.windowed_value(path)
        self._rows.clear()


def _write(
    rows: beam.PCollection,
    file_key: Callable[[dict[str, Any]], tuple[str, str]],
    files: _Files,
    bounded: bool,
    key_label: str,
) -> beam.PCollection:
    if bounded:
        grouped = (
            rows
            | key_label >> beam.ParDo(_GroupInBundle(file_key, files.line))
            | "Group" >> beam.GroupByKey()
        )
        return grouped | "Write" >> beam.ParDo(_WriteWindowFiles(files))
    keyed = rows | key_label >> beam.Map(lambda r: (file_key(r), r))
    return keyed | "Write" >> beam.ParDo(_WritePartFiles(files))


class _GroupInBundle(beam.DoFn):
    """Rows gathered per file key within a bundle, so the shuffle moves one packed list per
    file and bundle instead of one element per row; for JSON Lines (``encoded``), each row's
    line, which packs and unpacks as one byte string instead of a dict's keys and values.

    The file key names the window (its bounds are in the file name), so the rows leave in
    the global window: asking Beam for each row's window would cost a slower call per row.
    """

    def __init__(
        self,
        file_key: Callable[[dict[str, Any]], tuple[str, str]],
        encoded: Callable[[dict[str, Any]], bytes] | None = None,
    ) -> None:
        self._file_key = file_key
        self._encoded = encoded

    def start_bundle(self) -> None:
        self._rows: dict[tuple[str, str], list[Any]] = defaultdict(list)

    def process(self, row: dict[str, Any]) -> None:
        self._rows[self._file_key(row)].append(row)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        encoded = self._encoded
        for key, rows in self._rows.items():
            packed = pack(rows if encoded is None else list(map(encoded, rows)))
            yield GlobalWindows.windowed_value((key, packed))
        self._rows.clear()


def _view_file(
    view: str, session: bool, global_keys: Sequence[str] | None, row: dict[str, Any]
) -> tuple[str, str]:
    return view, file_stem(row, session, global_keys)


def _dead_letter_file(letter: dict[str, Any]) -> tuple[str, str]:
    return DEAD_LETTER_FOLDER, letter["view"] or INPUT_DEAD_LETTERS


def _milestone_file(event: dict[str, Any]) -> tuple[str, str]:
    return MILESTONE_FOLDER, event["view"]


class WriteViewFiles(beam.PTransform):
    """Writes one view's rows under ``<directory>/<view>/``; yields the paths written.

    ``bounded=False`` writes a part file per bundle and window instead of one file per
    window (see the module docstring). ``connections`` configures ``s3://`` and ``gs://``;
    without it the filesystem comes from the pipeline options, as for any Beam IO.

    Example::

        rows | WriteViewFiles("out/", "cdn", session=False)
        rows | WriteViewFiles("s3://bucket/views", "cdn", session=False, format="parquet",
                              columns=view_columns(spec), bounded=False, connections=conns)

    ``global_keys``: the rows are the global window's, without bounds; they go to
    ``global-<NN>.<ext>`` by these columns' values (:func:`file_stem`).
    """

    def __init__(
        self,
        directory: str,
        view: str,
        session: bool,
        *,
        format: str = "jsonl",
        columns: Sequence[Column] | None = None,
        bounded: bool = True,
        connections: Connections | None = None,
        global_keys: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        check_format(format, columns)
        if format != "jsonl" and columns is None:
            raise ValueError(f"format {format!r} needs the view's columns: view_columns(view)")
        objectstores.require(directory)
        self._files = _Files(directory, format, columns, connections)
        self._view = view
        self._session = session
        self._global = tuple(global_keys) if global_keys is not None else None
        self._bounded = bounded

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        file_key = functools.partial(_view_file, self._view, self._session, self._global)
        return _write(rows, file_key, self._files, self._bounded, "ByWindow")


class _WriteByView(beam.PTransform):
    """JSON Lines of a run's records that are not rows, a file per view in one folder
    (bounded input; part files for unbounded input). ``_file`` names a record's file."""

    _file: Callable[[dict[str, Any]], tuple[str, str]]

    def __init__(
        self, directory: str, *, bounded: bool = True, connections: Connections | None = None
    ) -> None:
        super().__init__()
        objectstores.require(directory)
        self._files = _Files(directory, "jsonl", None, connections)
        self._bounded = bounded

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return _write(records, type(self)._file, self._files, self._bounded, "ByView")


class WriteDeadLetters(_WriteByView):
    """Writes dead letters as JSON Lines under ``<directory>/_dead_letter/``, a file per view
    (``input.jsonl`` for messages that no view could read).

    Example::

        compiled.dead_letters | WriteDeadLetters("out/", bounded=False)
    """

    _file = staticmethod(_dead_letter_file)


class WriteMilestones(_WriteByView):
    """Writes milestone events as JSON Lines under ``<directory>/_milestones/``, a file per
    view (bounded input; part files ``<view>-<bundle id>.jsonl`` for unbounded input).

    Example::

        compiled.milestones | WriteMilestones("out/")
    """

    _file = staticmethod(_milestone_file)


# --- the output folder of a run ----------------------------------------------------------


@dataclass
class OutputFolder:
    """A folder a run writes files under, and what the run owns in it.

    ``views`` write their rows under ``<path>/<view>/``; with ``dead_letters`` the run's dead
    letters go under ``<path>/_dead_letter/``, with ``milestones`` its milestone events under
    ``<path>/_milestones/``. A run calls :meth:`prepare` before the
    pipeline starts, :meth:`finish` once it has finished, and :meth:`abort` when it failed or
    was interrupted, so that ``_SUCCESS`` is there exactly when the folder holds a complete
    result.

    Example::

        folder = OutputFolder("out", {"cdn"}, dead_letters=True)
        folder.prepare(replace=True)   # fails fast if "out" cannot be written
        ...                            # run the pipeline
        folder.finish()                # out/_SUCCESS
    """

    path: str
    views: set[str]
    dead_letters: bool = False
    connections: Connections | None = None
    milestones: bool = False

    def _filesystem(self) -> FileSystem:
        return objectstores.filesystem(self.path, self.connections)

    def _join(self, *parts: str) -> str:
        return self._filesystem().join(self.path, *parts)

    def owned(self) -> list[str]:
        """The folders whose files this run replaces: ``<view>/``, ``_dead_letter/`` and
        ``_milestones/``."""
        names = sorted(self.views) + ([DEAD_LETTER_FOLDER] if self.dead_letters else [])
        names += [MILESTONE_FOLDER] if self.milestones else []
        return [self._join(name) for name in names]

    def prepare(self, *, replace: bool) -> None:
        """Check that the folder can be written, remove ``_SUCCESS``, and with ``replace``
        (bounded input) remove the files a previous run wrote in the owned folders.

        Only files liveagg writes are removed (``*.jsonl``, ``*.csv``, ``*.parquet`` and
        in-progress files directly in an owned folder); anything else is left alone.
        Raises :class:`PathError` naming the folder.
        """
        self._probe()
        fs = self._filesystem()
        success = self._join(SUCCESS)
        try:
            if fs.exists(success):
                _remove(fs, [success])
            if replace:
                stale = [path for folder in self.owned() for path in self._files_in(folder)]
                _remove(fs, stale)
        except Exception as e:
            raise PathError(
                self.path, f"cannot remove the previous run's files: {reason(e)}"
            ) from None

    def _probe(self) -> None:
        """Write and remove a hidden file: an output that cannot be written fails here, before
        anything is computed (a missing bucket or a refused credential too, on S3 and GCS).
        Locally, so does each folder the run writes in (``<view>/``...) that exists already:
        a file of that name, or a folder that cannot be written."""
        local = not objectstores.is_object_store(self.path)
        folders = [self.path]
        if local:
            folders += [folder for folder in self.owned() if os.path.lexists(folder)]
        for folder in folders:
            if local and os.path.exists(folder) and not os.path.isdir(folder):
                raise PathError(folder, "is not a folder; give a folder for the output")
            self._write_check(folder, local)

    def _write_check(self, folder: str, local: bool) -> None:
        fs = self._filesystem()
        probe = fs.join(folder, f".liveagg-write-check-{uuid.uuid4().hex[:8]}")
        try:
            if local:
                os.makedirs(folder, exist_ok=True)
            objectstores.write_empty(probe, self.connections)
            _remove(fs, [probe])
        except Exception as e:
            raise PathError(folder, f"cannot be written: {reason(e)}") from None

    def _files_in(self, folder: str) -> list[str]:
        """The files liveagg writes (data and in-progress) directly in ``folder``."""
        if not objectstores.is_object_store(folder):
            if not os.path.isdir(folder):
                return []
            with os.scandir(folder) as entries:
                return [e.path for e in entries if e.is_file() and written_by_liveagg(e.name)]
        prefix = folder.rstrip("/") + "/"
        # FileSystem._list lists by the literal prefix (s3io.py: ``request =
        # messages.ListRequest(bucket=bucket, prefix=prefix)``; gcsio.py: ``bucket,
        # prefix=prefix, retry=self._storage_client_retry)``); ``fs.match`` reads it as a glob
        # pattern, so ``out*x/v/*`` also listed (and the run removed) ``outAx/v/``'s files.
        return [
            m.path
            for m in self._filesystem()._list(prefix)
            if m.path.startswith(prefix)
            and "/" not in (name := m.path[len(prefix) :])
            and written_by_liveagg(name)
        ]

    def abort(self) -> None:
        """Remove the in-progress files of a failed or interrupted run (local folders; an
        object store publishes an object only when its upload completes). Best effort."""
        if objectstores.is_object_store(self.path):
            return
        for folder in self.owned():
            with contextlib.suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.endswith(_IN_PROGRESS):
                        with contextlib.suppress(OSError):
                            os.remove(entry.path)

    def finish(self) -> None:
        """Write the empty ``_SUCCESS``: call it last, when every row and dead letter is
        written."""
        try:
            objectstores.write_empty(self._join(SUCCESS), self.connections)
        except Exception as e:
            raise PathError(self._join(SUCCESS), f"cannot be written: {reason(e)}") from None


def written_by_liveagg(name: str) -> bool:
    """Whether a file of this name, in a view or dead-letter folder, is one that a run
    replaces: data files of the formats, and in-progress files."""
    return name.endswith(_IN_PROGRESS) or name.rsplit(".", 1)[-1] in FORMATS


# --- the sinks ----------------------------------------------------------------------------


def global_keys(view: ViewSpec) -> tuple[str, ...] | None:
    """The row keys that place a global view's rows in files (None for other windows)."""
    if not view.window.is_global:
        return None
    sets = ("grouping_set",) if view.grouping_sets is not None else ()
    return (*view.grouping_cols, *sets)


@dataclass(frozen=True)
class FileSink:
    """A :class:`~liveagg.transforms.sinks.RowSink` writing a view's rows as files."""

    path: str
    format: str
    connections: Connections

    def write(
        self, rows: beam.PCollection, view: CompiledView | ViewSpec, *, bounded: bool
    ) -> beam.PCollection | None:
        compiled = as_compiled(view)
        view = compiled.spec
        try:
            transform = WriteViewFiles(
                self.path,
                view.name,
                session=view.window.type == "session",
                global_keys=global_keys(view),
                format=self.format,
                columns=compiled.columns if self.format != "jsonl" else None,
                bounded=bounded,
                connections=self.connections,
            )
        except ValueError as e:
            raise ValueError(f"view {view.name!r}: {self.format} sink at {self.path}: {e}") from e
        return rows | f"{view.name}/WriteFiles/{self.format}/{self.path}" >> transform


def _file_sink(sink: Sink, connections: Connections, scheme: str | None) -> FileSink:
    path = sink.options.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError(f"sink {sink.type!r} needs a path, e.g. {_example(scheme)}")
    if scheme is not None and not path.startswith(f"{scheme}://"):
        raise ValueError(
            f"sink {sink.type!r}: path {path!r} must start with {scheme}://, "
            f"e.g. {_example(scheme)}"
        )
    fmt = sink.options.get("format", DEFAULT_FILE_FORMAT)
    check_format(fmt)
    objectstores.require(path)
    return FileSink(path, fmt, connections)


def _example(scheme: str | None) -> str:
    return (
        f"{scheme}://bucket/views" if scheme else "out/views, s3://bucket/views, gs://bucket/views"
    )


@register_sink("file")
def file_sink(sink: Sink, connections: Connections) -> FileSink:
    """``{"type": "file", "path": ..., "format": "jsonl" | "csv" | "parquet"}``."""
    return _file_sink(sink, connections, None)


@register_sink("s3")
def s3_sink(sink: Sink, connections: Connections) -> FileSink:
    """``{"type": "s3", "path": "s3://bucket/prefix"}``: the file sink on S3."""
    return _file_sink(sink, connections, "s3")


@register_sink("gcs")
def gcs_sink(sink: Sink, connections: Connections) -> FileSink:
    """``{"type": "gcs", "path": "gs://bucket/prefix"}``: the file sink on GCS."""
    return _file_sink(sink, connections, "gs")
