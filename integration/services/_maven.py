"""Jars from Maven Central, copied once into the cache.

The Apache download mirrors are not reachable from every machine that runs the tests, while
Maven Central is; so the brokers run from their published jars instead of a release tarball.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

from ._core import REPO_ROOT, PrerequisiteError, ServiceError, cache_dir, tail

MARKER = ".complete"
"""Written after a successful copy; holds the pom's hash so a version bump resolves again."""


def pom_path(name: str) -> Path:
    return REPO_ROOT / "integration" / "java" / name / "pom.xml"


def jar_dir(name: str) -> Path:
    return cache_dir() / name / "jars"


def _pom_hash(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def jars_ready(name: str) -> bool:
    """True when the jar folder was filled from the current pom."""
    marker = jar_dir(name) / MARKER
    try:
        return marker.read_text().strip() == _pom_hash(pom_path(name))
    except OSError:
        return False


def resolve_jars(name: str, log_file: Path) -> Path:
    """Copy the runtime dependencies of ``integration/java/<name>/pom.xml`` into the cache.

    Skips Maven entirely when the folder is complete. Maven's own local repository lives in
    the cache too (``.cache/maven-repo``), so a second copy after deleting the jar folder works
    offline.

    Returns:
        The folder holding the jars (use ``<folder>/*`` as the class path).
    """
    target = jar_dir(name)
    if jars_ready(name):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteError(
            f"mvn not found: {name} jars come from Maven Central (apt-get install maven)"
        )
    pom = pom_path(name)
    staging = target.with_name("jars.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "--no-transfer-progress",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        f"-Dmaven.repo.local={cache_dir() / 'maven-repo'}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
    ]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log_file.open("ab") as log:
        log.write(f"--- resolving {name} jars: {' '.join(cmd)}\n".encode())
        log.flush()
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0 or not any(staging.glob("*.jar")):
        raise ServiceError(
            f"Maven could not resolve the {name} jars from {pom} (exit {result.returncode}); "
            f"last lines of {log_file}:\n{tail(log_file)}"
        )
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    (target / MARKER).write_text(_pom_hash(pom) + "\n")
    with log_file.open("a") as log:
        log.write(f"--- {name} jars ready in {time.monotonic() - t0:.1f} s: {target}\n")
    return target
