"""The Cassandra sink against a real Cassandra 5.0, plus its retry logic with a failing execute.

Rows come from :class:`ViewPlan` over generated messages, so they have exactly the layout that
the pipeline produces. Each test module run uses its own keyspace and drops it at the end.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.metrics.metric import MetricsFilter

from integration.services import CassandraConnection
from integration.services.cassandra import Cassandra
from liveagg.loader import parse_view
from liveagg.pipelines.run import RunConfig
from liveagg.pipelines.run import run as run_views
from liveagg.spec import ViewSpec
from liveagg.transforms.plan import ViewPlan
from liveagg.transforms.sinks import CassandraTls, Connections
from liveagg.transforms.sinks.cassandra import (
    AsyncWriter,
    CassandraSink,
    ReplicaBatches,
    RetryPolicy,
    TableLayout,
    column_name,
    max_request_bytes,
    prepare_table,
    quiet_batch_warnings,
    replica_set,
    retryable_errors,
    table_layout,
    unlogged_batch,
)

pytestmark = pytest.mark.integration

pytest.importorskip("cassandra")
from cassandra.cluster import Cluster  # noqa: E402

from tests.support.waiting import cassandra_schema_settling, eventually, retrying  # noqa: E402
from tests.transforms.sinks.test_cassandra import FULL_TYPES, FULL_VIEW, SIMPLE_VIEW  # noqa: E402

# --- views, rows and helpers ----------------------------------------------------------------

JSON_COLUMNS = {"latency_max", "top_paths", "statuses"}
T0 = 1_357_034_400  # 2013-01-01T10:00:00Z


def _messages(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        msg: dict[str, Any] = {
            "ts": T0 + i * 7,
            "client": {"ip": f"10.0.0.{i % 3}"},
            "country": ["DE", "FR"][i % 2],
            "bytes": 100 + i,
            "latency": [5, 50, 500, 12.5][i % 4],
            "user": f"u{i % 5}",
            "path": ["/a", "/b", "/a", "/c"][i % 4],
            "status": [200, 404][i % 3 == 0],
            "cached": i % 5 == 0,
        }
        if i % 4 != 1:
            msg["asn"] = 3320 + i % 2  # a number, and missing (null) on some messages
        yield msg


def aggregate(
    view: ViewSpec, messages: Sequence[dict[str, Any]], pane_timing: str = "ON_TIME", index: int = 0
) -> list[dict[str, Any]]:
    """The rows that the pipeline emits for ``messages``, one per variant, key and window."""
    plan = ViewPlan(view)
    accumulators: dict[tuple[int, bytes, int, int], Any] = {}
    for msg in messages:
        extracted = plan.extract(msg)
        assert extracted is not None
        ts, values, group = extracted
        for variant, key in plan.keys(group):
            for start, end in variant.assign(ts):
                slot = (variant.index, key, start, end)
                acc = accumulators.get(slot) or plan.combine.create_accumulator()
                accumulators[slot] = plan.combine.add_input(acc, values)
    return [
        plan.row(
            plan.variants[v],
            start,
            end,
            key,
            plan.combine.extract_output(acc),
            pane_timing,
            index,
        )
        for (v, key, start, end), acc in accumulators.items()
    ]


def simple_rows(
    view: ViewSpec, pages: int, views: int, pane_timing: str, index: int
) -> list[dict[str, Any]]:
    plan = ViewPlan(view)
    start = T0 * 1_000_000
    return [
        plan.row(
            plan.variants[0],
            start,
            start + 60_000_000,
            orjson.dumps([f"/p{p}"]),
            (views + p, float(10 * (views + p))),
            pane_timing,
            index,
        )
        for p in range(pages)
    ]


def connections(cassandra: CassandraConnection, *, tls: bool = False) -> Connections:
    """The sink's settings for ``cassandra``, logged in as the harness's role."""
    return Connections(
        cassandra_hosts=cassandra.contact_points,
        cassandra_port=cassandra.port,
        cassandra_local_dc=cassandra.local_dc,
        cassandra_username=cassandra.username,
        cassandra_password=cassandra.password,
        cassandra_tls=CassandraTls(ca_file=cassandra.ca_file) if tls else None,
    )


def run(sink: CassandraSink, view: ViewSpec, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Write ``rows`` through a Beam pipeline; return the sink's counters."""
    pipeline = beam.Pipeline()
    sink.write(pipeline | beam.Create(rows), view, bounded=True)
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("liveagg"))["counters"]
    return {
        c.key.metric.name: c.committed
        for c in counters
        if c.key.metric.name.startswith("cassandra/")
    }


