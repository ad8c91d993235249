"""The Cassandra sink without a server: settings, table layouts, retries with an injected
``execute``, and replica-set batches.

The views and custom aggregations here are shared with tests/integration/test_cassandra_sink.py,
which writes their rows to a real Cassandra.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import orjson
import pytest

from liveagg.combiners import LiveaggCombineFn
from liveagg.loader import parse_view
from liveagg.spec import Sink
from liveagg.transforms.sinks import Connections, build_sink
from liveagg.transforms.sinks.cassandra import (
    CELL_OVERHEAD,
    AsyncWriter,
    CassandraSink,
    CassandraWriteError,
    ReplicaBatches,
    RetryPolicy,
    WriteSettings,
    binder,
    column_name,
    retryable_errors,
    table_layout,
)

pytest.importorskip("cassandra")
from cassandra import (
    InvalidRequest,
    OperationTimedOut,
    Unavailable,
    WriteTimeout,
    WriteType,
)
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionShutdown

from tests.support.waiting import eventually

# --- custom aggregations for the two output types no built-in has --------------------------


class AnyTrueFn(LiveaggCombineFn):
    """``boolean``: whether any value is true."""

    def create_accumulator(self) -> bool | None:
        return None

    def add_input(self, acc: bool | None, value: Any) -> bool:
        return bool(acc) or bool(value)

    def merge_accumulators(self, accs: Any) -> bool | None:
        seen = [a for a in accs if a is not None]
        return any(seen) if seen else None

    def extract_output(self, acc: bool | None) -> bool | None:
        return acc

    def output_type(self) -> str:
        return "boolean"

    def encode_accumulator(self, acc: bool | None) -> bytes:
        return orjson.dumps(acc)

    def decode_accumulator(self, data: bytes) -> bool | None:
        return orjson.loads(data)


class TagsFn(LiveaggCombineFn):
    """``list<text>``: the sorted distinct string values."""

    def create_accumulator(self) -> set[str]:
        return set()

    def add_input(self, acc: set[str], value: Any) -> set[str]:
        acc.add(str(value))
        return acc

    def merge_accumulators(self, accs: Any) -> set[str]:
        return set().union(*accs)

    def extract_output(self, acc: set[str]) -> list[str] | None:
        return sorted(acc) or None

    def output_type(self) -> str:
        return "list<text>"

    def encode_accumulator(self, acc: set[str]) -> bytes:
        return orjson.dumps(sorted(acc))

    def decode_accumulator(self, data: bytes) -> set[str]:
        return set(orjson.loads(data))


# --- views ----------------------------------------------------------------------------------

#: Grouping sets, two granularities, a dotted grouping column, every output type.
FULL_VIEW = {
    "name": "cdn_traffic",
    "event_time": {"field": "ts", "format": "epoch_s"},
    "grouping_cols": ["client.ip", "country", "asn"],
    "grouping_sets": [["client.ip", "country", "asn"], ["country"], []],
    "window": {"type": "fixed", "size": ["1m", "1h"]},
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "requests"},
        {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes_total"},
        {"aggregation": "mean", "col_name": "latency", "aggregated_col_name": "latency_mean"},
        {"aggregation": "max", "col_name": "latency", "aggregated_col_name": "latency_max"},
        {"aggregation": "hll_sketch", "col_name": "user", "aggregated_col_name": "users_hll"},
        {
            "aggregation": "approx_quantiles",
            "col_name": "latency",
            "aggregated_col_name": "latency_q",
            "params": {"quantiles": [0.5, 0.9]},
        },
        {
            "aggregation": "histogram",
            "col_name": "latency",
            "aggregated_col_name": "latency_hist",
            "params": {"bounds": [10, 100]},
        },
        {
            "aggregation": "top_k",
            "col_name": "path",
            "aggregated_col_name": "top_paths",
            "params": {"k": 2},
        },
        {"aggregation": "collect_set", "col_name": "status", "aggregated_col_name": "statuses"},
        {
            "aggregation": "custom",
            "col_name": "cached",
            "aggregated_col_name": "any_cached",
            "params": {"combine_fn": f"{__name__}:AnyTrueFn"},
        },
        {
            "aggregation": "custom",
            "col_name": "path",
            "aggregated_col_name": "paths",
            "params": {"combine_fn": f"{__name__}:TagsFn"},
        },
    ],
    "derived": [{"name": "bytes_per_request", "expr": "bytes_total / requests"}],
}

FULL_TYPES = {
    "client_ip": "text",
    "country": "text",
    "asn": "text",
    "window_start": "timestamp",
    "granularity": "text",
    "grouping_set": "int",
    "window_end": "timestamp",
    "requests": "bigint",
    "bytes_total": "double",
    "latency_mean": "double",
    "latency_max": "text",
    "users_hll": "text",
    "latency_q": "list<double>",
    "latency_hist": "list<bigint>",
    "top_paths": "text",
    "statuses": "text",
    "any_cached": "boolean",
    "paths": "list<text>",
    "bytes_per_request": "double",
    "pane_timing": "text",
    "pane_index": "int",
    "updated_at": "timestamp",
}

SIMPLE_VIEW = {
    "name": "page_views",
    "event_time": {"field": "ts"},
    "grouping_cols": ["page"],
    "window": {"size": "1m"},
    "allowed_lateness": "1h",
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "views"},
        {"aggregation": "sum", "col_name": "ms", "aggregated_col_name": "total_ms"},
    ],
}


# --- sink building, layout errors, retries with an injected execute -------------------------


def test_build_sink_from_a_view_entry() -> None:
    sink = build_sink(Sink("cassandra", {"keyspace": "Metrics"}), Connections())
    assert isinstance(sink, CassandraSink)
    assert (sink.keyspace, sink.table) == ("metrics", None)
    view = parse_view(SIMPLE_VIEW)
    assert sink.layout(view).table == "page_views"
    with pytest.raises(ValueError, match='cassandra sink needs "keyspace"'):
        build_sink(Sink("cassandra", {"table": "t"}), Connections())
    with pytest.raises(ValueError, match="keyspace 'my-ks' is not a Cassandra identifier"):
        build_sink(Sink("cassandra", {"keyspace": "my-ks"}), Connections())


def test_write_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAGG_CASSANDRA_MAX_IN_FLIGHT", "16")
    monkeypatch.setenv("LIVEAGG_CASSANDRA_RETRY_ATTEMPTS", "7")
    monkeypatch.setenv("LIVEAGG_CASSANDRA_RETRY_DEADLINE", "90s")
    monkeypatch.setenv("LIVEAGG_CASSANDRA_BATCH_ROWS", "1")
    settings = WriteSettings.from_env()
    assert settings.max_in_flight == 16
    assert settings.batch_rows == 1
    assert settings.retry.max_attempts == 7
    assert settings.retry.deadline == timedelta(seconds=90)
    monkeypatch.setenv("LIVEAGG_CASSANDRA_MAX_IN_FLIGHT", "many")
    with pytest.raises(ValueError, match="LIVEAGG_CASSANDRA_MAX_IN_FLIGHT='many' is not an"):
        WriteSettings.from_env()


def test_column_names_and_layout_errors() -> None:
    assert column_name("client.ip") == "client_ip"
    assert column_name("User-Agent") == "user_agent"
    assert column_name("2xx") == "c_2xx"
    view = parse_view({**SIMPLE_VIEW, "grouping_cols": ["client.ip", "client_ip"]})
    with pytest.raises(
        ValueError, match=re.escape("'client.ip' and 'client_ip' both map to Cassandra")
    ):
        table_layout(view, "ks")
    agg = {"aggregation": "count", "aggregated_col_name": "updated_at"}
    view = parse_view({**SIMPLE_VIEW, "aggregation_info": [agg]})
    with pytest.raises(ValueError, match=r"'updated_at'.* both map to Cassandra column"):
        table_layout(view, "ks")
    view = parse_view({**SIMPLE_VIEW, "name": "v" * 49})
    with pytest.raises(ValueError, match=r"table 'v{49}' is not a Cassandra identifier"):
        table_layout(view, "ks")


def test_layout_of_the_full_view() -> None:
    layout = table_layout(parse_view(FULL_VIEW), "metrics")
    assert {c.name: c.type for c in layout.columns} == FULL_TYPES
    assert layout.insert_cql().endswith("USING TIMESTAMP ?")
    assert 'PRIMARY KEY (("client_ip", "country", "asn", "window_start", "granularity", ' in (
        layout.create_table_cql()
    )


def test_backoff_doubles_up_to_a_cap_and_stops_at_the_limits() -> None:
    policy = RetryPolicy(
        max_attempts=8,
        initial_backoff=timedelta(milliseconds=100),
        max_backoff=timedelta(seconds=1),
        deadline=timedelta(seconds=30),
    )
    assert [policy.backoff(n).total_seconds() for n in range(1, 7)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.0,
        1.0,
    ]
    for attempt in range(1, 8):
        delay = policy.next_delay(attempt, timedelta(0))
        assert delay is not None
        assert policy.backoff(attempt) / 2 <= delay <= policy.backoff(attempt)
    assert policy.next_delay(8, timedelta(0)) is None  # attempts spent
    assert policy.next_delay(1, timedelta(seconds=29.95)) is None  # past the deadline
    with pytest.raises(ValueError, match="jitter must be within"):
        RetryPolicy(jitter=2)


class _Done:
    """A response future that has already completed."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def add_callbacks(
        self, callback: Any, errback: Any, callback_args: tuple = (), errback_args: tuple = ()
    ) -> None:
        if self.error is None:
            callback(None, *callback_args)
        else:
            errback(self.error, *errback_args)


