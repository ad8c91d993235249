"""Beam imported without its cloud clients still finds every object-store filesystem.

Each check runs in a fresh interpreter: in this one, Beam is already imported in full.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("boto3")
pytest.importorskip("google.cloud.storage")


def _run(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_clients_load_with_the_first_path_of_their_scheme() -> None:
    out = _run(
        """
        import sys
        from liveagg.beamstart import import_beam
        import_beam()
        print("google.cloud.storage" in sys.modules, "boto3" in sys.modules)
        from apache_beam.io.filesystems import FileSystems
        print(type(FileSystems.get_filesystem("/tmp/x")).__name__)
        for path in ("gs://bucket/a", "s3://bucket/a", "gs://bucket/b", "s3://bucket/b"):
            fs = FileSystems.get_filesystem(path)
            print(type(fs).__module__ + "." + type(fs).__name__)
        print(type(FileSystems.get_filesystem("/tmp/y")).__name__)  # local paths: one class
        import apache_beam.io.gcp.bigquery  # importable again, as in any process
        print("google.cloud.storage" in sys.modules, "boto3" in sys.modules)
        """
    )
    gcs = "apache_beam.io.gcp.gcsfilesystem.GCSFileSystem"
    s3 = "apache_beam.io.aws.s3filesystem.S3FileSystem"
    assert out == [
        *("False", "False", "LocalFileSystem", gcs, s3, gcs, s3, "LocalFileSystem"),
        *("True", "True"),
    ]


def test_a_filesystem_module_imported_by_another_route_keeps_one_class_per_scheme() -> None:
    """liveagg's own S3 filesystem imports Beam's module first: Beam's class serves s3://
    alone, as Beam refuses a scheme that two classes claim."""
    out = _run(
        """
        from liveagg.beamstart import import_beam
        import_beam()
        from liveagg.settings import Connections
        from liveagg.transforms.sinks.objectstores import filesystem
        own = filesystem("s3://bucket/a", Connections(s3_endpoint="http://127.0.0.1:9"))
        from apache_beam.io.filesystems import FileSystems
        print(type(own).__name__, type(FileSystems.get_filesystem("s3://bucket/a")).__name__)
        print(type(FileSystems.get_filesystem("relative/path")).__name__)
        """
    )
    assert out == ["CachedClientS3FileSystem", "S3FileSystem", "LocalFileSystem"]


def test_a_process_that_imported_beam_is_left_as_it_is() -> None:
    out = _run(
        """
        import sys
        import apache_beam
        from liveagg.beamstart import import_beam
        import_beam()
        from apache_beam.io.filesystem import FileSystem
        names = [c.__name__ for c in FileSystem.get_all_subclasses()]
        print(sorted(name for name in names if "Deferred" in name))
        print("google.cloud.storage" in sys.modules)
        """
    )
    assert out == ["[]", "True"]