def select_all(session: Any, keyspace: str, table: str) -> list[dict[str, Any]]:
    """Every row of a table a sink has just created (its transient states waited out)."""
    return retrying(
        lambda: [r._asdict() for r in session.execute(f"SELECT * FROM {keyspace}.{table}")],
        what=f"{keyspace}.{table}",
        transient=cassandra_schema_settling,
    )


def expected_cells(row: dict[str, Any], view: ViewSpec) -> dict[str, Any]:
    """What Cassandra should hold for ``row``, written out independently of the sink."""

    def key_text(value: Any) -> str:
        return "" if value is None else value if isinstance(value, str) else json.dumps(value)

    def ts(text: str) -> datetime:
        return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)

    cells = {column_name(c): key_text(row[c]) for c in view.grouping_cols}
    cells["window_start"] = ts(row["window_start"])
    cells["window_end"] = ts(row["window_end"])
    for name in ("granularity", "grouping_set", "pane_timing", "pane_index"):
        if name in row:
            cells[name] = row[name]
    for name in view.output_columns:
        cells[name] = row[name]
    return cells


def stored_cells(stored: dict[str, Any]) -> dict[str, Any]:
    cells = {k: v for k, v in stored.items() if k != "updated_at"}
    for name in JSON_COLUMNS & cells.keys():
        if cells[name] is not None:
            cells[name] = json.loads(cells[name])
    return cells


def primary_key(cells: dict[str, Any], view: ViewSpec) -> tuple[Any, ...]:
    names = [column_name(c) for c in view.grouping_cols] + ["window_start"]
    names += [n for n in ("granularity", "grouping_set") if n in cells]
    return tuple(cells[n] for n in names)


@pytest.fixture(scope="module")
def keyspace(cassandra: CassandraConnection) -> Iterator[str]:
    name = f"liveagg_it_{uuid.uuid4().hex[:10]}"
    yield name
    cluster = Cluster(**cassandra.cluster_kwargs())
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {name}")
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def session(cassandra: CassandraConnection) -> Iterator[Any]:
    cluster = Cluster(**cassandra.cluster_kwargs())
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


# --- the real server ------------------------------------------------------------------------


def test_every_column_round_trips(
    cassandra: CassandraConnection, keyspace: str, session: Any
) -> None:
    view = parse_view(FULL_VIEW)
    rows = aggregate(view, list(_messages(120)))
    assert {r["grouping_set"] for r in rows} == {0, 1, 2}
    assert {r["granularity"] for r in rows} == {"1m", "1h"}
    assert any(r["asn"] is None and r["grouping_set"] == 0 for r in rows)  # a null key value
    sink = CassandraSink(keyspace, connections=connections(cassandra))

    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    counters = run(sink, view, rows)
    after = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1)

    assert counters["cassandra/rows_written"] == len(rows)
    stored = select_all(session, keyspace, "cdn_traffic")
    assert len(stored) == len(rows)
    assert all(before <= r["updated_at"] <= after for r in stored)
    expected = {primary_key(c, view): c for c in (expected_cells(r, view) for r in rows)}
    actual = {primary_key(c, view): c for c in map(stored_cells, stored)}
    assert actual.keys() == expected.keys()
    for key, cells in expected.items():
        assert actual[key] == cells, key
    # The columns a grouping set leaves out are '' in the key.
    assert {r["client_ip"] for r in stored if r["grouping_set"] == 2} == {""}


