"""Beam's S3 and GCS filesystems, configured from a run's :class:`Connections`.

Beam finds a filesystem by the path's scheme and builds it from the pipeline options that
``FileSystems.set_options`` holds: ``Pipeline(options)`` sets them in the launching process
(where the DirectRunner runs bundles) and ``sdk_worker_main`` sets them on portable workers
(Flink, ``--direct_running_mode=multi_processing``). :func:`beam_args` turns the connection
settings into those options, so that every Beam IO of the run (``ReadFromText("s3://...")``
as well as the file sinks) reaches the same endpoint.

The file sinks do not rely on that process-wide setting alone: :func:`filesystem` builds
each sink's filesystem from the sink's own connections, so a sink is correct even in a
process where another pipeline set different options since, and two sinks can use two
endpoints. Two Beam 2.77 behaviours are adjusted on the way:

* its S3 filesystem creates a boto3 client (about 0.25 s) for every file it opens; ours
  keeps one per filesystem;
* its GCS filesystem reaches the GCS emulator only through the ``STORAGE_EMULATOR_HOST``
  environment variable of the worker process and probes Application Default Credentials
  first (with retries when google-auth is installed); ours, used only when
  ``Connections.gcs_endpoint`` is set, talks to that endpoint with anonymous credentials.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from liveagg.transforms.sinks import Connections

#: Installable extra and importable module behind each object-store scheme.
_EXTRAS = {"s3": ("s3", "boto3"), "gs": ("gcs", "google.cloud.storage")}


def beam_args(connections: Connections) -> list[str]:
    """Pipeline options for Beam's S3 filesystem (``S3Options``); unset settings are left out.

    Example::

        PipelineOptions([*user_args, *beam_args(Connections())])

    GCS has no such options: Beam's GCS filesystem reads ``STORAGE_EMULATOR_HOST`` from the
    environment, and the file sinks use ``Connections.gcs_endpoint`` directly.
    """
    settings = (
        ("s3_endpoint_url", connections.s3_endpoint),
        ("s3_access_key_id", connections.s3_access_key_id),
        ("s3_secret_access_key", connections.s3_secret_access_key),
        ("s3_region_name", connections.s3_region),
    )
    return [f"--{name}={value}" for name, value in settings if value]


def require(path: str) -> None:
    """Fail at graph construction, with the install hint, when ``path``'s store is missing."""
    scheme = FileSystems.get_scheme(path)
    if scheme in _EXTRAS:
        extra, module = _EXTRAS[scheme]
        if importlib.util.find_spec(module.split(".")[0]) is None or (
            "." in module and importlib.util.find_spec(module) is None
        ):
            raise ImportError(
                f"writing to {path} needs {module}: pip install 'liveagg[{extra}]'"
            )


def is_object_store(path: str) -> bool:
    """Object stores publish an object whole when its upload completes: no rename needed."""
    return FileSystems.get_scheme(path) in _EXTRAS


def filesystem(path: str, connections: Connections | None) -> FileSystem:
    """The Beam filesystem that serves ``path``.

    Without ``connections`` (or with no setting for the path's store) this is what
    ``FileSystems`` itself would use, built from the options ``FileSystems.set_options``
    holds.
    """
    scheme = FileSystems.get_scheme(path)
    if connections is not None and scheme == "s3" and beam_args(connections):
        return _S3FileSystem(PipelineOptions(beam_args(connections)))
    if connections is not None and scheme == "gs" and connections.gcs_endpoint:
        return _EmulatorGCSFileSystem(
            PipelineOptions([]), connections.gcs_endpoint, connections.gcs_project
        )
    return FileSystems.get_filesystem(path)


# Both subclasses report a scheme of their own: FileSystems picks a filesystem by scheme and
# refuses a scheme that two classes claim, so they must not claim "s3" or "gs". They are
# only ever built by filesystem() above, and their paths still start with s3:// and gs://.


def _s3_filesystem_class() -> type[FileSystem]:
    from apache_beam.io.aws.s3filesystem import S3FileSystem

    return S3FileSystem


def _gcs_filesystem_class() -> type[FileSystem]:
    from apache_beam.io.gcp.gcsfilesystem import GCSFileSystem

    return GCSFileSystem


class _S3FileSystem(_s3_filesystem_class()):  # type: ignore[misc]
    """Beam's S3 filesystem with one client for every file it opens."""

    @classmethod
    def scheme(cls) -> str:
        return "liveagg-s3"

    def __init__(self, pipeline_options: PipelineOptions) -> None:
        super().__init__(pipeline_options)
        self._io: Any = None

    def _path_open(
        self,
        path: str,
        mode: str,
        mime_type: str = "application/octet-stream",
        compression_type: str = CompressionTypes.AUTO,
    ) -> Any:
        from apache_beam.io.aws import s3io
        from apache_beam.io.filesystem import CompressedFile

        if self._io is None:
            self._io = s3io.S3IO(options=self._options)
        compression_type = FileSystem._get_compression_type(path, compression_type)
        mime_type = CompressionTypes.mime_type(compression_type, mime_type)
        raw = self._io.open(path, mode, mime_type=mime_type)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)


class _EmulatorGCSFileSystem(_gcs_filesystem_class()):  # type: ignore[misc]
    """Beam's GCS filesystem against an explicit endpoint (the emulator), anonymously."""

    @classmethod
    def scheme(cls) -> str:
        return "liveagg-gs-emulator"

    def __init__(self, pipeline_options: PipelineOptions, endpoint: str, project: str | None):
        super().__init__(pipeline_options)
        self._endpoint = endpoint
        self._project = project
        self._io: Any = None

    def _gcsIO(self) -> Any:  # noqa: N802 - the name Beam's GCSFileSystem calls
        if self._io is None:
            from apache_beam.io.gcp import gcsio
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            client = storage.Client(
                project=self._project or "liveagg",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self._endpoint},
            )
            self._io = gcsio.GcsIO(storage_client=client, pipeline_options=self._pipeline_options)
        return self._io
