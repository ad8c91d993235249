"""Rows stored in Cassandra read back in the shape of output rows, to compare with the oracle."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cassandra.cluster import Cluster

from integration.services import CassandraConnection
from liveagg.spec import ViewSpec
from liveagg.transforms.sinks.cassandra import column_name
from liveagg.transforms.sinks.files import KEY, TIMESTAMP, view_columns
from tests.support.oracle import format_instant
from tests.support.waiting import Transient, cassandra_schema_settling, retrying

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stored_row(stored: Mapping[str, Any], view: ViewSpec) -> dict[str, Any]:
    """A stored Cassandra row back in the shape of an output row (SPEC section 3)."""
    int_sums = {a.output for a in view.aggregations if a.kind == "sum"}
    row: dict[str, Any] = {}
    for column in view_columns(view):
        if column.name == "view":
            row["view"] = view.name
            continue
        value = stored[column_name(column.name)]
        if column.type == KEY:  # grouping values are stored as text, null as ''
            value = None if value == "" else value
        elif column.type == TIMESTAMP:
            value = format_instant((value.replace(tzinfo=UTC) - _EPOCH) // timedelta(0, 0, 1))
        elif column.type == "json" and value is not None:
            value = orjson.loads(value)
        elif column.type.startswith("list<") and value is not None:
            value = list(value)
        elif column.name in int_sums and isinstance(value, float) and value.is_integer():
            value = int(value)  # a sum is stored as a double, an integer one too (docs)
        row[column.name] = value
    return row


def select_all(
    conn: CassandraConnection,
    keyspace: str,
    table: str,
    *,
    transient: Transient = cassandra_schema_settling,
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Every row of ``keyspace.table``, which a run has just created: by default the states of
    a table being created are waited out (:mod:`tests.support.waiting`)."""
    cluster = Cluster(**conn.cluster_kwargs())
    try:
        session = cluster.connect()
        query = f"SELECT * FROM {keyspace}.{table}"
        return retrying(
            lambda: [r._asdict() for r in session.execute(query)],
            what=f"{keyspace}.{table}",
            transient=transient,
            timeout_s=timeout_s,
        )
    finally:
        cluster.shutdown()


def view_rows(
    conn: CassandraConnection,
    keyspace: str,
    view: ViewSpec,
    *,
    transient: Transient = cassandra_schema_settling,
) -> list[dict[str, Any]]:
    """Every row of the view's table (named after the view), as output rows."""
    return [stored_row(r, view) for r in select_all(conn, keyspace, view.name, transient=transient)]