def test_table_is_created_with_the_view_types(
    cassandra: CassandraConnection, keyspace: str, session: Any
) -> None:
    view = parse_view({**FULL_VIEW, "name": "cdn_types"})
    run(CassandraSink(keyspace, connections=connections(cassandra)), view, [])
    columns = session.execute(
        "SELECT column_name, type, kind, position FROM system_schema.columns "
        "WHERE keyspace_name = %s AND table_name = %s",
        (keyspace, "cdn_types"),
    )
    columns = list(columns)
    assert {c.column_name: c.type for c in columns} == FULL_TYPES
    key = sorted((c.position, c.column_name) for c in columns if c.kind == "partition_key")
    assert [name for _, name in key] == [
        "client_ip",
        "country",
        "asn",
        "window_start",
        "granularity",
        "grouping_set",
    ]
    assert not [c for c in columns if c.kind == "clustering"]
    replication = session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    ).one()
    assert replication.replication["replication_factor"] == "1"


def test_upserts_are_idempotent_and_a_late_pane_wins(
    cassandra: CassandraConnection, keyspace: str, session: Any
) -> None:
    view = parse_view(SIMPLE_VIEW)
    sink = CassandraSink(keyspace, "page_views_upsert", connections(cassandra))
    on_time = simple_rows(view, pages=50, views=3, pane_timing="ON_TIME", index=0)
    run(sink, view, on_time)
    run(sink, view, on_time)  # a replay
    stored = select_all(session, keyspace, "page_views_upsert")
    assert len(stored) == 50
    assert {r["pane_timing"] for r in stored} == {"ON_TIME"}
    assert sorted(r["views"] for r in stored) == [3 + p for p in range(50)]

    late = simple_rows(view, pages=50, views=9, pane_timing="LATE", index=1)
    run(sink, view, late)
    stored = select_all(session, keyspace, "page_views_upsert")
    assert len(stored) == 50
    by_page = {r["page"]: r for r in stored}
    for p in range(50):
        row = by_page[f"/p{p}"]
        assert (row["views"], row["total_ms"], row["pane_timing"], row["pane_index"]) == (
            9 + p,
            10.0 * (9 + p),
            "LATE",
            1,
        )


def test_an_older_pane_that_arrives_last_does_not_win(
    cassandra: CassandraConnection, keyspace: str, session: Any
) -> None:
    # What a retry does: the write of pane 0 reaches the server after that of pane 1. The write
    # timestamps come from the moment each row reached the sink, so pane 1 stays.
    view = parse_view(SIMPLE_VIEW)
    layout = table_layout(view, keyspace, "page_views_order")
    insert = prepare_table(session, layout, 1)
    pane0 = simple_rows(view, pages=20, views=1, pane_timing="ON_TIME", index=0)
    pane1 = simple_rows(view, pages=20, views=5, pane_timing="LATE", index=1)
    now_us = time.time_ns() // 1000
    writer = AsyncWriter(
        session.execute_async, max_in_flight=8, retry=RetryPolicy(), retryable=retryable_errors()
    )
    for row in pane1:
        writer.submit(insert.bind(layout.values(row, now_us + 1)))
    writer.flush()
    for row in pane0:
        writer.submit(insert.bind(layout.values(row, now_us)))
    writer.flush()
    stored = select_all(session, keyspace, "page_views_order")
    assert {(r["pane_index"], r["views"] - int(r["page"][2:])) for r in stored} == {(1, 5)}


#: Running totals per post and per event type, for all time.
GLOBAL_VIEW = {
    "name": "post_totals",
    "event_time": {"field": "ts", "format": "epoch_s"},
    "grouping_cols": ["country", "asn"],
    "grouping_sets": [["country", "asn"], ["country"]],
    "window": {"type": "global"},
    "emit": {"early": "10s"},
    "state_ttl": "30d",
    "aggregation_info": [
        {"aggregation": "count", "aggregated_col_name": "requests"},
        {"aggregation": "sum", "col_name": "bytes", "aggregated_col_name": "bytes_total"},
    ],
    "derived": [{"name": "bytes_per_request", "expr": "bytes_total / requests"}],
}


