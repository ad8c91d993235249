"""Google Cloud Storage on 127.0.0.1 through the ``gcp-storage-emulator`` package."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from typing import Any

from ._core import HOST, PrerequisiteError, Service, ServiceError, http_get


@dataclass(frozen=True)
class GcsConnection:
    """The emulator's address; clients use anonymous credentials and any project id."""

    emulator_host: str
    project: str = "liveagg-test"

    def client_kwargs(self) -> dict[str, Any]:
        """Arguments for ``google.cloud.storage.Client`` that reach the emulator.

        Passing the endpoint (rather than relying on ``STORAGE_EMULATOR_HOST``) keeps a test
        from changing the process environment.
        """
        from google.auth.credentials import AnonymousCredentials

        return {
            "project": self.project,
            "credentials": AnonymousCredentials(),
            "client_options": {"api_endpoint": self.emulator_host},
        }

    def env(self) -> dict[str, str]:
        """Environment variables that point google-cloud-storage (and Beam's gcsio) here."""
        return {"STORAGE_EMULATOR_HOST": self.emulator_host, "GOOGLE_CLOUD_PROJECT": self.project}


class Gcs(Service):
    """``python -m gcp_storage_emulator start --in-memory``: nothing is kept after a stop."""

    name = "gcs"
    port_settings = (("http", "LIVEAGG_GCS_PORT", 19023),)
    default_start_timeout_s = 30.0
    stop_timeout_s = 10.0

    def connection(self) -> GcsConnection:
        return GcsConnection(emulator_host=f"http://{HOST}:{self.client_port}")

    def check_prerequisites(self) -> None:
        if importlib.util.find_spec("gcp_storage_emulator") is None:
            raise PrerequisiteError(
                "the gcs service needs gcp-storage-emulator: pip install gcp-storage-emulator"
            )

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            HOST,
            "--port",
            str(self.client_port),
            "--in-memory",
        ]

    def health(self) -> str:
        """The JSON API's bucket list, as google-cloud-storage would call it."""
        conn = self.connection()
        url = f"{conn.emulator_host}/storage/v1/b?project={conn.project}"
        body = json.loads(http_get(url))
        if body.get("kind") != "storage#buckets":
            raise ServiceError(f"GET {url} did not answer a GCS bucket list: {body!r:.200}")
        return f"GCS JSON API answers ({len(body.get('items', []))} bucket(s))"
