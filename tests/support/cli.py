"""Run the ``liveagg`` command as a user would: a subprocess of this interpreter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]


def command(*args: str) -> list[str]:
    """The argv of ``liveagg ARGS``, run with this interpreter."""
    return [sys.executable, "-m", "liveagg.cli", *args]


def liveagg(
    *args: str,
    ok: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """``liveagg ARGS`` from the repository root; with ``ok``, assert it exits 0.

    ``env`` replaces the environment (service addresses, say); default: this process's.
    ``prefix`` runs the command through another (``setpriv ...``, say).
    """
    result = subprocess.run(
        [*prefix, *command(*args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=timeout,
        env=None if env is None else dict(env),
    )
    if ok:
        assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def rows_in(folder: Path) -> list[dict[str, Any]]:
    """The JSON Lines rows a run wrote under ``folder`` (``OUT/<view>/``), file by file."""
    return [
        orjson.loads(line)
        for path in sorted(folder.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
