"""Cassandra sink: each view's rows upserted into one table that is derived from the view.

Why it is built this way (the table layout and settings are in ``docs/cassandra.md``):

* The table comes from the view, so a run needs no hand-written DDL. Granularity and grouping
  set are part of the partition key, so rows of different granularities or grouping sets never
  overwrite each other. If the table already exists with a different shape, setup fails and names
  the columns that differ, so the run does not fail later on every single write.
* Panes accumulate (SPEC section 2), so an ``INSERT`` (an upsert) of a later pane replaces the
  earlier one, and a replay ends with the same table. The write timestamp of a row is fixed when
  the row reaches the sink and is kept across retries. An older pane that is retried after a
  newer one therefore cannot win.
* Writes are asynchronous with a limit on requests in flight. Transient errors are retried with
  exponential backoff until a deadline that is long enough to survive a node restart.
  ``finish_bundle`` waits for every write, so a bundle completes only when its rows are stored.
  A write that still fails raises: the runner retries the bundle, or the run fails.
* A row that Cassandra can never store (a key over 64 KiB, a row over the largest request) is
  checked before it is sent and becomes a ``too_large`` dead letter: sent, it would fail its
  whole batch and bundle, and so the run, on every retry (SPEC section 2: bad input never fails
  a run). ``write`` returns these dead letters.
* A table holds one view's rows (its key has no view column), so two views of one run that
  resolve to the same table are refused when the pipeline is built.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from liveagg.engine.compiled import CompiledView, as_compiled
from liveagg.settings import (
    CassandraTls,
    ConnectionFailed,
    Connections,
    Secret,
    env_int,
    env_value,
)
from liveagg.spec import Duration, Sink, ViewSpec
from liveagg.transforms.deadletter import result_dead_letter
from liveagg.transforms.sinks import Exclusive, register_sink

_LOGGER = logging.getLogger(__name__)
_SCHEMA_SETTLE_S = 10.0  # how long a table created by another client may take to show

__all__ = [
    "AsyncWriter",
    "CassandraSink",
    "CassandraWriteError",
    "Column",
    "RetryPolicy",
    "SchemaMismatchError",
    "TableLayout",
    "WriteSettings",
    "column_name",
    "max_request_bytes",
    "prepare_table",
    "retryable_errors",
    "table_layout",
]

NAMESPACE = "liveagg"
_INSTALL_HINT = "the cassandra sink needs cassandra-driver: pip install 'liveagg[cassandra]'"
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

#: ``output_type()`` of an aggregation -> CQL column type.
CQL_TYPES = {
    "bigint": "bigint",
    "double": "double",
    "text": "text",
    "boolean": "boolean",
    "list<double>": "list<double>",
    "list<bigint>": "list<bigint>",
    "list<text>": "list<text>",
    "json": "text",
}


class SchemaMismatchError(ValueError):
    """The table exists, but its columns are not the ones the view writes."""


class CassandraWriteError(RuntimeError):
    """A write still failed after the retries. The bundle fails, so no row is lost silently."""


#: The largest partition key Cassandra stores, serialized. The server refuses more with
#: "Key length of 65536 is longer than maximum of 65535" (cassandra-all 5.0.9,
#: ``org.apache.cassandra.cql3.Validation.validateKey``). A key of several columns is
#: serialized as each value with a 2-byte length before it and one byte after it, as the
#: driver packs the routing key (cassandra/query.py ``_key_parts_packed``:
#: ``yield struct.pack(">H%dsB" % l, l, p, 0)``), which raises "'H' format requires
#: 0 <= number <= 65535" for a larger value before the server can answer.
MAX_KEY_BYTES = 65_535
#: Bytes that a composite key adds per column: the 2-byte length and the end-of-component byte.
KEY_COMPONENT_OVERHEAD = 3
#: The default of both ``native_transport_max_message_size`` and ``max_mutation_size`` (half
#: of the 32 MiB ``commitlog_segment_size``), used where the node's settings cannot be read.
#: A larger request draws "CQL Message of size 18014525 bytes exceeds allowed maximum of
#: 16777216 bytes".
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: What a request and its mutation hold besides the values' bytes and :data:`CELL_OVERHEAD`
#: per value (statement ids, flags, lengths, table id), with room to spare. Measured on
#: Cassandra 5.0.9: an insert of a 1-byte key and a 16,777,136-byte value is stored; with 20
#: bytes more the server answers "CQL Message of size 16777221 bytes exceeds allowed maximum
#: of 16777216 bytes", so that request held 64 bytes besides its values.
REQUEST_OVERHEAD = 1024
#: The dead-letter reasons of a row that Cassandra cannot store: too large, or with a key of
#: one column that is empty (a null or "" grouping value of a global window's only grouping
#: column), which the server refuses with "Key may not be empty".
TOO_LARGE, EMPTY_KEY = "too_large", "empty_key"


# --- values --------------------------------------------------------------------------------


def _key_text(value: Any) -> str:
    """A grouping value as text: strings as they are, other scalars as JSON, null as ``''``.

    Primary-key columns cannot hold null, and a grouping column's value type is not known from
    the view.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _timestamp(value: Any) -> int | None:
    """An RFC 3339 string -> milliseconds since the epoch (Cassandra's ``timestamp`` unit)."""
    if value is None:
        return None
    return (datetime.fromisoformat(value) - _EPOCH) // _MS


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits, which min/max keep exactly
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _double(value: Any) -> float | None:
    return None if value is None else float(value)  # derived and sum values may be ints


