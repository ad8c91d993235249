"""Fixtures for tests against real services (see integration/README.md), defined once here so
that each service, the Flink cluster and the Spark job server start at most once per session
whichever test folders ask for them.

The ``integration`` package is importable because pytest puts the repository root on the path
(``pythonpath = ["."]`` in pyproject.toml).
"""

from integration.pytest_plugin import cassandra, flink, gcs, kafka, prism, s3, spark

__all__ = ["cassandra", "flink", "gcs", "kafka", "prism", "s3", "spark"]
