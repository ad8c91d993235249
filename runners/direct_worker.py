"""The worker process of a multi-process direct run (``--direct-num-workers`` other than 1):
Beam's SDK harness, logging as the launching process does (liveagg's own warnings only,
everything with ``--verbose``), where Beam's worker printed its INFO lines to stderr."""

from __future__ import annotations

import sys

from liveagg.logs import configure_logging

VERBOSE_FLAG = "--verbose"


def main(argv: list[str]) -> None:
    configure_logging(VERBOSE_FLAG in argv[1:])  # before the harness imports Beam
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(argv)


if __name__ == "__main__":
    main(sys.argv)