def _as_is(value: Any) -> Any:
    return value


_ENCODERS: dict[str, Callable[[Any], Any]] = {"json": _json_text, "double": _double}


# --- table layout ---------------------------------------------------------------------------


def column_name(name: str) -> str:
    """The Cassandra column that stores a view column.

    The name is lowercased, and every character other than ``a-z``, ``0-9`` and ``_`` becomes
    ``_``. A name that does not then start with a letter gets the prefix ``c_``. So
    ``client.ip`` -> ``client_ip``, ``User-Agent`` -> ``user_agent`` and ``2xx`` -> ``c_2xx``.
    Every result can be written in CQL without quotes.
    """
    mapped = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return mapped if re.match(r"[a-z]", mapped) else f"c_{mapped}"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _identifier(value: Any, what: str) -> str:
    """A keyspace or table name as Cassandra reads it unquoted: case-insensitive, lowercased."""
    text = value.lower() if isinstance(value, str) else ""
    if not _IDENTIFIER.match(text):
        raise ValueError(
            f"cassandra sink: {what} {value!r} is not a Cassandra identifier; expected a "
            "letter, then up to 47 letters, digits or '_'"
        )
    return text


@dataclass(frozen=True)
class Column:
    """One CQL column: its name, its CQL type, and the row key that it is filled from."""

    name: str
    type: str
    source: str | None  # key in the output row; None for ``updated_at`` (the write time)
    encode: Callable[[Any], Any] = _as_is


@dataclass(frozen=True)
class TableLayout:
    """The table that a view writes to. The first ``key_size`` columns are the partition key."""

    view: str
    keyspace: str
    table: str
    columns: tuple[Column, ...]
    key_size: int

    @property
    def qualified(self) -> str:
        return f"{_quote(self.keyspace)}.{_quote(self.table)}"

    @property
    def partition_key(self) -> tuple[Column, ...]:
        return self.columns[: self.key_size]

    def create_keyspace_cql(self, replication: int) -> str:
        return (
            f"CREATE KEYSPACE IF NOT EXISTS {_quote(self.keyspace)} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {int(replication)}}}"
        )

    def create_table_cql(self) -> str:
        columns = ",\n".join(f"  {_quote(c.name)} {c.type}" for c in self.columns)
        key = ", ".join(_quote(c.name) for c in self.partition_key)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.qualified} (\n{columns},\n  PRIMARY KEY (({key}))\n)"
        )

    def insert_cql(self) -> str:
        names = ", ".join(_quote(c.name) for c in self.columns)
        markers = ", ".join("?" for _ in self.columns)
        return f"INSERT INTO {self.qualified} ({names}) VALUES ({markers}) USING TIMESTAMP ?"

    def values(self, row: Mapping[str, Any], write_time_us: int) -> list[Any]:
        """Bind values for :meth:`insert_cql`: one per column, then the write timestamp."""
        out = [
            write_time_us // 1000 if c.source is None else c.encode(row.get(c.source))
            for c in self.columns
        ]
        out.append(write_time_us)
        return out

    def unstorable(
        self, serialized: Sequence[bytes | None], max_request: int
    ) -> tuple[str, str] | None:
        """The dead-letter reason and detail of a row that Cassandra would refuse, from the
        bound values of :meth:`insert_cql`, or None. Checked before a row is sent: a refused
        row fails its batch and its bundle."""
        sizes = [0 if v is None else len(v) for v in serialized]
        key = sizes[: self.key_size]
        if len(key) == 1 and key[0] == 0:
            name = self.columns[0].name
            return EMPTY_KEY, (
                f"its partition key, column {name!r}, is empty (a null or empty grouping "
                "value), which Cassandra refuses as a key"
            )
        # One column is stored as it is; several as a composite (MAX_KEY_BYTES).
        key_bytes = key[0] if len(key) == 1 else sum(key) + KEY_COMPONENT_OVERHEAD * len(key)
        if key_bytes > MAX_KEY_BYTES:
            return TOO_LARGE, (
                f"its partition key is {key_bytes} bytes, over the {MAX_KEY_BYTES} bytes that "
                f"Cassandra stores in a key; {self._largest(key)}"
            )
        cells = sum(
            CELL_OVERHEAD + n for n, v in zip(sizes, serialized, strict=True) if v is not None
        )
        if REQUEST_OVERHEAD + cells > max_request:
            return TOO_LARGE, (
                f"the row is about {REQUEST_OVERHEAD + cells} bytes, over the {max_request} "
                "bytes that Cassandra accepts in one request (native_transport_max_message_size,"
                f" max_mutation_size); {self._largest(sizes[: len(self.columns)])}"
            )
        return None

    def _largest(self, sizes: Sequence[int]) -> str:
        i = max(range(len(sizes)), key=sizes.__getitem__)
        return f"column {self.columns[i].name!r} holds {sizes[i]} bytes"

    def mismatches(self, existing: Iterable[tuple[str, str, str, int]]) -> list[str]:
        """Compare with ``system_schema.columns`` rows ``(name, type, kind, position)``.

        Extra regular columns are accepted: the sink does not write to them.
        """
        found = {name: (cql_type, kind, position) for name, cql_type, kind, position in existing}
        problems = []
        for column in self.columns:
            if column.name not in found:
                problems.append(f"missing column {column.name} {column.type}")
            elif found[column.name][0] != column.type:
                problems.append(
                    f"column {column.name} is {found[column.name][0]}, expected {column.type}"
                )
        actual_key = [
            n for _, n in sorted((p, n) for n, (_, k, p) in found.items() if k == "partition_key")
        ]
        expected_key = [c.name for c in self.partition_key]
        if actual_key != expected_key:
            problems.append(
                f"partition key is ({', '.join(actual_key)}), expected ({', '.join(expected_key)})"
            )
        clustering = sorted(n for n, (_, kind, _) in found.items() if kind == "clustering")
        if clustering:
            problems.append(f"clustering columns ({', '.join(clustering)}), expected none")
        return problems


