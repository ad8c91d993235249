"""Beam's S3 and GCS filesystems, configured from a run's :class:`Connections`.

Beam finds a filesystem by the path's scheme and builds it from the pipeline options that
``FileSystems.set_options`` holds: ``Pipeline(options)`` sets them in the launching process
(where the DirectRunner runs bundles) and ``sdk_worker_main`` sets them on portable workers
(Flink, ``--direct_running_mode=multi_processing``). :func:`beam_args` turns the connection
settings into those options, so that every Beam IO of the run (``ReadFromText("s3://...")``
as well as the file sinks) reaches the same endpoint. It gives the endpoint and region only,
and only to a run that uses an ``s3://`` path: never the credentials. Beam's S3 client passes
unset credentials on to boto3 (``apache_beam/io/aws/clients/s3/boto3_client.py``, the
``session.client(...)`` call with ``aws_access_key_id=access_key_id``), whose default chain
reads ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` from the worker's environment,
``~/.aws`` or an instance role; while pipeline options are shown by Flink's REST API
(``/jobs/<id>/config``) and logged by an SDK worker that ``sdk_worker_main`` starts
(``'Pipeline_options: %s'``).

The file sinks do not rely on that process-wide setting alone: :func:`filesystem` builds
each sink's filesystem from the sink's own connections (over the run's other ``--s3_*``
flags), so a sink is right even in a process where a later pipeline set other options, and
two sinks can use two endpoints. Two Beam 2.77 behaviours are adjusted on the way:

* its S3 filesystem creates a boto3 client (about 0.25 s) for every file it opens; ours
  keeps one per filesystem;
* its GCS filesystem reaches an emulator only through the ``STORAGE_EMULATOR_HOST``
  variable of the worker process, and first looks for Application Default Credentials
  (retrying for about 30 s when Beam's ``gcp`` extra is installed and there are none);
  ours, used only when ``Connections.gcs_endpoint`` is set, talks to that endpoint with
  anonymous credentials.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from apache_beam.io.filesystem import CompressedFile, CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from liveagg.beamstart import CLOUD_STORES, client_installed
from liveagg.settings import Connections, reveal


def _s3_settings(connections: Connections) -> dict[str, str]:
    settings = {
        "s3_endpoint_url": connections.s3_endpoint,
        "s3_access_key_id": connections.s3_access_key_id,
        "s3_secret_access_key": reveal(connections.s3_secret_access_key),
        "s3_region_name": connections.s3_region,
    }
    return {name: value for name, value in settings.items() if value}


#: The ``S3Options`` that :func:`beam_args` may set: where S3 is, never who we are.
_S3_PLACE = ("s3_endpoint_url", "s3_region_name")


def beam_args(connections: Connections, paths: Iterable[str]) -> list[str]:
    """Pipeline options for Beam's S3 filesystem (``S3Options``) when one of ``paths`` (the
    run's inputs, output and sink paths) is on S3: the endpoint and region, the ones set.

    Example::

        PipelineOptions([*user_args, *beam_args(Connections(), ["s3://bucket/out"])])

    Credentials are left out (see the module docstring). GCS has no such options: Beam's GCS
    filesystem reads ``STORAGE_EMULATOR_HOST`` from the environment, and the file sinks use
    ``Connections.gcs_endpoint`` directly.
    """
    if not any(FileSystems.get_scheme(path) == "s3" for path in paths):
        return []
    settings = _s3_settings(connections)
    return [f"--{name}={settings[name]}" for name in _S3_PLACE if name in settings]


def _s3_options(connections: Connections) -> PipelineOptions:
    """The run's ``S3Options`` (``--s3_verify``, ``--s3_disable_ssl`` ...) under the
    connection settings, so that flags ``Connections`` does not carry still apply."""
    run_options = FileSystems._pipeline_options  # what Beam's own filesystems are built from
    values: dict[str, Any] = {}
    if run_options is not None:
        every = run_options.get_all_options(drop_default=True)
        values = {k: v for k, v in every.items() if k.startswith("s3_")}
    values.update(_s3_settings(connections))
    return PipelineOptions([], **values)


def require(path: str) -> None:
    """Fail at graph construction, with the install hint, when ``path``'s store is missing."""
    store = CLOUD_STORES.get(FileSystems.get_scheme(path))
    if store is not None and not client_installed(store):
        raise ImportError(
            f"writing to {path} needs {store.client}: pip install 'liveagg[{store.extra}]'"
        )