class FailingExecute:
    """``execute_async`` that fails each statement ``failures`` times, then succeeds."""

    def __init__(self, errors: Sequence[BaseException], failures: int) -> None:
        self.errors = errors
        self.failures = failures
        self.calls: dict[Any, int] = {}
        self.lock = threading.Lock()

    def __call__(self, statement: Any) -> _Done:
        with self.lock:
            n = self.calls[statement] = self.calls.get(statement, 0) + 1
        if n <= self.failures:
            return _Done(self.errors[(n - 1) % len(self.errors)])
        return _Done(None)


FAST = RetryPolicy(
    initial_backoff=timedelta(milliseconds=1),
    max_backoff=timedelta(milliseconds=5),
    deadline=timedelta(seconds=10),
)
TRANSIENT = [
    WriteTimeout("write timeout", write_type=WriteType.SIMPLE),
    Unavailable("unavailable"),
    OperationTimedOut("client timeout"),
    NoHostAvailable("no host", {}),
    ConnectionShutdown("connection closed"),
]


def test_transient_errors_are_retried_until_the_write_succeeds() -> None:
    execute = FailingExecute(TRANSIENT, failures=5)
    writer = AsyncWriter(execute, max_in_flight=4, retry=FAST, retryable=retryable_errors())
    for i in range(20):
        writer.submit(f"statement {i}")
    writer.flush()
    assert execute.calls == {f"statement {i}": 6 for i in range(20)}
    assert writer.take_counts() == (20, 100, 0)