def test_a_global_table_is_keyed_by_the_grouping_columns_alone(
    cassandra: CassandraConnection, keyspace: str, session: Any
) -> None:
    view = parse_view(GLOBAL_VIEW)
    messages = list(_messages(120))
    rows = aggregate(view, messages)
    assert rows and all("window_start" not in r and "window_end" not in r for r in rows)
    sink = CassandraSink(keyspace, connections=connections(cassandra))
    run(sink, view, rows)
    columns = list(
        session.execute(
            "SELECT column_name, type, kind, position FROM system_schema.columns "
            "WHERE keyspace_name = %s AND table_name = %s",
            (keyspace, "post_totals"),
        )
    )
    assert {c.column_name: c.type for c in columns} == {
        "country": "text",
        "asn": "text",
        "grouping_set": "int",
        "requests": "bigint",
        "bytes_total": "double",
        "bytes_per_request": "double",
        "pane_timing": "text",
        "pane_index": "int",
        "updated_at": "timestamp",
    }
    key = sorted((c.position, c.column_name) for c in columns if c.kind == "partition_key")
    assert [name for _, name in key] == ["country", "asn", "grouping_set"]
    stored = {
        (r["country"], r["asn"], r["grouping_set"]): r
        for r in select_all(session, keyspace, "post_totals")
    }
    # Counted here from the messages, not from the rows: one running total per key.
    totals: dict[tuple[str, str, int], list[int]] = {}
    for msg in messages:
        asn = "" if msg.get("asn") is None else json.dumps(msg["asn"])
        for key in ((msg["country"], asn, 0), (msg["country"], "", 1)):
            total = totals.setdefault(key, [0, 0])
            total[0] += 1
            total[1] += msg["bytes"]
    assert stored.keys() == totals.keys()
    for key, (requests, total_bytes) in totals.items():
        row = stored[key]
        assert (row["requests"], row["bytes_total"]) == (requests, float(total_bytes)), key
        assert row["bytes_per_request"] == pytest.approx(total_bytes / requests)

    # A later pane of a running total replaces the row of its key: no window keeps it apart.
    more = aggregate(view, messages + list(_messages(10)), pane_timing="EARLY", index=1)
    run(sink, view, more)
    again = select_all(session, keyspace, "post_totals")
    assert len(again) == len(totals)
    assert {r["pane_index"] for r in again} == {1}
    assert sum(r["requests"] for r in again if r["grouping_set"] == 1) == 130


def test_a_global_grand_total_is_one_row_keyed_by_the_view(
    cassandra: CassandraConnection, keyspace: str, session: Any
) -> None:
    plain = {k: v for k, v in GLOBAL_VIEW.items() if k != "grouping_sets"}
    view = parse_view(plain | {"name": "grand_total", "grouping_cols": []})
    layout = table_layout(view, keyspace)
    assert [c.name for c in layout.partition_key] == ["view"]
    rows = aggregate(view, list(_messages(30)))
    run(CassandraSink(keyspace, connections=connections(cassandra)), view, rows)
    stored = select_all(session, keyspace, "grand_total")
    assert [(r["view"], r["requests"]) for r in stored] == [("grand_total", 30)]


def test_the_windows_of_a_cumulative_period_are_rows_of_their_own(
    cassandra: CassandraConnection, keyspace: str, session: Any
) -> None:
    view = parse_view(
        {**SIMPLE_VIEW, "name": "daily_pages", "allowed_lateness": "0s"}
        | {"window": {"type": "cumulative", "size": "1h", "step": "10m"}}
    )
    layout = table_layout(view, keyspace)
    assert [c.name for c in layout.partition_key] == ["page", "window_start", "window_end"]
    messages = [{"ts": T0 + i * 60, "page": f"/p{i % 2}", "ms": i} for i in range(60)]
    rows = aggregate(view, messages)
    assert len(rows) == 12  # two pages, six prefixes of the hour each
    run(CassandraSink(keyspace, connections=connections(cassandra)), view, rows)
    stored = select_all(session, keyspace, "daily_pages")
    start = datetime.fromtimestamp(T0, UTC).replace(tzinfo=None)
    assert sorted((r["page"], r["window_end"] - start, r["views"]) for r in stored) == [
        (f"/p{p}", timedelta(minutes=10 * k), 5 * k) for p in (0, 1) for k in range(1, 7)
    ]


