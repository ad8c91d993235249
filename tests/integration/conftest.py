"""Fixtures for tests against real services; see integration/README.md."""

import sys
from pathlib import Path

# The harness lives in the repository's top-level ``integration`` package, which is not part
# of the installed distribution: make the checkout importable for plain ``pytest`` runs too.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from integration.pytest_plugin import cassandra, gcs, kafka, s3  # noqa: E402

__all__ = ["cassandra", "gcs", "kafka", "s3"]