def table_layout(
    view: CompiledView | ViewSpec, keyspace: str, table: str | None = None
) -> TableLayout:
    """The table for ``view``: partition key, then ``window_end``, values and pane columns.

    The global window has no bounds: its rows are keyed by the grouping columns alone (and
    ``grouping_set`` with grouping sets), one row per key holding its running total. A
    global view without grouping columns is one row, keyed by ``view``. The windows of a
    cumulative period share their start, so ``window_end`` is part of their key.

    Raises ``ValueError`` when two view columns map to the same Cassandra column, when an
    aggregation's output type has no column type, or when a name is not a Cassandra identifier.
    """
    compiled = as_compiled(view)
    view = compiled.spec
    types = {c.name: c.type for c in compiled.columns}  # the view's one row schema
    keyspace = _identifier(keyspace, "keyspace")
    table = _identifier(view.name if table is None else table, "table")
    windowed = not view.window.is_global
    # The windows of a cumulative period share their start: the end tells them apart.
    by_end = view.window.type == "cumulative"
    key = [Column(column_name(c), "text", c, _key_text) for c in view.grouping_cols]
    if windowed:
        key.append(Column("window_start", "timestamp", "window_start", _timestamp))
    if by_end:
        key.append(Column("window_end", "timestamp", "window_end", _timestamp))
    if view.window.multi_granularity:
        key.append(Column("granularity", "text", "granularity", _key_text))
    if view.grouping_sets is not None:
        key.append(Column("grouping_set", "int", "grouping_set"))
    if not key:  # a grand total for all time: a partition key needs a column
        key.append(Column("view", "text", "view"))
    values = []
    if windowed and not by_end:
        values.append(Column("window_end", "timestamp", "window_end", _timestamp))
    for aggregation in view.aggregations:
        output_type = types[aggregation.output]
        if output_type not in CQL_TYPES:
            raise ValueError(
                f"view {view.name!r}: aggregation {aggregation.output!r} has output type "
                f"{output_type!r}; the cassandra sink accepts {', '.join(sorted(CQL_TYPES))}"
            )
        cql_type = CQL_TYPES[output_type]
        encode = _ENCODERS.get(output_type, _as_is)
        values.append(Column(column_name(aggregation.output), cql_type, aggregation.output, encode))
    values.extend(Column(column_name(d.name), "double", d.name, _double) for d in view.derived)
    values += [
        Column("pane_timing", "text", "pane_timing"),
        Column("pane_index", "int", "pane_index"),
        Column("updated_at", "timestamp", None),
    ]
    columns = (*key, *values)
    seen: dict[str, str] = {}
    for column in columns:
        source = column.source or "(the write time)"
        if column.name in seen:
            raise ValueError(
                f"view {view.name!r}: {seen[column.name]!r} and {source!r} both map to "
                f"Cassandra column {column.name!r}; rename one of them"
            )
        seen[column.name] = source
    return TableLayout(view.name, keyspace, table, columns, len(key))


# --- retries and in-flight bound ------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by a number of attempts and a total deadline.

    The defaults survive a node restart (tens of seconds) and give up after 5 minutes. A longer
    outage then fails the bundle instead of stalling it without end.
    """

    max_attempts: int = 50
    initial_backoff: timedelta = timedelta(milliseconds=100)
    max_backoff: timedelta = timedelta(seconds=10)
    deadline: timedelta = timedelta(minutes=5)
    jitter: float = 0.5  # each backoff is drawn from [(1 - jitter) * b, b]

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def backoff(self, attempt: int) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based), before jitter is applied."""
        return min(self.max_backoff, self.initial_backoff * 2 ** min(attempt - 1, 40))

    def next_delay(self, attempt: int, elapsed: timedelta) -> timedelta | None:
        """The wait before the next attempt, or None to give up (attempts or deadline spent)."""
        if attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt) * (1 - self.jitter * random.random())
        return None if elapsed + delay > self.deadline else delay


def retryable_errors() -> tuple[type[BaseException], ...]:
    """The errors that are worth another attempt: timeouts, unavailable replicas, no host."""
    from cassandra import OperationTimedOut, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return (WriteTimeout, Unavailable, OperationTimedOut, NoHostAvailable, ConnectionException)