def test_an_existing_table_of_another_shape_fails_at_setup(
    cassandra: CassandraConnection, keyspace: str, session: Any
) -> None:
    view = parse_view(SIMPLE_VIEW)
    sink = CassandraSink(keyspace, "page_views_wrong", connections(cassandra))
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute(
        f"CREATE TABLE {keyspace}.page_views_wrong "
        "(page text, window_start timestamp, views text, PRIMARY KEY ((page), window_start))"
    )
    with pytest.raises(Exception, match="exists with another shape") as info:
        run(sink, view, simple_rows(view, pages=1, views=1, pane_timing="ON_TIME", index=0))
    message = str(info.value)
    for part in (
        f"Cassandra table {keyspace}.page_views_wrong",
        "column views is text, expected bigint",
        "missing column window_end timestamp",
        "missing column total_ms double",
        "partition key is (page), expected (page, window_start)",
        "clustering columns (window_start), expected none",
    ):
        assert part in message


@pytest.mark.slow
def test_rows_survive_a_cassandra_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stops a private node for ~10 s while a pipeline writes; every row must arrive.

    A private node because the shared one is used by other tests, and the harness wipes its
    data on start. This node keeps its data across the restart, as a production node does.
    """
    monkeypatch.setenv("LIVEAGG_CASSANDRA_HEAP", "512m")
    node = _PrivateCassandra(tmp_path / "cassandra")
    handle = node.ensure()
    try:
        conn = handle.connection
        view = parse_view(SIMPLE_VIEW)
        rows = simple_rows(view, pages=2000, views=1, pane_timing="ON_TIME", index=0)
        sink = CassandraSink("restart_ks", "page_views", connections(conn))
        outcome: dict[str, Any] = {}

        def write_slowly() -> None:
            pipeline = beam.Pipeline()
            throttled = (
                pipeline
                | beam.Create(range(len(rows)))
                | beam.Map(lambda i: time.sleep(0.01) or rows[i])
            )
            sink.write(throttled, view, bounded=True)
            try:
                result = pipeline.run()
                result.wait_until_finish()
                counters = result.metrics().query(MetricsFilter().with_name("cassandra/retries"))
                outcome["retries"] = sum(c.committed for c in counters["counters"])
            except BaseException as e:
                outcome["error"] = e

        writer = threading.Thread(target=write_slowly, daemon=True)
        writer.start()
        _wait_for_rows(conn, "restart_ks.page_views", at_least=100)
        assert writer.is_alive(), outcome
        node.stop()
        time.sleep(10)
        node.ensure()
        writer.join(timeout=300)
        assert not writer.is_alive(), "the pipeline did not finish within 5 minutes"
        assert "error" not in outcome, outcome.get("error")
        assert outcome["retries"] > 0  # the outage was hit

        cluster = Cluster(**conn.cluster_kwargs())
        try:
            stored = select_all(cluster.connect(), "restart_ks", "page_views")
        finally:
            cluster.shutdown()
        assert sorted(r["page"] for r in stored) == sorted(r["page"] for r in rows)
    finally:
        node.stop()


def _wait_for_rows(conn: CassandraConnection, table: str, at_least: int) -> None:
    """Return once ``table`` holds ``at_least`` rows: the write loop is under way."""
    cluster = Cluster(**conn.cluster_kwargs())
    try:
        session = cluster.connect()

        def enough() -> None:
            count = session.execute(f"SELECT count(*) FROM {table}").one()[0]
            assert count >= at_least, f"{count} rows"

        eventually(
            enough,
            what=f"{at_least} rows in {table}",
            timeout_s=120,
            every_s=0.2,
            transient=cassandra_schema_settling,  # the table is not there, or being made
        )
    finally:
        cluster.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PrivateCassandra(Cassandra):
    """A node on free ports under ``run_dir``; its data is wiped only on the first start."""

    def __init__(self, run_dir: Path) -> None:
        self._run_dir = run_dir
        self._ports = {"native": _free_port(), "storage": _free_port()}
        self._prepared = False

    @property
    def run_dir(self) -> Path:
        return self._run_dir

    def ports(self) -> dict[str, int]:
        return dict(self._ports)

    def prepare(self) -> None:
        if not self._prepared:
            super().prepare()
            self._prepared = True


def test_a_batch_of_rows_with_their_own_timestamps_is_written_and_grouped_by_replica(
    cassandra: CassandraConnection, keyspace: str, session: Any
) -> None:
    view = parse_view(FULL_VIEW)
    layout = table_layout(view, keyspace, "batched")
    insert = prepare_table(session, layout, 1)
    rows = aggregate(view, list(_messages(60)))
    assert len(rows) > 20
    bound = [insert.bind(layout.values(row, 1_000_000 + i)) for i, row in enumerate(rows)]
    replicas = replica_set(session, keyspace)
    assert {len(replicas(b)) for b in bound} == {1}  # one node: every row has the same replica
    session.execute(unlogged_batch(bound[:20]))
    session.execute(unlogged_batch(bound[20:]))
    stored = select_all(session, keyspace, layout.table)
    assert len(stored) == len(rows)
    times = session.execute(f"SELECT WRITETIME(updated_at) FROM {layout.qualified}")
    assert sorted(t[0] for t in times) == [1_000_000 + i for i in range(len(rows))]


def _sink_requests(
    session: Any, keyspace: str, view: ViewSpec, table: str, rows: list[dict[str, Any]]
) -> tuple[TableLayout, list[tuple[Any, int]]]:
    """The view's table, created, and the requests the sink sends for ``rows``."""
    layout = table_layout(view, keyspace, table)
    insert = prepare_table(session, layout, 1)
    batches = ReplicaBatches(replica_set(session, keyspace), unlogged_batch, 20)
    requests = [
        request
        for i, row in enumerate(rows)
        for request in batches.add(insert.bind(layout.values(row, 1_000_000 + i)))
    ]
    return layout, [*requests, *batches.drain()]


