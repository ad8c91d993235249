"""Sinks: where a view's rows go. One small interface, one module per kind (Kafka's is
:mod:`liveagg.transforms.kafka.sink`, beside Kafka's client and source).

A sink is built from a view's ``sinks`` entry (or one the run adds) and the run's
:class:`~liveagg.settings.Connections`, which hold every connection setting: views never carry
hosts or credentials. ``write`` adds the transforms that deliver one view's rows. The settings
live in :mod:`liveagg.settings`; their names are kept here too for code that imports them
from this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import apache_beam as beam

from liveagg.settings import (  # noqa: F401  (names kept for importers of this package)
    KAFKA_CONFIG_ENV_PREFIX,
    CassandraTls,
    ConnectionFailed,
    Connections,
    Secret,
    env_flag,
    is_secret_setting,
    kafka_config_from_env,
    kafka_settings,
    parse_kafka_setting,
    reveal,
    revealed,
    secret,
)
from liveagg.spec import Sink

if TYPE_CHECKING:
    from liveagg.engine.compiled import CompiledView


class RowSink(Protocol):
    """Delivers one view's rows, whose columns are ``view.columns`` (the compiled view's
    one schema). ``bounded`` says whether the input ends (batch) or not.

    A sink may also define ``gives_dead_letters = True`` (``write`` returns the dead letters
    of rows it cannot store) and ``exclusive(view) -> Exclusive | None`` (the place it writes
    to holds one view's rows only: the run refuses a second view there before any sink is
    applied).
    """

    def write(
        self, rows: beam.PCollection, view: CompiledView, *, bounded: bool
    ) -> beam.PCollection | None: ...


@dataclass(frozen=True)
class Exclusive:
    """A destination that holds one view's rows only, and how to give each view its own."""

    place: str  # e.g. "Cassandra table metrics.pages"
    advice: str


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


# The modules whose ``register_sink`` calls define the sink types. The Kafka sink lives with
# Kafka's client and source (:mod:`liveagg.transforms.kafka`).
_MODULES = (
    "liveagg.transforms.sinks.files",
    "liveagg.transforms.kafka.sink",
    "liveagg.transforms.sinks.cassandra",
)


def _load() -> None:
    import importlib

    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
