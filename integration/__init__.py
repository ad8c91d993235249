"""Real services on 127.0.0.1 for liveagg's integration tests.

Kafka and Cassandra run from Maven Central jars, S3 from moto and GCS from a PyPI emulator, so
the tests need no Docker and no download outside the package registries. See
``integration/README.md`` and ``python -m integration.services --help``.
"""
