"""Waiting for real services: one deadline loop, and the transient states each service passes.

A test that polls asks for the real condition (the table equals the oracle, the topic holds
every message, a checkpoint completed) until a deadline. While a service is still making what
the test reads -- a Cassandra table being created, a Kafka topic whose metadata has not reached
the broker yet, a group coordinator loading its offsets, a Flink job starting -- it answers
with errors that mean "not yet". Those, named by the predicates below, are waited out; any other
error fails the test at once.

* :func:`eventually` -- a condition: ``AssertionError`` or a transient error means "not yet".
* :func:`retrying` -- one read right after a service made what it reads: only transient errors
  are retried.

Example:
    >>> rows = retrying(read, what="ks.view", transient=cassandra_schema_settling)  # doctest: +SKIP
"""

from __future__ import annotations

import re
import time
import urllib.error
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from liveagg.runners.flink_rest import FlinkRestError, initializing

T = TypeVar("T")
Transient = Callable[[BaseException], bool]

_TABLE_MISSING = re.compile(r"unconfigured table|\b(table|keyspace) \S+ does not exist")


def never(_error: BaseException) -> bool:
    """No error is transient."""
    return False


def either(*predicates: Transient) -> Transient:
    """Transient when any of ``predicates`` says so."""
    return lambda error: any(p(error) for p in predicates)


def eventually(
    check: Callable[[], T],
    *,
    what: str,
    timeout_s: float,
    every_s: float = 0.5,
    transient: Transient = never,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``check()`` until it returns, and its result.

    ``AssertionError`` (the condition does not hold yet) and errors ``transient`` accepts are
    "not yet": ``check`` runs again ``every_s`` later. Any other error propagates at once. At
    the deadline an ``AssertionError`` names ``what`` and the last "not yet" reason.
    """
    return _loop(check, what, timeout_s, every_s, transient, clock, sleep, conditions=True)


def retrying(
    call: Callable[[], T],
    *,
    what: str,
    transient: Transient,
    timeout_s: float = 60.0,
    every_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, repeated only while it raises an error ``transient`` accepts.

    For a read right after a service made what it reads: an ``AssertionError`` or any other
    error propagates at once.
    """
    return _loop(call, what, timeout_s, every_s, transient, clock, sleep, conditions=False)


def _loop(
    call: Callable[[], T],
    what: str,
    timeout_s: float,
    every_s: float,
    transient: Transient,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    *,
    conditions: bool,
) -> T:
    deadline = clock() + timeout_s
    while True:
        try:
            return call()
        except AssertionError as e:
            if not conditions:
                raise
            last: BaseException = e
        except Exception as e:
            if not transient(e):
                raise
            last = e
        if clock() >= deadline:
            kind = "" if isinstance(last, AssertionError) else f"{type(last).__name__}: "
            raise AssertionError(f"{what}: not within {timeout_s:g} s: {kind}{last}") from last
        sleep(every_s)


# --- Cassandra ------------------------------------------------------------------------------


def cassandra_table_opening(error: BaseException) -> bool:
    """A table that exists in the schema but is not open on the node yet.

    The node answers a read with a server error ``java.lang.IllegalArgumentException: Unknown
    CF <table id>`` (``Keyspace.getColumnFamilyStore``). The driver's default retry policy
    sends a server error to the next host (``RetryPolicy.on_request_error`` returns
    ``RETRY_NEXT_HOST``, cassandra/policies.py:875), so with one node it arrives wrapped in
    ``NoHostAvailable``.
    """
    from cassandra.cluster import NoHostAvailable
    from cassandra.protocol import ServerError

    if isinstance(error, NoHostAvailable):
        errors = list(error.errors.values())
        return bool(errors) and all(cassandra_table_opening(e) for e in errors)
    return isinstance(error, ServerError) and "Unknown CF" in str(error)


def cassandra_table_missing(error: BaseException) -> bool:
    """A table or keyspace the node does not know (yet): not created, or its creation has not
    reached this coordinator. Cassandra 5 says ``table t does not exist``; earlier versions
    ``unconfigured table t``."""
    from cassandra import InvalidRequest

    return isinstance(error, InvalidRequest) and _TABLE_MISSING.search(str(error)) is not None


def cassandra_schema_settling(error: BaseException) -> bool:
    """A table being created: missing on the coordinator, or there and not open yet."""
    return cassandra_table_opening(error) or cassandra_table_missing(error)


# --- Kafka ----------------------------------------------------------------------------------


def kafka_metadata_settling(error: BaseException | Any) -> bool:
    """A topic just created whose metadata has not reached the broker or client yet.

    ``error`` is a ``KafkaException`` or the ``KafkaError`` a consumed message carries. Group
    requests wait for a starting coordinator with ``coordinated()`` from the Kafka source.
    """
    import confluent_kafka as ck

    if isinstance(error, ck.KafkaException):
        error = error.args[0] if error.args else None
    if not isinstance(error, ck.KafkaError):
        return False
    return error.code() in {
        ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
        ck.KafkaError.LEADER_NOT_AVAILABLE,
        ck.KafkaError._UNKNOWN_TOPIC,
        ck.KafkaError._UNKNOWN_PARTITION,
    }


def kafka_records(messages: Iterable[Any]) -> list[Any]:
    """The records among what ``Consumer.consume`` returned.

    End-of-partition events and transient errors (:func:`kafka_metadata_settling`) are
    skipped; any other error fails the test.
    """
    import confluent_kafka as ck

    records = []
    for msg in messages:
        error = msg.error()
        if error is None:
            records.append(msg)
        elif error.code() != ck.KafkaError._PARTITION_EOF and not kafka_metadata_settling(error):
            raise AssertionError(f"{msg.topic()} [{msg.partition()}]: {error}")
    return records


# --- Flink ----------------------------------------------------------------------------------


def flink_job_starting(error: BaseException) -> bool:
    """A job the REST API does not serve yet: 404 before it is registered, 503 while the
    cluster is busy starting it, or the JobManager still initializing (restoring, say)."""
    if not isinstance(error, FlinkRestError):
        return False
    cause = error.__cause__
    if isinstance(cause, urllib.error.HTTPError) and cause.code in (404, 503):
        return True
    return initializing(str(error))