def test_a_write_that_keeps_failing_raises_after_the_attempts() -> None:
    execute = FailingExecute([Unavailable("replica down")], failures=10**6)
    retry = RetryPolicy(max_attempts=3, initial_backoff=timedelta(milliseconds=1))
    writer = AsyncWriter(execute, max_in_flight=4, retry=retry, retryable=retryable_errors())
    writer.submit("a")
    writer.submit("b")
    with pytest.raises(CassandraWriteError, match=r"2 row\(s\) failed.*Unavailable"):
        writer.flush()
    assert execute.calls == {"a": 3, "b": 3}
    assert writer.take_counts() == (0, 4, 2)
    writer.flush()  # the failure was reported once; the writer is usable again


def test_the_deadline_bounds_the_retries() -> None:
    execute = FailingExecute([WriteTimeout("slow", write_type=WriteType.SIMPLE)], failures=10**6)
    retry = RetryPolicy(
        max_attempts=10**6,
        initial_backoff=timedelta(milliseconds=5),
        max_backoff=timedelta(milliseconds=5),
        deadline=timedelta(milliseconds=200),
        jitter=0,
    )
    writer = AsyncWriter(execute, max_in_flight=1, retry=retry, retryable=retryable_errors())
    t0 = time.monotonic()
    writer.submit("a")
    with pytest.raises(CassandraWriteError, match="WriteTimeout"):
        writer.flush()
    # Gives up once the next wait would pass the deadline, not after 10**6 attempts. How many
    # attempts fit in 200 ms depends on the machine's load: at most 41 with 5 ms waits.
    assert 0.19 <= time.monotonic() - t0 < 30
    assert 2 <= execute.calls["a"] <= 41


