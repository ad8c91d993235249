"""Sinks: where a view's rows go. One small interface, one module per kind.

A sink is built from a view's ``sinks`` entry (or one the run adds) and the run's
:class:`Connections`, which hold every connection setting: views never carry hosts or
credentials. ``write`` adds the transforms that deliver one view's rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import apache_beam as beam

from liveagg.spec import Sink, ViewSpec


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Connections:
    """Connection settings of a run: command-line options, else environment variables.

    The environment variables are those the client libraries already honour where one exists
    (``AWS_ACCESS_KEY_ID``, ``STORAGE_EMULATOR_HOST``), else ``LIVEAGG_*``.
    """

    kafka_bootstrap: str | None = field(default_factory=lambda: _env("LIVEAGG_KAFKA_BOOTSTRAP"))
    kafka_config: Mapping[str, str] = field(default_factory=dict)  # extra librdkafka settings
    cassandra_hosts: tuple[str, ...] = field(
        default_factory=lambda: tuple(
            h for h in (_env("LIVEAGG_CASSANDRA_HOSTS", "127.0.0.1") or "").split(",") if h
        )
    )
    cassandra_port: int = field(
        default_factory=lambda: int(_env("LIVEAGG_CASSANDRA_PORT", "9042") or 9042)
    )
    cassandra_local_dc: str | None = field(
        default_factory=lambda: _env("LIVEAGG_CASSANDRA_LOCAL_DC")
    )
    cassandra_replication: int = 1
    s3_endpoint: str | None = field(default_factory=lambda: _env("LIVEAGG_S3_ENDPOINT"))
    s3_access_key_id: str | None = field(default_factory=lambda: _env("AWS_ACCESS_KEY_ID"))
    s3_secret_access_key: str | None = field(default_factory=lambda: _env("AWS_SECRET_ACCESS_KEY"))
    s3_region: str | None = field(default_factory=lambda: _env("AWS_DEFAULT_REGION"))
    gcs_endpoint: str | None = field(default_factory=lambda: _env("STORAGE_EMULATOR_HOST"))
    gcs_project: str | None = field(default_factory=lambda: _env("GOOGLE_CLOUD_PROJECT"))


class RowSink(Protocol):
    """Delivers one view's rows. ``bounded`` says whether the input ends (batch) or not."""

    def write(
        self, rows: beam.PCollection, view: ViewSpec, *, bounded: bool
    ) -> beam.PCollection | None: ...


SinkFactory = Callable[[Sink, Connections], RowSink]
_FACTORIES: dict[str, SinkFactory] = {}


def register_sink(kind: str) -> Callable[[SinkFactory], SinkFactory]:
    def decorate(factory: SinkFactory) -> SinkFactory:
        _FACTORIES[kind] = factory
        return factory

    return decorate


def build_sink(sink: Sink, connections: Connections) -> RowSink:
    """Build the sink for a ``sinks`` entry; unknown types list the known ones."""
    _load()
    try:
        factory = _FACTORIES[sink.type]
    except KeyError:
        raise ValueError(
            f"unknown sink type {sink.type!r}; known: {', '.join(sorted(_FACTORIES))}"
        ) from None
    return factory(sink, connections)


def _load() -> None:
    import importlib

    for module in ("files", "kafka", "cassandra"):
        try:
            importlib.import_module(f"liveagg.transforms.sinks.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"liveagg.transforms.sinks.{module}":
                raise
