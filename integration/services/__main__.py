"""Command line: ``python -m integration.services start|stop|status|logs|env [names...]``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence

from . import NAMES, PrerequisiteError, ServiceError, describe, ensure, get, status, stop
from ._core import tail


def _parser() -> argparse.ArgumentParser:
    ports = ", ".join(
        f"{var} ({default})" for name in NAMES for _, var, default in get(name).port_settings
    )
    parser = argparse.ArgumentParser(
        prog="python -m integration.services",
        description=(
            "Run liveagg's integration services on 127.0.0.1 "
            f"({', '.join(NAMES)}); no name means all of them."
        ),
        epilog=(
            f"Ports (default): {ports}. Caches, pid files and logs: LIVEAGG_CACHE_DIR "
            "(<repo>/.cache). More in integration/README.md."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command, help_text in [
        ("start", "start (or reuse a healthy one already on the port) and wait until healthy"),
        ("stop", "stop what the harness started (SIGTERM, then SIGKILL after a timeout)"),
        ("status", "say for each service: running (pid, ports, memory) or stopped"),
        ("logs", "print the end of each service's log"),
        ("env", "print 'export VAR=value' lines that point liveagg at the services"),
    ]:
        sub = commands.add_parser(command, help=help_text, description=help_text)
        sub.add_argument("names", nargs="*", metavar="name", help=f"any of: {' '.join(NAMES)}")
        if command == "logs":
            sub.add_argument("-n", "--lines", type=int, default=50, help="lines per log (50)")
    return parser


def _start(names: Sequence[str]) -> int:
    failed = 0
    for name in names:
        t0 = time.monotonic()
        try:
            handle = ensure(name)
        except PrerequisiteError as e:
            print(f"{name:<10} missing prerequisite: {e}", file=sys.stderr)
            failed += 1
            continue
        except ServiceError as e:
            print(f"{name:<10} FAILED: {e}", file=sys.stderr)
            failed += 1
            continue
        if handle.started_here:
            how = f"started in {time.monotonic() - t0:.1f} s, pid {handle.pid}"
        elif handle.pid is not None:
            how = f"already running, pid {handle.pid}"
        else:
            how = "reused a healthy service the harness did not start"
        print(f"{name:<10} {how}  {describe(handle.connection)}", flush=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        known = ", ".join(NAMES)
        print(f"unknown service(s) {', '.join(unknown)}; known: {known}", file=sys.stderr)
        return 2
    names = list(dict.fromkeys(args.names)) or list(NAMES)
    if args.command == "start":
        return _start(names)
    if args.command == "env":  # eval "$(python -m integration.services env flink)"
        for name in names:
            env = getattr(get(name).connection(), "env", None)
            for var, value in (env() if env else {}).items():
                print(f"export {var}={shlex.quote(str(value))}")
        return 0
    if args.command == "stop":
        for name in reversed(names):
            print(f"{name:<10} {stop(name)}", flush=True)
        return 0
    if args.command == "status":
        for name in names:
            print(f"{name:<10} {status(name)}", flush=True)
        return 0
    for name in names:
        for process, log in get(name).log_files().items():
            print(f"==> {process}: {log} <==")
            print(tail(log, args.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