class AsyncWriter:
    """Runs statements asynchronously, with at most ``max_in_flight`` at once.

    ``submit`` blocks while the limit is reached, which applies backpressure to the DoFn.
    ``flush`` waits until every statement is stored or has failed for good, and raises
    :class:`CassandraWriteError` if any statement failed. ``execute`` is
    ``session.execute_async``; tests pass a failing one instead. Driver callbacks run on the
    driver's own thread, so they only count. The DoFn reads the counts and reports them as Beam
    metrics on its own thread.
    """

    def __init__(
        self,
        execute: Callable[[Any], Any],
        *,
        max_in_flight: int,
        retry: RetryPolicy,
        retryable: tuple[type[BaseException], ...],
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._execute = execute
        self._max_in_flight = max_in_flight
        self._retry = retry
        self._retryable = retryable
        self._cond = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._failed = 0
        self._counts = [0, 0, 0]  # written, retries, failures (since the last take_counts)

    def submit(self, statement: Any, rows: int = 1) -> None:
        """Run ``statement`` (a batch of ``rows`` rows, or one), waiting for a free slot."""
        with self._cond:
            while self._error is None and self._pending >= self._max_in_flight:
                self._cond.wait()
            failed = self._error is not None
            if not failed:
                self._pending += 1
        if failed:
            self.flush()  # raises at once: the runner retries the bundle (upserts are safe)
        self._attempt(statement, rows, 1, time.monotonic())

    def flush(self) -> None:
        with self._cond:
            while self._pending:
                self._cond.wait()
            error, failed, self._error, self._failed = self._error, self._failed, None, 0
        if error is not None:
            raise CassandraWriteError(
                f"{failed} row(s) failed; the first after retries: {type(error).__name__}: {error}"
            ) from error

    def take_counts(self) -> tuple[int, int, int]:
        """``(written, retries, failures)`` since the previous call."""
        with self._cond:
            counts, self._counts = tuple(self._counts), [0, 0, 0]
        return counts  # type: ignore[return-value]

    def _attempt(self, statement: Any, rows: int, attempt: int, started: float) -> None:
        try:
            future = self._execute(statement)
        except Exception as e:  # e.g. NoHostAvailable raised before a request is sent
            self._on_error(e, statement, rows, attempt, started)
            return
        future.add_callbacks(
            self._on_success,
            self._on_error,
            callback_args=(rows,),
            errback_args=(statement, rows, attempt, started),
        )

    def _on_success(self, _result: Any, rows: int) -> None:
        with self._cond:
            self._pending -= 1
            self._counts[0] += rows
            self._cond.notify_all()

    def _on_error(
        self, error: BaseException, statement: Any, rows: int, attempt: int, started: float
    ) -> None:
        if isinstance(error, self._retryable):
            elapsed = timedelta(seconds=time.monotonic() - started)
            delay = self._retry.next_delay(attempt, elapsed)
            if delay is not None:
                with self._cond:
                    self._counts[1] += 1
                timer = threading.Timer(
                    delay.total_seconds(), self._attempt, (statement, rows, attempt + 1, started)
                )
                timer.daemon = True
                timer.start()
                return
        with self._cond:
            self._pending -= 1
            self._counts[2] += rows
            self._failed += rows
            if self._error is None:
                self._error = error
            self._cond.notify_all()


#: Bytes Cassandra counts per cell besides its value toward a batch's size (timestamp, TTL,
#: local deletion time). Counting values alone, batches of 20 narrow rows reached 5,380 bytes
#: in the server's count and drew its batch-size warning.
CELL_OVERHEAD = 20


class ReplicaBatches:
    """Groups bound inserts into unlogged batches of rows that have the same replicas.

    Why: a request costs the Python driver far more CPU than a row costs Cassandra. On the
    benchmark machine one insert per request wrote 7,800 rows per client CPU-second, 20 per
    batch 45,000 (docs/cassandra.md). A batch holds only rows of one replica set, so the
    driver's token-aware routing (by the batch's first row) sends it to a replica that owns
    every row, as the Spark connector's replica-set grouping does. A batch stays under
    ``max_bytes``, below Cassandra's batch-size warning (5 KiB by default), counting what
    Cassandra counts: each cell's value and its timestamp, TTL and deletion time
    (:data:`CELL_OVERHEAD`).

    ``replicas_of`` names a bound statement's replica set; ``batch`` makes an unlogged batch
    of statements. :meth:`add` and :meth:`drain` give ``(statement, rows)`` requests.
    """

    def __init__(
        self,
        replicas_of: Callable[[Any], Any],
        batch: Callable[[list[Any]], Any],
        max_rows: int,
        max_bytes: int = 4096,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self._replicas_of = replicas_of
        self._batch = batch
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._open: dict[Any, tuple[list[Any], int]] = {}  # replicas -> (statements, bytes)

    def add(self, statement: Any) -> Iterator[tuple[Any, int]]:
        if self._max_rows == 1:
            yield statement, 1
            return
        size = sum(CELL_OVERHEAD + len(v) for v in statement.values if v is not None)
        if size >= self._max_bytes:
            yield statement, 1
            return
        replicas = self._replicas_of(statement)
        statements, total = self._open.get(replicas) or ([], 0)
        if total + size > self._max_bytes:
            yield self._request(statements)
            statements, total = [], 0
        statements.append(statement)
        if len(statements) >= self._max_rows:
            del self._open[replicas]
            yield self._request(statements)
        else:
            self._open[replicas] = (statements, total + size)

    def drain(self) -> Iterator[tuple[Any, int]]:
        """The batches still open, for the end of a bundle."""
        for statements, _ in self._open.values():
            yield self._request(statements)
        self._open.clear()

    def _request(self, statements: list[Any]) -> tuple[Any, int]:
        if len(statements) == 1:
            return statements[0], 1
        return self._batch(statements), len(statements)


def replica_set(session: Any, keyspace: str) -> Callable[[Any], Any]:
    """A bound statement's replicas, from the driver's token map (None when it has none)."""
    token_map = session.cluster.metadata.token_map
    if token_map is None:
        return lambda _: None

    def replicas(statement: Any) -> Any:
        key = statement.routing_key
        if key is None:
            return None
        return tuple(token_map.get_replicas(keyspace, token_map.token_class.from_key(key)))

    return replicas


class _QuietBatchWarnings(logging.Filter):
    """Drops the server's warning that an unlogged batch spans several partitions.

    :class:`ReplicaBatches` batches rows of one replica set on purpose, and Cassandra answers
    every such batch above ``unlogged_batch_across_partitions_warn_threshold`` (10) partitions
    with a warning that the driver logs per response: on a busy sink that logging alone took
    about 3% of the worker's time. Every other server warning is still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Server warning: %s"
            and str(record.args[0] if record.args else "").startswith("Unlogged batch covering")
        )


class _QuietConnectFailures(logging.Filter):
    """Drops the driver's log of a failed first connection, traceback included
    (``cluster.py``: ``log.exception("Control connection failed to connect, ...")``;
    ``connection.py``: ``log.error("Failed to authenticate to %s. ...")``): the same error is
    raised to the caller, which reports it in one line or retries it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(
            ("Control connection failed to connect", "Failed to authenticate to")
        )


def _quiet_connect_failures() -> None:
    for name in ("cassandra.cluster", "cassandra.connection"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietConnectFailures) for f in logger.filters):
            logger.addFilter(_QuietConnectFailures())


def quiet_batch_warnings() -> None:
    """Install :class:`_QuietBatchWarnings` on the driver's protocol logger, once."""
    logger = logging.getLogger("cassandra.protocol")
    if not any(isinstance(f, _QuietBatchWarnings) for f in logger.filters):
        logger.addFilter(_QuietBatchWarnings())


def unlogged_batch(statements: list[Any]) -> Any:
    """One request for ``statements``, with no batch log: each row keeps its own timestamp,
    and a retried batch rewrites the same cells (inserts are idempotent)."""
    from cassandra.query import BatchStatement, BatchType

    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for statement in statements:
        batch.add(statement)
    return batch


def _call_with_retry(retry: RetryPolicy, call: Callable[[], Any]) -> Any:
    """Run a synchronous call (connect, DDL, prepare) with the same retries as the writes."""
    retryable = retryable_errors()
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            return call()
        except retryable:
            delay = retry.next_delay(attempt, timedelta(seconds=time.monotonic() - started))
            if delay is None:
                raise
            time.sleep(delay.total_seconds())
            attempt += 1


# --- settings and sessions ------------------------------------------------------------------


@dataclass(frozen=True)
class WriteSettings:
    """How the sink writes; the defaults suit a single cluster with a nearby client."""

    max_in_flight: int = 128
    batch_rows: int = 20  # rows per unlogged batch (ReplicaBatches); 1: one insert per request
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    protocol_version: int = 5  # Cassandra 4.0+; 4 for Cassandra 3.x
    request_timeout: timedelta = timedelta(seconds=10)

    @classmethod
    def from_env(cls) -> WriteSettings:
        """Read ``LIVEAGG_CASSANDRA_MAX_IN_FLIGHT``, ``LIVEAGG_CASSANDRA_BATCH_ROWS``,
        ``LIVEAGG_CASSANDRA_RETRY_ATTEMPTS``, ``LIVEAGG_CASSANDRA_RETRY_DEADLINE`` (a duration
        such as ``5m``) and ``LIVEAGG_CASSANDRA_PROTOCOL_VERSION``. A variable that is not set
        keeps its default.
        """
        default = cls()
        retry = RetryPolicy(
            max_attempts=env_int("LIVEAGG_CASSANDRA_RETRY_ATTEMPTS", default.retry.max_attempts),
            deadline=env_value(
                "LIVEAGG_CASSANDRA_RETRY_DEADLINE",
                lambda text: timedelta(microseconds=Duration.parse(text).micros),
                default.retry.deadline,
                "a duration such as 90s or 5m",
            ),
        )
        return cls(
            max_in_flight=env_int("LIVEAGG_CASSANDRA_MAX_IN_FLIGHT", default.max_in_flight),
            batch_rows=env_int("LIVEAGG_CASSANDRA_BATCH_ROWS", default.batch_rows),
            retry=retry,
            protocol_version=env_int(
                "LIVEAGG_CASSANDRA_PROTOCOL_VERSION", default.protocol_version
            ),
        )


@dataclass(frozen=True)
class _SessionKey:
    """What tells one Cluster from another in a worker: where, as whom, how."""

    hosts: tuple[str, ...]
    port: int
    local_dc: str
    protocol_version: int
    request_timeout_s: float
    username: str | None
    password: Secret | None = field(repr=False)
    tls: CassandraTls | None

    @property
    def where(self) -> str:
        return ",".join(f"{h}:{self.port}" for h in self.hosts)


def _session_key(connections: Connections, settings: WriteSettings) -> _SessionKey:
    return _SessionKey(
        tuple(connections.cassandra_hosts),
        connections.cassandra_port,
        connections.cassandra_local_dc or "",
        settings.protocol_version,
        settings.request_timeout.total_seconds(),
        connections.cassandra_username,
        connections.cassandra_password,
        connections.cassandra_tls,
    )


def _security(key: _SessionKey) -> dict[str, Any]:
    """The driver's ``auth_provider`` and ``ssl_context`` for ``key``, where set."""
    kwargs: dict[str, Any] = {}
    if key.password is not None and not key.username:
        raise ConnectionFailed(
            "Cassandra: a password without a username; set LIVEAGG_CASSANDRA_USERNAME "
            "(or --cassandra-username)"
        )
    if key.username:
        from cassandra.auth import PlainTextAuthProvider

        password = key.password.reveal() if key.password is not None else ""
        kwargs["auth_provider"] = PlainTextAuthProvider(key.username, password)
    if key.tls is not None:
        kwargs["ssl_context"] = key.tls.ssl_context()
    return kwargs


def connection_failure(error: BaseException, where: str) -> ConnectionFailed | None:
    """The one-line error for a connection that no retry can fix (login refused, TLS
    handshake failed), or None for one that may be transient (node down, timeout)."""
    import ssl

    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    causes = list(error.errors.values()) if isinstance(error, NoHostAvailable) else [error]
    if not causes:
        return None
    if all(isinstance(c, AuthenticationFailed) for c in causes):
        cause = str(causes[0])
        if "requires authentication" in cause:
            return ConnectionFailed(
                f"Cassandra at {where}: the cluster requires a login; set "
                "LIVEAGG_CASSANDRA_USERNAME and LIVEAGG_CASSANDRA_PASSWORD"
            )
        return ConnectionFailed(
            f"Cassandra at {where}: login refused ({cause}); check LIVEAGG_CASSANDRA_USERNAME "
            "and LIVEAGG_CASSANDRA_PASSWORD"
        )
    if all(isinstance(c, ssl.SSLError) or "[SSL" in str(c) for c in causes):
        cause = str(causes[0]).rsplit("Last error: ", 1)[-1]
        return ConnectionFailed(
            f"Cassandra at {where}: TLS handshake failed ({cause}); check the CA file "
            "(--cassandra-ca-file) and the host names the certificates hold"
        )
    return None


def _connect(key: _SessionKey) -> tuple[Any, Any]:
    try:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import (
            DCAwareRoundRobinPolicy,
            ExponentialReconnectionPolicy,
            TokenAwarePolicy,
        )
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    hosts, port, local_dc = key.hosts, key.port, key.local_dc
    protocol_version, request_timeout_s = key.protocol_version, key.request_timeout_s
    # Explicit protocol version and load-balancing policy: left out, the driver warns on every
    # connect. LOCAL_QUORUM: a write is acknowledged by a majority of the local replicas.
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc)),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        request_timeout=request_timeout_s,
    )
    cluster = Cluster(
        contact_points=list(hosts),
        port=port,
        protocol_version=protocol_version,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        # Reconnect to a restarted node within seconds (the default backs off up to 10 minutes).
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=10.0),
        **_security(key),
    )
    _quiet_connect_failures()
    try:
        session = cluster.connect()
    except BaseException as e:
        cluster.shutdown()
        failure = connection_failure(e, key.where) if isinstance(e, Exception) else None
        if failure is not None:
            raise failure from None  # not retried: another attempt gets the same answer
        raise
    # Each insert carries its own USING TIMESTAMP: the driver's client timestamp would be a
    # second clock per request, behind a lock that the writing threads contend for.
    session.use_client_timestamp = False
    return cluster, session