def test_the_servers_warning_about_multi_partition_batches_is_not_logged(
    cassandra: CassandraConnection,
    keyspace: str,
    session: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Batches of one replica set span partitions on purpose; Cassandra warns for each one,
    and logging that per response cost the sink's worker time. Other warnings stay."""
    view = parse_view(SIMPLE_VIEW)
    rows = aggregate(view, [{"ts": T0 + i, "page": f"/p{i}", "ms": i} for i in range(40)])
    layout, requests = _sink_requests(session, keyspace, view, "quiet", rows)
    counts = [n for _, n in requests]
    assert sum(counts) == 40 and counts[0] > 10 and counts[1] > 10  # the server warns above 10
    logger = logging.getLogger("cassandra.protocol")
    saved = list(logger.filters)
    for f in saved:
        logger.removeFilter(f)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "cassandra.protocol"]

    try:
        with caplog.at_level(logging.WARNING, logger="cassandra.protocol"):
            session.execute(requests[0][0])
            assert [m[:40] for m in warnings()] == ["Server warning: Unlogged batch covering "]
            caplog.clear()
            quiet_batch_warnings()
            quiet_batch_warnings()  # installed once
            assert len(logger.filters) == 1
            for request, _ in requests[1:]:
                session.execute(request)
            assert warnings() == []
            logger.warning("Server warning: %s", "Read 5000 live rows and 1001 tombstone cells")
            assert warnings() == ["Server warning: Read 5000 live rows and 1001 tombstone cells"]
    finally:
        for f in list(logger.filters):
            logger.removeFilter(f)
        for f in saved:
            logger.addFilter(f)
    assert len(select_all(session, keyspace, layout.table)) == 40


