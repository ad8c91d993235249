"""Fixtures for tests against real services; see integration/README.md.

The ``integration`` package is importable because pytest puts the repository root on the path
(``pythonpath = ["."]`` in pyproject.toml).
"""

from integration.pytest_plugin import cassandra, flink, gcs, kafka, s3

__all__ = ["cassandra", "flink", "gcs", "kafka", "s3"]
