"""S3 on 127.0.0.1 through moto's standalone server."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from typing import Any

from ._core import HOST, PrerequisiteError, Service, ServiceError, http_get


@dataclass(frozen=True)
class S3Connection:
    """Endpoint and the dummy credentials moto accepts (it checks no signature)."""

    endpoint_url: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    def boto3_kwargs(self) -> dict[str, Any]:
        """Arguments for ``boto3.client("s3", **kwargs)``."""
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "region_name": self.region,
        }

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and Beam's S3 filesystem) here."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }


class S3(Service):
    """``python -m moto.server`` in the same interpreter, so it uses the venv's moto."""

    name = "s3"
    port_settings = (("http", "LIVEAGG_S3_PORT", 19000),)
    default_start_timeout_s = 30.0
    stop_timeout_s = 10.0

    def connection(self) -> S3Connection:
        return S3Connection(endpoint_url=f"http://{HOST}:{self.client_port}")

    def check_prerequisites(self) -> None:
        if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
            raise PrerequisiteError(
                "the s3 service needs moto's server: pip install 'moto[server]'"
            )

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.client_port)]

    def health(self) -> str:
        """An anonymous ListBuckets: moto answers it with the S3 XML document."""
        url = f"{self.connection().endpoint_url}/"
        body = http_get(url).decode("utf-8", errors="replace")
        if "ListAllMyBucketsResult" not in body:
            raise ServiceError(f"GET {url} did not answer an S3 ListBuckets: {body[:200]!r}")
        return "S3 ListBuckets answers"
