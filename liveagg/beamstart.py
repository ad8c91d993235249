"""Importing Beam in the launching process without the cloud clients a run does not use.

``import apache_beam`` imports every object-store client that is installed, whether the run
reads or writes a ``gs://`` or ``s3://`` path or not. In Beam 2.77,
``apache_beam/io/__init__.py`` runs, in one ``try ... except ImportError: pass`` block,
``from apache_beam.io.gcp.bigquery import *``, ``from apache_beam.io.gcp.pubsub import *``,
``from apache_beam.io.gcp import gcsio`` and ``from apache_beam.transforms.xlang.io import *``
(google-cloud-storage and the BigQuery client), and ``apache_beam/io/filesystems.py`` runs
``from apache_beam.io.gcp.gcsfilesystem import GCSFileSystem`` and ``from
apache_beam.io.aws.s3filesystem import S3FileSystem``, each under ``except
ModuleNotFoundError: pass``. With liveagg's ``s3`` and ``gcs`` extras installed, that is
about 450 modules and 0.2 CPU-s of every ``liveagg run``.

:func:`import_beam` imports Beam with those three modules marked missing (a ``None`` in
``sys.modules`` makes their import raise ``ModuleNotFoundError``, which both places skip),
then unmarks them, so that anything may import them later. Beam finds a filesystem by
looking through ``FileSystem.get_all_subclasses()`` for the path's scheme
(``FileSystems.get_filesystem``), so the scheme needs a class before its client is loaded:
:class:`_Deferred` claims ``gs`` and ``s3`` until the first such path, then imports Beam's
own filesystem and hands its instance on. It stops claiming the scheme once Beam's module
is imported by any route, since Beam refuses a scheme that two classes claim (and then claims
a name no path has: a scheme of None is that of local paths).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any, NamedTuple

#: Imported by ``import apache_beam`` only for clouds a run may not use.
_DEFERRED_MODULES = (
    "apache_beam.io.gcp.bigquery",
    "apache_beam.io.gcp.gcsfilesystem",
    "apache_beam.io.aws.s3filesystem",
)

#: The deferred classes: Python lists subclasses through weak references, so they are kept here.
_CLASSES: list[type] = []


class CloudStore(NamedTuple):
    """An object store Beam reaches through a client that liveagg installs as an extra."""

    extra: str  #: ``pip install 'liveagg[<extra>]'``
    client: str  #: the module the extra installs
    beam_module: str  #: Beam's module that defines the store's filesystem


#: The object stores by path scheme: the one table of what each needs.
CLOUD_STORES = {
    "gs": CloudStore("gcs", "google.cloud.storage", "apache_beam.io.gcp.gcsfilesystem"),
    "s3": CloudStore("s3", "boto3", "apache_beam.io.aws.s3filesystem"),
}


def import_beam() -> None:
    """Import Beam for a run launched from this process; nothing if Beam is imported."""
    if "apache_beam" in sys.modules:
        return
    marked = [name for name in _DEFERRED_MODULES if name not in sys.modules]
    for name in marked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import apache_beam  # noqa: F401
        from apache_beam.io.filesystem import FileSystem
    finally:
        for name in marked:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
    for scheme, store in CLOUD_STORES.items():
        if store.beam_module not in sys.modules and client_installed(store):
            _CLASSES.append(_deferred_class(FileSystem, scheme, store.beam_module))


def client_installed(store: CloudStore) -> bool:
    """Whether ``store``'s client can be imported, without importing it."""
    try:
        return importlib.util.find_spec(store.client) is not None
    except ModuleNotFoundError:  # its parent package (``google``) is missing
        return False


def _deferred_class(base: type, scheme: str, module: str) -> type:
    """A filesystem class that claims ``scheme`` until Beam's own is imported."""

    class _Deferred(base):  # type: ignore[misc, valid-type]
        @classmethod
        def scheme(cls) -> str:
            # Once Beam's module is in, a name no path has: not None, which is the scheme of
            # a local path (``LocalFileSystem.scheme()``), so local paths would find two.
            loaded = sys.modules.get(module) is not None
            return f"liveagg-deferred-{scheme}" if loaded else scheme

        def __new__(cls, pipeline_options: Any = None) -> Any:
            importlib.import_module(module)
            own = [fs for fs in base.get_all_subclasses() if fs.scheme() == scheme]
            if len(own) != 1:
                raise ValueError(f"{len(own)} filesystems claim {scheme}:// after {module}")
            return own[0](pipeline_options=pipeline_options)

    _Deferred.__name__ = _Deferred.__qualname__ = f"Deferred{scheme.upper()}FileSystem"
    return _Deferred