class _Sessions:
    """One Cluster and Session per connection settings in a worker process, shared by DoFns.

    A Cluster owns an event-loop thread and connection pools. One Cluster per DoFn instance would
    multiply both by the number of DoFn instances that a worker runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[_SessionKey, list[Any]] = {}  # key -> [cluster, session, users]

    def acquire(self, key: _SessionKey, retry: RetryPolicy) -> Any:
        with self._lock:
            entry = self._open.get(key)
            if entry is None:
                cluster, session = _call_with_retry(retry, lambda: _connect(key))
                entry = self._open[key] = [cluster, session, 0]
            entry[2] += 1
            return entry[1]

    def release(self, key: _SessionKey) -> None:
        with self._lock:
            entry = self._open.get(key)
            if entry is None:
                return
            entry[2] -= 1
            if entry[2] <= 0:
                del self._open[key]
                entry[0].shutdown()


_SESSIONS = _Sessions()


def prepare_table(session: Any, layout: TableLayout, replication: int) -> Any:
    """Create the keyspace and the table if they are missing, check the table, prepare the insert.

    Schema changes are issued only when the table is missing: concurrent ``CREATE TABLE IF NOT
    EXISTS`` from many workers can leave Cassandra with conflicting table ids, so the launcher
    creates the table before submission (:meth:`CassandraSink.write`) and workers only check.
    Raises :class:`SchemaMismatchError` naming every column that differs.
    """
    if not _columns(session, layout):
        session.execute(layout.create_keyspace_cql(replication))
        session.execute(layout.create_table_cql())
    existing = _columns(session, layout)
    deadline = time.monotonic() + _SCHEMA_SETTLE_S
    while not existing and time.monotonic() < deadline:  # created elsewhere, not visible yet
        time.sleep(0.5)
        session.cluster.control_connection.wait_for_schema_agreement()
        existing = _columns(session, layout)
    problems = layout.mismatches(existing)
    if problems:
        raise SchemaMismatchError(
            f"view {layout.view!r}: Cassandra table {layout.keyspace}.{layout.table} exists "
            f"with another shape: {'; '.join(problems)}. Drop or migrate the table, or point "
            'the sink at another one ("table": ...)'
        )
    insert = session.prepare(layout.insert_cql())
    insert.is_idempotent = True  # an upsert: safe for the driver and for us to retry
    return insert


def binder(prepared: Any) -> Callable[[list[Any]], Any]:
    """``prepared.bind`` for a list of every column's value, with less work per row.

    The driver's ``BoundStatement.bind`` (cassandra/query.py, 3.30) builds a ``ColDesc``
    tuple and asks the column-encryption policy about each value before it calls
    ``col_spec.type.serialize(value, proto_version)``; without such a policy the statement
    holds ``None`` or that serialization per value (``values``) and the values as given
    (``raw_values``). This builds the same statement with the serializers looked up once:
    about 9 us a row of 11 values against the driver's 15 (docs/performance.md, Flink
    finding 24). A row the serializers refuse, a policy or a row of another length goes
    through the driver's own ``bind``, for its checks and its error message.
    """
    if getattr(prepared, "column_encryption_policy", None) is not None:
        return prepared.bind  # type: ignore[no-any-return]
    from cassandra.query import BoundStatement

    serializers = [column.type.serialize for column in prepared.column_metadata]
    version = prepared.protocol_version

    def bind(values: list[Any]) -> Any:
        if len(values) != len(serializers):
            return prepared.bind(values)
        statement = BoundStatement(prepared)
        try:
            statement.values = [
                None if value is None else serialize(value, version)
                for value, serialize in zip(values, serializers, strict=True)
            ]
        except Exception:  # the driver's bind names the column and the type
            return prepared.bind(values)
        statement.raw_values = values
        return statement

    return bind


_STORAGE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB)$")
_STORAGE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def max_request_bytes(session: Any) -> int:
    """The largest request the cluster stores: the smaller of ``native_transport_max_message_size``
    and ``max_mutation_size`` as the node reports them (``system_views.settings``, Cassandra
    4.1+, e.g. ``16777216B`` and ``16384KiB``), else :data:`DEFAULT_MAX_REQUEST_BYTES`.
    Read, not assumed, because both are settings of the cluster."""
    limits = []
    for name in ("native_transport_max_message_size", "max_mutation_size"):
        try:
            row = session.execute(
                "SELECT value FROM system_views.settings WHERE name = %s", (name,)
            ).one()
        except Exception:  # no virtual tables (Cassandra 3.x), or no right to read them
            continue
        match = _STORAGE.match(str(row.value).strip()) if row is not None else None
        if match:
            limits.append(int(match[1]) * _STORAGE_UNITS[match[2]])
    return min(limits, default=DEFAULT_MAX_REQUEST_BYTES)


def _columns(session: Any, layout: TableLayout) -> list[tuple[str, str, str, int]]:
    rows = session.execute(
        "SELECT column_name, type, kind, position FROM system_schema.columns "
        "WHERE keyspace_name = %s AND table_name = %s",
        (layout.keyspace, layout.table),
    )
    return [(r.column_name, r.type, r.kind, r.position) for r in rows]


def create_table(layout: TableLayout, connections: Connections, settings: WriteSettings) -> None:
    """Create (or check) the table from where the pipeline is built, before any worker runs.

    Best effort: where the launcher cannot reach Cassandra, the workers create the table.
    """
    key = _session_key(connections, settings)
    try:
        session = _SESSIONS.acquire(key, replace(settings.retry, max_attempts=1))
    except (ImportError, ConnectionFailed):
        raise
    except Exception as e:  # the driver's NoHostAvailable and friends
        _LOGGER.warning(
            "Cassandra %s not reachable from here (%s); the workers will create %s.%s",
            key.where,
            e,
            layout.keyspace,
            layout.table,
        )
        return
    try:
        prepare_table(session, layout, connections.cassandra_replication)
    finally:
        _SESSIONS.release(key)


# --- Beam -----------------------------------------------------------------------------------


class _WriteRows(beam.DoFn):
    """Upserts rows. A bundle finishes only when all of its writes are acknowledged.

    Outputs a dead letter (``too_large``, ``empty_key``) for each row Cassandra cannot store.
    """

    def __init__(
        self, layout: TableLayout, connections: Connections, settings: WriteSettings
    ) -> None:
        self._layout = layout
        self._connections = connections
        self._settings = settings
        self._session_key: _SessionKey | None = None
        # A dead letter's payload names the row without its values, as ``overflow``'s does.
        meta = {None, "window_end", "pane_timing", "pane_index"}
        self._value_columns = frozenset(
            c.source for c in layout.columns[layout.key_size :] if c.source not in meta
        )
        self._counters = tuple(
            Metrics.counter(NAMESPACE, f"cassandra/{name}")
            for name in ("rows_written", "retries", "failures")
        )

    def setup(self) -> None:
        settings = self._settings
        key = _session_key(self._connections, settings)
        session = _SESSIONS.acquire(key, settings.retry)  # raises the install hint first
        self._session_key = key
        self._insert = _call_with_retry(
            settings.retry,
            lambda: prepare_table(session, self._layout, self._connections.cassandra_replication),
        )
        self._bind = binder(self._insert)
        self._max_request = max_request_bytes(session)
        self._writer = AsyncWriter(
            session.execute_async,
            max_in_flight=settings.max_in_flight,
            retry=settings.retry,
            retryable=retryable_errors(),
        )
        self._batches = ReplicaBatches(
            replica_set(session, self._layout.keyspace), unlogged_batch, settings.batch_rows
        )
        if settings.batch_rows > 1:
            quiet_batch_warnings()
        self._last_write_us = 0

    def process(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        layout = self._layout
        try:
            statement = self._bind(layout.values(row, self._write_time()))
        except Exception as e:
            raise ValueError(
                f"view {layout.view!r}: cannot write a row to {layout.keyspace}.{layout.table}:"
                f" {e}; row: {row!r}"
            ) from e
        refused = layout.unstorable(statement.values, self._max_request)
        if refused is not None:
            yield self._dead_letter(row, *refused)
            return
        for request, rows in self._batches.add(statement):
            self._writer.submit(request, rows)
        self._report()

    def _dead_letter(self, row: dict[str, Any], reason: str, problem: str) -> dict[str, Any]:
        """The dead letter of a row Cassandra cannot store (``too_large``, ``empty_key``),
        counted as a result dead letter, as ``overflow`` is: no message is to blame, so the
        view's message accounting stays whole. Its payload is the row without its values."""
        layout = self._layout
        detail = f"not written to Cassandra table {layout.keyspace}.{layout.table}: {problem}"
        return result_dead_letter(row, self._value_columns, layout.view, reason, detail)

    def _write_time(self) -> int:
        """The row's write timestamp in microseconds, strictly increasing per DoFn instance
        (which runs one bundle at a time), so a later pane of a key always wins."""
        now = time.time_ns() // 1000
        self._last_write_us = now if now > self._last_write_us else self._last_write_us + 1
        return self._last_write_us

    def finish_bundle(self) -> None:
        try:
            for request, rows in self._batches.drain():
                self._writer.submit(request, rows)
            self._writer.flush()
        finally:
            self._report()

    def teardown(self) -> None:
        if self._session_key is not None:
            _SESSIONS.release(self._session_key)
            self._session_key = None

    def _report(self) -> None:
        for counter, count in zip(self._counters, self._writer.take_counts(), strict=True):
            if count:
                counter.inc(count)