def test_other_errors_are_not_retried_and_fail_the_next_submit() -> None:
    execute = FailingExecute([InvalidRequest("unconfigured table")], failures=1)
    writer = AsyncWriter(execute, max_in_flight=4, retry=FAST, retryable=retryable_errors())
    writer.submit("a")
    with pytest.raises(CassandraWriteError, match=re.escape("InvalidRequest")):
        writer.submit("b")
    assert execute.calls == {"a": 1}


def test_requests_in_flight_are_bounded() -> None:
    class Pending:
        def add_callbacks(
            self, callback: Any, errback: Any, callback_args: tuple = (), errback_args: tuple = ()
        ) -> None:
            self.callback = lambda result: callback(result, *callback_args)

    issued: list[Pending] = []
    writer = AsyncWriter(
        lambda _s: issued.append(Pending()) or issued[-1],
        max_in_flight=3,
        retry=FAST,
        retryable=retryable_errors(),
    )
    submitter = threading.Thread(target=lambda: [writer.submit(i) for i in range(10)])
    submitter.start()
    for completed in range(10):

        def submitted(completed: int = completed) -> None:
            assert len(issued) > completed, f"{len(issued)} requests issued"

        eventually(submitted, what="the next request", timeout_s=60, every_s=0.001)
        time.sleep(0.01)  # give the submitter a chance to exceed the bound
        assert len(issued) - completed <= 3
        issued[completed].callback(None)
    submitter.join(60)
    assert not submitter.is_alive()
    writer.flush()
    assert writer.take_counts() == (10, 0, 0)


class _Bound:
    """What ReplicaBatches reads of a bound statement: its serialized values."""

    def __init__(self, name: str, replicas: str, size: int = 10) -> None:
        self.name, self.replicas, self.values = name, replicas, [b"x" * size, None]

    def __repr__(self) -> str:
        return self.name


def _batches(max_rows: int, max_bytes: int = 4096) -> ReplicaBatches:
    names = lambda statements: [s.name for s in statements]  # noqa: E731
    return ReplicaBatches(lambda s: s.replicas, names, max_rows, max_bytes)


def test_rows_are_batched_per_replica_set_up_to_the_row_and_byte_limits() -> None:
    batches = _batches(max_rows=3, max_bytes=100)
    out = []
    for i in range(4):
        out += batches.add(_Bound(f"a{i}", "A"))
        out += batches.add(_Bound(f"b{i}", "B"))
    # The third row of a replica set completes its batch; the fourth waits for more.
    assert out == [(["a0", "a1", "a2"], 3), (["b0", "b1", "b2"], 3)]
    # A row counts its value and CELL_OVERHEAD per cell: 20 + 20 bytes.
    assert CELL_OVERHEAD == 20
    out = list(batches.add(_Bound("c0", "C", size=20)))
    out += batches.add(_Bound("c1", "C", size=20))
    out += batches.add(_Bound("c2", "C", size=20))  # 120 bytes would pass the limit
    assert out == [(["c0", "c1"], 2)]
    big = _Bound("big", "A", size=100)  # alone over the limit: a request of its own
    assert [(str(s), n) for s, n in batches.add(big)] == [("big", 1)]
    # A batch of one row is sent as that row.
    assert [(str(s), n) for s, n in batches.drain()] == [("a3", 1), ("b3", 1), ("c2", 1)]
    assert list(batches.drain()) == []


def test_one_row_per_request_when_batches_are_off() -> None:
    batches = _batches(max_rows=1)
    assert [(str(s), n) for s, n in batches.add(_Bound("a", "A"))] == [("a", 1)]
    assert list(batches.drain()) == []
    with pytest.raises(ValueError, match="max_rows must be at least 1"):
        _batches(max_rows=0)


#: CQL column type -> the driver's type, as a prepared statement's metadata names it.
_CASS_TYPES = {
    "text": "UTF8Type",
    "int": "Int32Type",
    "bigint": "LongType",
    "double": "DoubleType",
    "boolean": "BooleanType",
    "timestamp": "TimestampType",
    "list<double>": "ListType(DoubleType)",
    "list<bigint>": "ListType(LongType)",
    "list<text>": "ListType(UTF8Type)",
}


