"""The file sinks against a real S3 server (moto) and the GCS emulator.

Rows of a real view go through the ``s3`` and ``gcs`` sinks and are read back with boto3 and
google-cloud-storage, every row compared; Parquet is read with pyarrow from the downloaded
bytes. See tests/transforms/test_file_sink.py for the view and the readers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from integration.services import GcsConnection, S3Connection
from liveagg.errors import PathError
from liveagg.spec import Sink
from liveagg.transforms.sinks import Connections, build_sink, objectstores
from liveagg.transforms.sinks.files import (
    FORMATS,
    OutputFolder,
    WriteDeadLetters,
    WriteViewFiles,
    view_columns,
)
from liveagg.transforms.sinks.objectstores import beam_args
from tests.transforms.test_file_sink import VIEW, aggregate, assert_same_rows, messages, read_rows

pytestmark = pytest.mark.integration

WINDOW_FILE = re.compile(r"^\d{8}T\d{6}Z_\d{8}T\d{6}Z\.(\w+)$")
PART_FILE = re.compile(r"^\d{8}T\d{6}Z_\d{8}T\d{6}Z-[0-9a-f]{32}\.(\w+)$")

#: Downloads every object under a prefix: ``{key relative to the prefix: bytes}``.
Download = Callable[[str], dict[str, bytes]]


def _bucket() -> str:
    """A fresh bucket name, so that a reused service holds nothing from an earlier run."""
    return f"liveagg-it-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return aggregate(VIEW, messages(), tmp_path_factory.mktemp("reference"))


def s3_connections(s3: S3Connection) -> Connections:
    return Connections(
        s3_endpoint=s3.endpoint_url,
        s3_access_key_id=s3.access_key_id,
        s3_secret_access_key=s3.secret_access_key,
        s3_region=s3.region,
    )


@pytest.fixture
def s3_bucket(s3: S3Connection) -> tuple[str, Download]:
    boto3 = pytest.importorskip("boto3")
    client = boto3.client("s3", **s3.boto3_kwargs())
    bucket = _bucket()
    client.create_bucket(Bucket=bucket)

    def download(prefix: str) -> dict[str, bytes]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {
            o["Key"][len(prefix) :]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            for o in listed
        }

    return bucket, download


@pytest.fixture
def gcs_bucket(gcs: GcsConnection) -> tuple[str, Download]:
    storage = pytest.importorskip("google.cloud.storage")
    client = storage.Client(**gcs.client_kwargs())
    bucket = _bucket()
    client.create_bucket(bucket)

    def download(prefix: str) -> dict[str, bytes]:
        return {
            b.name[len(prefix) :]: b.download_as_bytes()
            for b in client.list_blobs(bucket, prefix=prefix)
        }

    return bucket, download


def run(
    rows: list[dict[str, Any]], sink: Any, *, bounded: bool, args: tuple[str, ...] = ()
) -> None:
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", *args])) as p:
        sink(p | beam.Create(rows, reshuffle=False), bounded)


def check_files(
    files: dict[str, bytes], rows: list[dict[str, Any]], fmt: str, bounded: bool
) -> None:
    """Names follow the layout, no temporary object is left, every row is there once."""
    pattern = WINDOW_FILE if bounded else PART_FILE
    assert files, "no objects written"
    for name in files:
        match = pattern.match(name)
        assert match and match[1] == fmt, name
    if bounded:
        windows = {(r["window_start"], r["window_end"]) for r in rows}
        assert len(files) == len(windows)
    columns = view_columns(VIEW)
    got = [r for data in files.values() for r in read_rows(data, fmt, columns)]
    assert_same_rows(got, rows, fmt, columns)


@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "unbounded"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_sink(
    s3: S3Connection,
    s3_bucket: tuple[str, Download],
    rows: list[dict[str, Any]],
    fmt: str,
    bounded: bool,
) -> None:
    bucket, download = s3_bucket
    spec = Sink("s3", {"path": f"s3://{bucket}/views", "format": fmt})
    sink = build_sink(spec, s3_connections(s3))
    run(rows, lambda pcoll, b: sink.write(pcoll, VIEW, bounded=b), bounded=bounded)
    check_files(download("views/traffic/"), rows, fmt, bounded)


@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "unbounded"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_gcs_sink(
    gcs: GcsConnection,
    gcs_bucket: tuple[str, Download],
    rows: list[dict[str, Any]],
    fmt: str,
    bounded: bool,
) -> None:
    bucket, download = gcs_bucket
    spec = Sink("gcs", {"path": f"gs://{bucket}/views", "format": fmt})
    sink = build_sink(spec, Connections(gcs_endpoint=gcs.emulator_host, gcs_project=gcs.project))
    run(rows, lambda pcoll, b: sink.write(pcoll, VIEW, bounded=b), bounded=bounded)
    check_files(download("views/traffic/"), rows, fmt, bounded)


def test_file_sink_takes_object_store_paths(
    s3: S3Connection, s3_bucket: tuple[str, Download], rows: list[dict[str, Any]]
) -> None:
    bucket, download = s3_bucket
    spec = Sink("file", {"path": f"s3://{bucket}/any/depth/", "format": "parquet"})
    sink = build_sink(spec, s3_connections(s3))
    run(rows, lambda pcoll, b: sink.write(pcoll, VIEW, bounded=b), bounded=True)
    check_files(download("any/depth/traffic/"), rows, "parquet", bounded=True)


def test_s3_through_pipeline_options(
    s3: S3Connection,
    s3_bucket: tuple[str, Download],
    rows: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No connections on the transform: Beam's FileSystems takes the endpoint from the run's
    options and the credentials from boto3's chain (the environment), never from options."""
    bucket, download = s3_bucket
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, s3.env()[name])
    args = tuple(beam_args(s3_connections(s3), [f"s3://{bucket}/plain"]))
    assert f"--s3_endpoint_url={s3.endpoint_url}" in args
    assert not any(s3.secret_access_key in a or "access_key" in a for a in args)

    def write(pcoll: beam.PCollection, bounded: bool) -> None:
        _ = pcoll | WriteViewFiles(f"s3://{bucket}/plain", "traffic", session=False)
        letters = pcoll.pipeline | "DeadLetters" >> beam.Create(
            [{"view": "traffic", "reason": "too_late", "detail": "", "payload": "{}"}]
        )
        _ = letters | WriteDeadLetters(f"s3://{bucket}/plain", bounded=bounded)

    run(rows, write, bounded=True, args=args)
    check_files(download("plain/traffic/"), rows, "jsonl", bounded=True)
    assert list(download("plain/_dead_letter/")) == ["traffic.jsonl"]