class CassandraSink:
    """Upserts a view's rows into ``keyspace.table``; the table defaults to the view's name.

    Example::

        sink = CassandraSink("metrics", connections=Connections(cassandra_hosts=("10.0.0.5",)))
        sink.write(rows, view, bounded=False)  # creates metrics.<view> when it is missing
    """

    #: ``write`` returns the dead letters of the rows it could not write.
    gives_dead_letters = True

    def __init__(
        self,
        keyspace: str,
        table: str | None = None,
        connections: Connections | None = None,
        settings: WriteSettings | None = None,
    ) -> None:
        self.keyspace = _identifier(keyspace, "keyspace")
        self.table = None if table is None else _identifier(table, "table")
        self.connections = connections or Connections()
        self.settings = settings or WriteSettings()

    def layout(self, view: CompiledView | ViewSpec) -> TableLayout:
        return table_layout(view, self.keyspace, self.table)

    def exclusive(self, view: CompiledView | ViewSpec) -> Exclusive:
        """The table's key has no view column (docs/cassandra.md), so the rows of two views
        with the same key and window would overwrite each other without an error."""
        layout = self.layout(view)
        return Exclusive(
            f"Cassandra table {layout.keyspace}.{layout.table}",
            'a table holds one view. Give each view its own table ("table" in its own sink, '
            'or a --sink without "table", which writes each view to the table of its name)',
        )

    def write(
        self, rows: beam.PCollection, view: CompiledView | ViewSpec, *, bounded: bool
    ) -> beam.PCollection:
        """Add the writes; returns the dead letters of the rows Cassandra cannot store."""
        # Bounded and unbounded inputs are written alike: every pane is an upsert.
        layout = self.layout(view)
        create_table(layout, self.connections, self.settings)
        label = f"{view.name}/Cassandra/{layout.keyspace}.{layout.table}"
        return rows | label >> beam.ParDo(_WriteRows(layout, self.connections, self.settings))


@register_sink("cassandra")
def _build(sink: Sink, connections: Connections) -> CassandraSink:
    keyspace = sink.options.get("keyspace")
    if not keyspace:
        raise ValueError(
            'cassandra sink needs "keyspace", e.g. {"type": "cassandra", "keyspace": "metrics"}'
        )
    return CassandraSink(keyspace, sink.options.get("table"), connections, WriteSettings.from_env())
