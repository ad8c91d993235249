"""Fixtures for the runner conformance suite: the real services, and the Prism binary."""

from integration.pytest_plugin import flink, kafka, prism, spark

__all__ = ["flink", "kafka", "prism", "spark"]
