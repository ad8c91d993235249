"""Session-scoped pytest fixtures for the real services: ``kafka``, ``cassandra``, ``s3``, ``gcs``,
``flink`` and ``spark``; and ``prism``, the path of a Prism binary built for the installed Beam SDK.

Each fixture reuses a healthy service already on its port (one started with
``python -m integration.services start``, say) or starts one, yields its connection info, and
at the end of the session stops only what it started. Load it with ``-p
integration.pytest_plugin``, ``pytest_plugins`` in the root conftest, or by importing the
fixtures into a conftest.

A missing prerequisite (Java, Maven, a client package) skips the tests that need the service,
with the install hint as the reason; ``LIVEAGG_INTEGRATION_STRICT=1`` (for CI) turns that skip
into a failure. A service that is installed but fails to start is always an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import services
from integration.services import (
    CassandraConnection,
    FlinkConnection,
    GcsConnection,
    KafkaConnection,
    S3Connection,
    SparkConnection,
)


def _strict() -> bool:
    return os.environ.get("LIVEAGG_INTEGRATION_STRICT", "").lower() in ("1", "true", "yes")


def ensure_or_skip(name: str) -> services.ServiceHandle:
    """``services.ensure(name)``, skipping (or failing, when strict) on a missing prerequisite."""
    try:
        return services.ensure(name)
    except services.PrerequisiteError as e:
        if _strict():
            pytest.fail(f"{name}: {e}", pytrace=False)
        pytest.skip(f"{name}: {e}")


def _serve(name: str) -> Iterator[Any]:
    handle = ensure_or_skip(name)
    try:
        yield handle.connection
    finally:
        services.release(handle)


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaConnection]:
    """A KRaft broker; ``kafka.bootstrap_servers`` is ``127.0.0.1:<LIVEAGG_KAFKA_PORT>``."""
    yield from _serve("kafka")


@pytest.fixture(scope="session")
def cassandra() -> Iterator[CassandraConnection]:
    """A single Cassandra node; ``Cluster(**cassandra.cluster_kwargs())`` connects to it."""
    yield from _serve("cassandra")


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Connection]:
    """moto's S3; ``boto3.client("s3", **s3.boto3_kwargs())`` talks to it."""
    yield from _serve("s3")


@pytest.fixture(scope="session")
def gcs() -> Iterator[GcsConnection]:
    """The GCS emulator; ``storage.Client(**gcs.client_kwargs())`` talks to it."""
    yield from _serve("gcs")


@pytest.fixture(scope="session")
def flink() -> Iterator[FlinkConnection]:
    """A Flink 1.19 session cluster (one JobManager, two TaskManagers of two slots each), Beam's
    job server and a Python worker pool; ``flink.pipeline_args()`` submits a pipeline to it.

    Tests may crash and restart parts (``integration.services.flink.kill_taskmanager`` and
    friends); at the end of the session every part this process started is stopped.
    """
    yield from _serve("flink")


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkConnection]:
    """Beam's Spark job server, running jobs in Spark's local mode; ``spark.job_endpoint`` is
    what ``--spark-job-endpoint`` takes. Its jars come from Maven Central on first use."""
    yield from _serve("spark")


@pytest.fixture(scope="session")
def prism() -> Path:
    """Prism of the installed Beam SDK's version (``--prism-location``), built with ``go
    install`` into the cache on first use (minutes) and reused after; no Go skips (or, when
    strict, fails) the tests that need it."""
    from integration.services import prism as prism_build

    try:
        return prism_build.ensure_binary()
    except services.PrerequisiteError as e:
        if _strict():
            pytest.fail(f"prism: {e}", pytrace=False)
        pytest.skip(f"prism: {e}")
