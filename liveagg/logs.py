"""Where log records go: stderr, and without ``-v`` liveagg's own warnings only. The launching
process and the worker processes of a multi-process direct run log alike."""

from __future__ import annotations

import logging
import sys


class _OwnRecords(logging.Filter):
    """Without ``-v``, only liveagg's own log records reach the terminal: third-party
    warnings (Beam's, its clients', Python warnings) are for those who ask for them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "liveagg" or record.name.startswith("liveagg.")


def configure_logging(verbose: bool) -> None:
    """Log to stderr; without ``verbose``, liveagg's warnings only.

    This must run before Beam is imported. Importing Beam imports
    ``apache_beam/io/gcp/internal/clients/bigquery/__init__.py``, which, when apitools is not
    installed, calls ``logging.warning("apitools not found, ...")`` on the root logger; and
    ``logging.warning`` first calls ``basicConfig()`` when the root logger has no handler
    (Python's ``logging/__init__.py``), which would install a handler of its own that prints
    every later warning. With a handler here first, that record meets the filter instead.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.set_name("liveagg")
    level = logging.INFO if verbose else logging.WARNING
    handler.setLevel(level)  # Beam's SDK harness sets the root logger's level of a worker
    if not verbose:
        handler.addFilter(_OwnRecords())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "liveagg"]:  # main() called again
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn(...) become "py.warnings" records