def is_object_store(path: str) -> bool:
    """Object stores publish an object whole when its upload completes: no rename needed."""
    return FileSystems.get_scheme(path) in CLOUD_STORES


def filesystem(path: str, connections: Connections | None) -> FileSystem:
    """The Beam filesystem that serves ``path``.

    Without ``connections`` (or with no setting for the path's store) this is what
    ``FileSystems`` itself would use, built from the options ``FileSystems.set_options``
    holds.
    """
    scheme = FileSystems.get_scheme(path)
    if connections is not None and scheme == "s3" and _s3_settings(connections):
        return _s3_class()(_s3_options(connections))
    if connections is not None and scheme == "gs" and connections.gcs_endpoint:
        return _emulator_gcs_class()(
            PipelineOptions([]), connections.gcs_endpoint, connections.gcs_project
        )
    return FileSystems.get_filesystem(path)


# The classes below are defined on first use, so that this module imports without boto3 or
# google-cloud-storage. Each reports a scheme of its own: FileSystems picks a filesystem by
# scheme and refuses one that two classes claim, so they must not claim "s3" or "gs". Only
# filesystem() builds them; their paths still start with s3:// and gs://.


@functools.cache
def _s3_class() -> type[FileSystem]:
    from apache_beam.io.aws import s3io
    from apache_beam.io.aws.s3filesystem import S3FileSystem

    class CachedClientS3FileSystem(S3FileSystem):
        """Beam's S3 filesystem with one client for every file it opens."""

        @classmethod
        def scheme(cls) -> str:
            return "liveagg-s3"

        def __init__(self, pipeline_options: PipelineOptions) -> None:
            super().__init__(pipeline_options)
            self._io = s3io.S3IO(options=pipeline_options)

        def _path_open(
            self,
            path: str,
            mode: str,
            mime_type: str = "application/octet-stream",
            compression_type: str = CompressionTypes.AUTO,
        ) -> Any:
            compression_type = FileSystem._get_compression_type(path, compression_type)
            mime_type = CompressionTypes.mime_type(compression_type, mime_type)
            raw = self._io.open(path, mode, mime_type=mime_type)
            if compression_type == CompressionTypes.UNCOMPRESSED:
                return raw
            return CompressedFile(raw, compression_type=compression_type)

    return CachedClientS3FileSystem


@functools.cache
def _emulator_gcs_class() -> type[FileSystem]:
    from apache_beam.io.gcp import gcsio
    from apache_beam.io.gcp.gcsfilesystem import GCSFileSystem
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    class EndpointGCSFileSystem(GCSFileSystem):
        """Beam's GCS filesystem against an explicit endpoint (the emulator), anonymously."""

        @classmethod
        def scheme(cls) -> str:
            return "liveagg-gs-endpoint"

        def __init__(
            self, pipeline_options: PipelineOptions, endpoint: str, project: str | None
        ) -> None:
            super().__init__(pipeline_options)
            client = storage.Client(
                project=project or "liveagg",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": endpoint},
            )
            self._io = gcsio.GcsIO(storage_client=client, pipeline_options=pipeline_options)

        def _gcsIO(self) -> Any:  # the name GCSFileSystem calls
            return self._io

    return EndpointGCSFileSystem


def write_empty(path: str, connections: Connections | None) -> None:
    """Write an empty file (``_SUCCESS``, say) through the filesystem that serves ``path``.

    Beam's S3 filesystem cannot: it writes every file as a multipart upload, and one with no
    part is refused (``S3Uploader.finish`` in ``apache_beam/io/aws/s3io.py``: "writes with
    zero length ... will fail"). On S3 the object is put with boto3 instead, built from the
    same settings as the sinks' filesystem.
    """
    if FileSystems.get_scheme(path) != "s3":
        with filesystem(path, connections).create(path) as handle:
            handle.write(b"")
        return
    from apache_beam.io.aws import s3io
    from apache_beam.io.aws.clients.s3 import boto3_client

    bucket, key = s3io.parse_s3_path(path)
    client = boto3_client.Client(_s3_options(connections or Connections())).client
    client.put_object(Bucket=bucket, Key=key, Body=b"")