def test_batches_of_wide_rows_stay_under_the_servers_batch_size_warning(
    cassandra: CassandraConnection,
    keyspace: str,
    session: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sink's byte count includes what Cassandra counts per cell, so its batches do not
    draw the batch-size warning (5 KiB by default) that the server logs and answers with."""
    view = parse_view(FULL_VIEW)
    rows = aggregate(view, list(_messages(60)))
    layout, requests = _sink_requests(session, keyspace, view, "wide", rows)
    assert max(n for _, n in requests) > 1
    with caplog.at_level(logging.WARNING, logger="cassandra.protocol"):
        for request, _ in requests:
            session.execute(request)
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "exceeding specified threshold" in m] == []
    assert len(select_all(session, keyspace, layout.table)) == len(rows)


# --- rows Cassandra cannot store, tables two views share -------------------------------------


def write_rows(
    sink: CassandraSink, view: ViewSpec, rows: list[dict[str, Any]], tmp_path: Path
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Write ``rows`` as :func:`run` does; return liveagg's counters and the sink's dead
    letters (through a file: the runner may run the pipeline's steps elsewhere)."""
    pipeline = beam.Pipeline()
    letters = sink.write(pipeline | beam.Create(rows), view, bounded=True)
    if letters is not None:  # RowSink.write may return None
        lines = letters | beam.Map(lambda x: orjson.dumps(x).decode())
        _ = lines | beam.io.WriteToText(str(tmp_path / "letters"))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("liveagg"))["counters"]
    lines = [line for f in tmp_path.glob("letters*") for line in f.read_text().splitlines()]
    return {c.key.metric.name: c.committed for c in counters}, [orjson.loads(x) for x in lines]


def page_rows(
    view: ViewSpec, pages: Sequence[str], outputs: tuple[Any, ...]
) -> list[dict[str, Any]]:
    plan = ViewPlan(view)
    start = T0 * 1_000_000
    return [
        plan.row(
            plan.variants[0], start, start + 60_000_000, orjson.dumps([p]), outputs, "ON_TIME", 0
        )
        for p in pages
    ]


@pytest.mark.parametrize(
    ("window", "largest_key"),
    [
        # page and window_start, each with a 2-byte length and an end byte: 65,535 - 14.
        ({"size": "1m"}, 65_521),
        ({"type": "global"}, 65_535),  # page alone, stored as it is
    ],
)
def test_a_row_whose_key_cassandra_cannot_store_is_a_dead_letter_and_the_others_are_written(
    cassandra: CassandraConnection,
    keyspace: str,
    session: Any,
    tmp_path: Path,
    window: dict[str, str],
    largest_key: int,
) -> None:
    """Sent, the row failed its bundle and the run ("'H' format requires 0 <= number <=
    65535" from the driver's routing key, "Key length of 65536 is longer than maximum of
    65535" from the server), and the valid rows with it."""
    name = f"long_keys_{'global' if 'type' in window else 'windowed'}"
    spec = {**SIMPLE_VIEW, "name": name, "window": window}
    if "type" in window:
        del spec["allowed_lateness"]
        spec |= {"emit": {"early": "10s"}, "state_ttl": "30d"}
    view = parse_view(spec)
    pages = ["/a", "x" * largest_key, "/b", "y" * (largest_key + 1), "/c"]
    rows = page_rows(view, pages, (1, 2.0))
    sink = CassandraSink(keyspace, connections=connections(cassandra))

    counters, letters = write_rows(sink, view, rows, tmp_path)

    stored = select_all(session, keyspace, name)
    assert sorted(r["page"] for r in stored) == sorted(pages[:3] + pages[4:])
    assert counters["cassandra/rows_written"] == 4
    assert counters[f"result_dead_letter/{name}/too_large"] == 1
    assert [(x["view"], x["reason"]) for x in letters] == [(name, "too_large")]
    assert letters[0]["detail"].startswith(
        f"not written to Cassandra table {keyspace}.{name}: its partition key is "
        "65536 bytes, over the 65535 bytes"
    )
    payload = orjson.loads(letters[0]["payload"])
    assert payload["page"] == pages[3] and "views" not in payload


