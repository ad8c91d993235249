"""Start, reuse and stop the real services the integration tests talk to.

Each service listens on 127.0.0.1 only, on a fixed port that an environment variable can move
(``LIVEAGG_KAFKA_PORT`` and friends, see ``integration/README.md``). ``ensure()`` reuses any
healthy service already on that port, whoever started it, and starts one otherwise; only what a
call started is reported as ``started_here`` and stopped by ``stop_started()``.

Example (starts a real broker, hence no doctest)::

    from integration import services

    handle = services.ensure("kafka")
    producer = Producer(handle.connection.client_config())  # bootstrap.servers=127.0.0.1:19092
    ...
    services.stop_started()  # stops Kafka only if this process started it
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ._core import (
    HOST,
    PrerequisiteError,
    Service,
    ServiceError,
    ServiceHandle,
    cache_dir,
)
from .cassandra import Cassandra, CassandraConnection
from .flink import Flink, FlinkConnection
from .gcs import Gcs, GcsConnection
from .kafka import Kafka, KafkaConnection
from .s3 import S3, S3Connection

__all__ = [
    "HOST",
    "NAMES",
    "CassandraConnection",
    "FlinkConnection",
    "GcsConnection",
    "KafkaConnection",
    "PrerequisiteError",
    "S3Connection",
    "ServiceError",
    "ServiceHandle",
    "cache_dir",
    "connection",
    "describe",
    "ensure",
    "get",
    "release",
    "status",
    "stop",
    "stop_started",
]

_SERVICES: dict[str, type[Service]] = {
    "kafka": Kafka,
    "cassandra": Cassandra,
    "s3": S3,
    "gcs": Gcs,
    "flink": Flink,
}
NAMES: tuple[str, ...] = tuple(_SERVICES)
"""Every service the harness knows, in start order."""

_started: dict[str, ServiceHandle] = {}


def get(name: str) -> Service:
    """The service called ``name``; an unknown name lists the known ones."""
    try:
        return _SERVICES[name]()
    except KeyError:
        raise ServiceError(f"unknown service {name!r}; known: {', '.join(NAMES)}") from None


def ensure(name: str) -> ServiceHandle:
    """Return a healthy ``name`` service, starting it only when none answers on its port.

    Safe to call from several processes at once: start and stop hold a file lock in the
    service's run folder.

    Raises:
        PrerequisiteError: Java, Maven or a Python package it needs is missing.
        ServiceError: it did not become healthy, or its port is taken by something else.
    """
    handle = get(name).ensure()
    if handle.started_here:
        _started[name] = handle
    return handle


def stop(name: str) -> str:
    """Stop ``name`` if the harness started it (now or in an earlier run); say what happened."""
    _started.pop(name, None)
    return get(name).stop()


def release(handle: ServiceHandle) -> str:
    """Stop the service behind ``handle`` if that call started it and it is still that process.

    A handle that reused a service (``started_here`` False) is left alone, so a fixture can
    call this unconditionally at the end of a session.
    """
    if not handle.started_here:
        return "not started here: left running"
    _started.pop(handle.name, None)
    return get(handle.name).release(handle)


def stop_started() -> dict[str, str]:
    """Stop what ``ensure()`` started in this process, newest first; leave everything else."""
    return {name: release(_started[name]) for name in reversed(list(_started))}


def status(name: str) -> str:
    """One line about ``name``: running (pid, ports, memory, health) or stopped."""
    return get(name).status()


def connection(name: str) -> Any:
    """Connection info for ``name`` on its configured port, without starting anything."""
    return get(name).connection()


def describe(conn: Any) -> str:
    """``key=value`` pairs of a connection dataclass, for one-line messages; passwords
    are left out (``env`` prints them, for a shell to export)."""
    fields = dataclasses.asdict(conn).items()
    return " ".join(f"{k}={v}" for k, v in fields if "password" not in k)
