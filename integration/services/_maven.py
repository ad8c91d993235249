"""Jars from Maven Central, copied once into the cache.

The Apache download mirrors are not reachable from every machine that runs the tests, while
Maven Central is; so the brokers run from their published jars instead of a release tarball.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

from ._core import REPO_ROOT, PrerequisiteError, ServiceError, cache_dir, tail

MARKER = ".complete"
"""Written after a successful copy; holds the pom's hash so a version bump resolves again."""

CLASSPATH_FILE = "classpath.txt"
"""Maven's class path order of the copied jars (file names, one a line), when asked for."""


def pom_path(name: str) -> Path:
    return REPO_ROOT / "integration" / "java" / name / "pom.xml"


def jar_dir(name: str) -> Path:
    return cache_dir() / name / "jars"


def _pom_hash(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def jars_ready(name: str, target: Path | None = None) -> bool:
    """True when the jar folder (``target``, default ``jar_dir(name)``) matches the pom."""
    marker = (target or jar_dir(name)) / MARKER
    try:
        return marker.read_text().strip() == _pom_hash(pom_path(name))
    except OSError:
        return False


def maven_executable(name: str) -> str:
    """``mvn`` on the PATH, needed until the jars of ``name`` are in the cache."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteError(
            f"mvn not found: {name} jars come from Maven Central (apt-get install maven)"
        )
    return mvn


def resolve_jars(
    name: str, log_file: Path, target: Path | None = None, *, classpath: bool = False
) -> Path:
    """Copy the runtime dependencies of ``integration/java/<name>/pom.xml`` into the cache.

    Skips Maven entirely when the folder is complete. Maven's own local repository lives in
    the cache too (``.cache/maven-repo``), so a second copy after deleting the jar folder works
    offline.

    Args:
        target: the jar folder; ``jar_dir(name)`` by default.
        classpath: also write ``CLASSPATH_FILE``, for a launcher jar whose manifest lists the
            jars in the order Maven would put them on the class path.

    Returns:
        The folder holding the jars (use ``<folder>/*`` as the class path).
    """
    target = target or jar_dir(name)
    if jars_ready(name, target):
        return target
    mvn = maven_executable(name)
    pom = pom_path(name)
    staging = target.with_name(f"{target.name}.partial")
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
    if classpath:
        cmd += ["dependency:build-classpath", f"-Dmdep.outputFile={staging / 'classpath.raw'}"]
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
    if classpath:
        raw = (staging / "classpath.raw").read_text().strip()
        names = [Path(entry).name for entry in raw.split(":") if entry]
        (staging / CLASSPATH_FILE).write_text("".join(f"{n}\n" for n in names))
        (staging / "classpath.raw").unlink()
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.replace(target)
    (target / MARKER).write_text(_pom_hash(pom) + "\n")
    with log_file.open("a") as log:
        log.write(f"--- {name} jars ready in {time.monotonic() - t0:.1f} s: {target}\n")
    return target


def manifest(attributes: dict[str, str]) -> bytes:
    """A JAR manifest: lines of at most 72 bytes, continued after a leading space (JAR spec)."""
    lines = []
    for key, value in attributes.items():
        data = f"{key}: {value}".encode()
        lines.append(data[:72])
        data = data[72:]
        while data:
            lines.append(b" " + data[:71])
            data = data[71:]
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def launcher_jar(
    name: str,
    jar: Path,
    main_class: str,
    log_file: Path,
    extra: dict[str, str] | None = None,
) -> Path:
    """The jars of ``integration/java/<name>/pom.xml`` in ``lib/`` beside ``jar``, and ``jar``
    itself: a manifest alone (``Main-Class``, a relative ``Class-Path`` of ``lib/*.jar`` in
    Maven's order, and ``extra`` attributes), so that ``java -jar`` on it runs ``main_class``.
    """
    lib = resolve_jars(name, log_file, jar.parent / "lib", classpath=True)
    names = (lib / CLASSPATH_FILE).read_text().split()
    content = manifest(
        {
            "Manifest-Version": "1.0",
            "Created-By": "liveagg integration harness",
            "Main-Class": main_class,
            "Class-Path": " ".join(f"{lib.name}/{n}" for n in names),
            **(extra or {}),
        }
    )
    with contextlib.suppress(OSError, KeyError, zipfile.BadZipFile), zipfile.ZipFile(jar) as z:
        if z.read("META-INF/MANIFEST.MF") == content:
            return jar
    partial = jar.with_name(f"{jar.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("META-INF/", b"")
        z.writestr("META-INF/MANIFEST.MF", content)
    partial.replace(jar)
    return jar