def test_gcs_through_the_emulator_variable(
    gcs: GcsConnection,
    gcs_bucket: tuple[str, Download],
    rows: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beam's own GCS filesystem reaches the emulator through ``STORAGE_EMULATOR_HOST``."""
    bucket, download = gcs_bucket
    for name, value in gcs.env().items():
        monkeypatch.setenv(name, value)

    def write(pcoll: beam.PCollection, bounded: bool) -> None:
        _ = pcoll | WriteViewFiles(f"gs://{bucket}/plain", "traffic", session=False)

    run(rows, write, bounded=True)
    check_files(download("plain/traffic/"), rows, "jsonl", bounded=True)


def test_unbounded_dead_letters_on_gcs(
    gcs: GcsConnection, gcs_bucket: tuple[str, Download]
) -> None:
    bucket, download = gcs_bucket
    connections = Connections(gcs_endpoint=gcs.emulator_host, gcs_project=gcs.project)
    letter = {"view": None, "reason": "not_json", "detail": "", "payload": "{", "source": None}

    def write(pcoll: beam.PCollection, bounded: bool) -> None:
        _ = pcoll | WriteDeadLetters(f"gs://{bucket}/out", bounded=bounded, connections=connections)

    run([letter], write, bounded=False)
    (name,) = download("out/_dead_letter/")
    assert re.fullmatch(r"input-[0-9a-f]{32}\.jsonl", name)
    assert read_rows(download("out/_dead_letter/")[name], "jsonl", ()) == [letter]


# --- the output folder of a run -------------------------------------------------------------


@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_output_folder_on_an_object_store(
    store: str,
    s3: S3Connection,
    gcs: GcsConnection,
    s3_bucket: tuple[str, Download],
    gcs_bucket: tuple[str, Download],
) -> None:
    """A bounded run's folder: checked by writing, its own files replaced, _SUCCESS last."""
    if store == "s3":
        (bucket, download), scheme, connections = s3_bucket, "s3", s3_connections(s3)
    else:
        (bucket, download), scheme = gcs_bucket, "gs"
        connections = Connections(gcs_endpoint=gcs.emulator_host, gcs_project=gcs.project)
    root = f"{scheme}://{bucket}/out"
    fs = objectstores.filesystem(root, connections)
    previous = ["_SUCCESS", "traffic/a.jsonl", "traffic/notes.txt", "other/b.jsonl"]
    previous += ["_dead_letter/input.jsonl"]
    for name in previous:
        with fs.create(f"{root}/{name}") as handle:
            handle.write(b"{}\n")

    folder = OutputFolder(root, {"traffic"}, dead_letters=True, connections=connections)
    folder.prepare(replace=True)
    # Only liveagg's files of the folders this run writes are gone; the write check left none.
    assert sorted(download("out/")) == ["other/b.jsonl", "traffic/notes.txt"]
    folder.finish()
    assert download("out/")["_SUCCESS"] == b""


@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_an_object_store_output_that_cannot_be_written_fails_first(
    store: str, s3: S3Connection, gcs: GcsConnection
) -> None:
    if store == "s3":
        scheme, connections = "s3", s3_connections(s3)
    else:
        scheme = "gs"
        connections = Connections(gcs_endpoint=gcs.emulator_host, gcs_project=gcs.project)
    root = f"{scheme}://{_bucket()}/out"  # a bucket that does not exist
    folder = OutputFolder(root, {"traffic"}, connections=connections)
    with pytest.raises(PathError, match=f"^{re.escape(root)}: cannot be written: "):
        folder.prepare(replace=True)
