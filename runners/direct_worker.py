"""The worker process of a multi-process direct run (``--direct-num-workers`` other than 1):
Beam's SDK harness, logging as the launching process does (liveagg's own warnings only,
everything with ``--verbose``), where Beam's worker printed its INFO lines to stderr."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from liveagg.logs import configure_logging

VERBOSE_FLAG = "--verbose"


def _leave(signum: int, frame: Any) -> None:
    """Ctrl-C reaches the whole process group: the launching process reports it and
    removes the run's partial files; a worker has nothing to tidy and nothing to say."""
    os._exit(128 + signum)


def main(argv: list[str]) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _leave)
    configure_logging(VERBOSE_FLAG in argv[1:])  # before the harness imports Beam
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(argv)


if __name__ == "__main__":
    main(sys.argv)