def test_a_row_over_the_largest_request_is_a_dead_letter_and_the_others_are_written(
    cassandra: CassandraConnection, keyspace: str, session: Any, tmp_path: Path
) -> None:
    """Sent, the row failed its bundle and the run with "CQL Message of size ... exceeds
    allowed maximum of 16777216 bytes"."""
    view = parse_view(
        {
            **SIMPLE_VIEW,
            "name": "wide_values",
            "aggregation_info": [
                {"aggregation": "max", "col_name": "path", "aggregated_col_name": "path_max"}
            ],
        }
    )
    assert max_request_bytes(session) == 16 * 1024 * 1024  # the server's own settings
    rows = page_rows(view, ["/big"], ("z" * (17 * 1024 * 1024),))
    rows += page_rows(view, ["/near"], ("n" * (16 * 1024 * 1024 - 2048),))  # stored
    rows += page_rows(view, ["/a", "/b"], ("small",))
    sink = CassandraSink(keyspace, connections=connections(cassandra))

    counters, letters = write_rows(sink, view, rows, tmp_path)

    stored = {r["page"]: r for r in select_all(session, keyspace, "wide_values")}
    assert sorted(stored) == ["/a", "/b", "/near"]
    assert len(stored["/near"]["path_max"]) == 16 * 1024 * 1024 - 2048 + 2  # JSON quotes
    assert counters["cassandra/rows_written"] == 3
    assert [(x["view"], x["reason"]) for x in letters] == [("wide_values", "too_large")]
    assert "over the 16777216 bytes that Cassandra accepts in one request" in letters[0]["detail"]
    assert "column 'path_max' holds 17825794 bytes" in letters[0]["detail"]
    assert orjson.loads(letters[0]["payload"])["page"] == "/big"


def test_a_run_with_a_key_cassandra_cannot_store_succeeds_and_reports_the_dead_letter(
    cassandra: CassandraConnection, keyspace: str, session: Any, tmp_path: Path
) -> None:
    view = {**SIMPLE_VIEW, "name": "run_long_keys"}
    (tmp_path / "view.json").write_text(json.dumps(view))
    pages = ["/a", "k" * 70_000, "/b"]
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"ts": T0, "page": p, "ms": 1}) + "\n" for p in pages)
    )
    sink = {"type": "cassandra", "keyspace": keyspace}

    report = run_views(
        RunConfig(
            views=[str(tmp_path / "view.json")],
            inputs=[str(tmp_path / "in.jsonl")],
            output=str(tmp_path / "out"),
            sinks=[json.dumps(sink)],
            connections=connections(cassandra),
        )
    )

    assert report.result_dead_letters == {"run_long_keys": {"too_large": 1}}
    assert report.dead_letters == {"too_large": 1}
    assert report.reconcile() == []
    written = tmp_path / "out" / "_dead_letter" / "run_long_keys.jsonl"
    (letter,) = [json.loads(line) for line in written.read_text().splitlines()]
    assert (letter["view"], letter["reason"]) == ("run_long_keys", "too_large")
    assert json.loads(letter["payload"])["page"] == "k" * 70_000
    assert sorted(r["page"] for r in select_all(session, keyspace, "run_long_keys")) == [
        "/a",
        "/b",
    ]


def test_a_global_row_whose_only_key_is_empty_is_a_dead_letter(
    cassandra: CassandraConnection, keyspace: str, session: Any, tmp_path: Path
) -> None:
    """A global window's key is its grouping columns alone: one null or "" value is an empty
    key, which the server refuses ("Key may not be empty"), failing the batch and the run."""
    view = {
        **SIMPLE_VIEW,
        "name": "running_pages",
        "window": {"type": "global"},
        "emit": {"early": "10s"},
        "state_ttl": "1d",
        "allowed_lateness": "0s",
    }
    (tmp_path / "view.json").write_text(json.dumps(view))
    pages = ["/a", "", None, "/b"]
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"ts": T0, "page": p, "ms": 1}) + "\n" for p in pages)
    )
    report = run_views(
        RunConfig(
            views=[str(tmp_path / "view.json")],
            inputs=[str(tmp_path / "in.jsonl")],
            output=str(tmp_path / "out"),
            sinks=[json.dumps({"type": "cassandra", "keyspace": keyspace})],
            connections=connections(cassandra),
        )
    )
    assert report.result_dead_letters == {"running_pages": {"empty_key": 2}}
    assert report.reconcile() == []
    rows = select_all(session, keyspace, "running_pages")
    assert sorted(r["page"] for r in rows) == ["/a", "/b"]
