"""Prism, Beam's Go runner, built from the Go module proxy for the installed Beam SDK.

Prism is one static binary, not a service: ``PrismRunner`` starts it as its job server for each
pipeline. Beam's Python SDK downloads the binary of its own version from GitHub's release page
(``apache_beam/runners/portability/prism_runner.py``, ``_construct_download_url``); where
GitHub is out of reach that download fails, and the DirectRunner falls back to its Python
engine. Here the binary is built instead, with the Go toolchain, from the same release's Go
module (``github.com/apache/beam/sdks/v2`` at ``v<SDK version>``), into the git-ignored cache:

    .cache/prism/v2.77.0/prism     the binary, passed as --prism-location / --prism_location
    .cache/prism/build.log         the go install output of each build

GOPATH, GOMODCACHE and GOCACHE point into ``.cache/prism/go`` during the build and are
removed after a successful one (about 1.3 GB of sources and objects that only a rebuild would
use), so a warm cache holds just the binary.

``python -m integration.services.prism`` builds it if missing and prints its path.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ._core import PrerequisiteError, ServiceError, cache_dir, file_lock, tail

PACKAGE = "github.com/apache/beam/sdks/v2/go/cmd/prism"
MIN_GO = (1, 21)
"""The oldest Go that fetches the toolchain a module asks for (Beam 2.77 wants 1.26) by itself
through the module proxy (``GOTOOLCHAIN=auto``, Go's default since 1.21)."""
BUILD_TIMEOUT_S = 1800.0  # ~3.5 min on 2 cores with an empty module and build cache


def beam_version() -> str:
    """The installed Beam SDK's version: Prism must speak its protocol and know its URNs.

    Read from the distribution's metadata (the same string as ``apache_beam.version``), so that
    a warm cache answers without importing Beam, which takes seconds and logs a warning."""
    return importlib.metadata.version("apache-beam")


def root() -> Path:
    return cache_dir() / "prism"


def binary_path(version: str | None = None) -> Path:
    """Where the Prism binary of Beam ``version`` (default: the installed SDK's) is kept."""
    return root() / f"v{version or beam_version()}" / "prism"


def go_executable() -> str:
    """``go`` on the PATH, at least :data:`MIN_GO`; otherwise how to get one."""
    go = shutil.which("go")
    hint = (
        "Prism (--runner prism) is built with `go install` from the Go module proxy; install "
        f"Go {MIN_GO[0]}.{MIN_GO[1]} or newer (https://go.dev/doc/install, or your system's "
        "golang package), or give liveagg a Prism binary with --prism-location, or run where "
        "Beam can download its own from GitHub"
    )
    if go is None:
        raise PrerequisiteError(f"go not found on the PATH: {hint}")
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"go(\d+)\.(\d+)", out)
    if not match or (int(match.group(1)), int(match.group(2))) < MIN_GO:
        raise PrerequisiteError(f"{go} is {out.strip() or 'unknown'}: {hint}")
    return go


def _build_env(work: Path, gobin: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOBIN=str(gobin),
        GOPATH=str(work),
        GOMODCACHE=str(work / "pkg" / "mod"),
        GOCACHE=str(work / "cache"),
        # Writable module files, so the work folder can be removed after the build.
        GOFLAGS="-modcacherw",
        # A static binary: runs on any Linux of the architecture, whatever its libc.
        CGO_ENABLED="0",
    )
    env.pop("GOENV", None)
    return env


def ensure_binary(version: str | None = None) -> Path:
    """The Prism binary of Beam ``version``, built once into the cache and reused after.

    Safe to call from several processes at once: the build holds a file lock.

    Raises:
        PrerequisiteError: no Go, or one too old to build it.
        ServiceError: the build failed (the message ends with its output).
    """
    version = version or beam_version()
    target = binary_path(version)
    if _usable(target):
        return target
    with file_lock(root() / ".lock"):
        if _usable(target):  # another process built it while this one waited
            return target
        go = go_executable()
        work, staging = root() / "go", target.parent.with_name(f"{target.parent.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        log_file = root() / "build.log"
        cmd = [go, "install", f"{PACKAGE}@v{version}"]
        print(f"building Prism v{version}: {' '.join(cmd)} (a few minutes)", file=sys.stderr)
        t0 = time.monotonic()
        with log_file.open("ab") as log:
            log.write(f"--- {' '.join(cmd)}\n".encode())
            log.flush()
            try:
                result = subprocess.run(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_build_env(work, staging),
                    cwd=root(),  # outside any Go module: @version installs that release
                    timeout=BUILD_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ServiceError(
                    f"building Prism took more than {BUILD_TIMEOUT_S:.0f} s; last lines of "
                    f"{log_file}:\n{tail(log_file)}"
                ) from None
        if result.returncode != 0 or not (staging / "prism").is_file():
            raise ServiceError(
                f"`{' '.join(cmd)}` failed (exit {result.returncode}); last lines of "
                f"{log_file}:\n{tail(log_file)}"
            )
        shutil.rmtree(target.parent, ignore_errors=True)
        staging.replace(target.parent)
        shutil.rmtree(work, ignore_errors=True)
        elapsed = time.monotonic() - t0
        with log_file.open("a") as log:
            log.write(f"--- Prism v{version} built in {elapsed:.0f} s: {target}\n")
        print(f"Prism v{version} built in {elapsed:.0f} s: {target}", file=sys.stderr)
    return target


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def main() -> int:
    """Build Prism if missing; print its path (for ``--prism-location``)."""
    try:
        print(ensure_binary())
    except ServiceError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