def _prepared(layout: Any, protocol_version: int = 5) -> Any:
    """The insert as the driver would prepare it: every column, then ``USING TIMESTAMP ?``."""
    from cassandra.cqltypes import lookup_casstype
    from cassandra.protocol import ColumnMetadata
    from cassandra.query import PreparedStatement

    meta = [
        ColumnMetadata("ks", layout.table, c.name, lookup_casstype(_CASS_TYPES[c.type]))
        for c in layout.columns
    ]
    meta.append(ColumnMetadata("ks", layout.table, "[timestamp]", lookup_casstype("LongType")))
    keys = list(range(layout.key_size))
    return PreparedStatement(
        meta, b"id", keys, layout.insert_cql(), "ks", protocol_version, [], None
    )


def test_rows_bind_as_the_drivers_bind_binds_them() -> None:
    """The sink's binder gives the driver's statement (values, routing key) for every output
    type, nulls included, and the driver's error for a value a column cannot take."""
    layout = table_layout(parse_view(FULL_VIEW), "ks", "t")
    prepared = _prepared(layout)
    bind = binder(prepared)
    rng = random.Random(3)
    samples = {
        "text": ["", "é", "x" * 300, None],
        "int": [0, -1, 2**31 - 1, None],
        "bigint": [0, -(2**63), 2**63 - 1, None],
        "double": [0.0, -1.5, 1e308, None],
        "boolean": [True, False, None],
        "timestamp": [0, 1709251200000, None],
        "list<double>": [[], [1.5, 2.0], None],
        "list<bigint>": [[0, 7], None],
        "list<text>": [["a", "b"], None],
    }

    def row() -> list[Any]:  # the partition key is never null (_key_text gives "" for null)
        return [
            rng.choice([x for x in samples[c.type] if x is not None or i >= layout.key_size])
            for i, c in enumerate(layout.columns)
        ]

    for _ in range(300):
        values = row()
        values.append(rng.randrange(2**50))
        ours, theirs = bind(values), prepared.bind(values)
        assert ours.values == theirs.values
        assert ours.raw_values == theirs.raw_values
        assert ours.routing_key == theirs.routing_key
        assert ours.prepared_statement is prepared
    wrong = [*row(), 1]
    wrong[[c.type for c in layout.columns].index("int")] = "seven"
    with pytest.raises(TypeError, match="Received an argument of invalid type for column"):
        bind(wrong)


def test_two_views_on_one_table_are_refused_before_any_sink_is_applied(tmp_path: Any) -> None:
    """The refusal comes before any table is created: applying the first view's sink would
    connect to the port given as Cassandra's (to create its table), and nothing does.
    One view may write to a table twice (its own sink and ``--sink``): the rows are the same."""
    from liveagg.errors import ViewError
    from liveagg.pipelines.run import RunConfig
    from liveagg.pipelines.run import run as run_views

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    paths = []
    for name, lateness in (("shared_a", "1h"), ("shared_b", "2h")):
        path = tmp_path / f"{name}.json"
        view = {**SIMPLE_VIEW, "name": name, "allowed_lateness": lateness}
        if name == "shared_a":  # its own sink to the same table as --sink: not refused
            view["sinks"] = [{"type": "cassandra", "keyspace": "ks", "table": "shared"}]
        path.write_text(orjson.dumps(view).decode())
        paths.append(str(path))
    (tmp_path / "in.jsonl").write_text('{"ts": "2026-01-01T00:00:00Z", "page": "/a", "ms": 1}\n')
    config = RunConfig(
        views=paths,
        inputs=[str(tmp_path / "in.jsonl")],
        output=str(tmp_path / "out"),
        sinks=['{"type": "cassandra", "keyspace": "KS", "table": "Shared"}'],
        connections=Connections(
            cassandra_hosts=("127.0.0.1",), cassandra_port=listener.getsockname()[1]
        ),
    )

    with listener:
        with pytest.raises(ViewError) as refused:
            run_views(config)
        with pytest.raises(BlockingIOError):  # no connection was made
            listener.accept()

    message = str(refused.value)
    assert message.startswith("<command line>"), message
    assert "views 'shared_a' and 'shared_b' both write to Cassandra table ks.shared" in message
    assert "Give each view its own table" in message
    assert not (tmp_path / "out").exists()  # refused before anything ran
