"""A real S3 API server for the run, and an app on each storage backend."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from flask import Flask

from myapp.core.storage import storage
from tests.support.servers import ThrowawayS3

S3_CREDENTIALS = {"s3_access_key_id": "test", "s3_secret_access_key": "test-secret"}
PART_BYTES = 5 * 1024 * 1024  # S3's minimum part size, which the server enforces
#: A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[ThrowawayS3]:
    server = ThrowawayS3(tmp_path_factory.mktemp("s3") / "moto.log").start()
    yield server
    server.stop()


def s3_settings(server: ThrowawayS3, bucket: str) -> dict[str, Any]:
    """Settings of an app whose files go to `bucket` on `server`."""
    return {
        "files_storage": "s3",
        "s3_bucket": bucket,
        "s3_endpoint_url": server.url,
        "s3_prefix": "files/",
        "s3_part_bytes": PART_BYTES,
        **S3_CREDENTIALS,
    }


def s3_client(server: ThrowawayS3) -> Any:
    """A plain boto3 client of the test server (to look at what the app stored)."""
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test-secret",
    )


@pytest.fixture(params=["local", "s3"])
def files_app(request, make_app, tmp_path) -> Flask:
    """The app with its blobs on local disk or in S3 (each test gets an empty store)."""
    if request.param == "local":
        app = make_app(files_storage="local", files_local_dir=str(tmp_path / "files"))
    else:
        server = request.getfixturevalue("s3_server")
        app = make_app(
            **s3_settings(server, f"test-{tmp_path.name[-20:].lower()}".replace("_", "-"))
        )
        with app.app_context():
            storage().ensure_bucket()
    return app


def stored_keys(app: Flask) -> list[str]:
    """Every blob the app's store holds."""
    with app.app_context():
        return sorted(blob.key for blob in storage().list_blobs())


def multipart(
    payload: bytes | Iterator[bytes], filename: str, boundary: str = "test-boundary-1234"
) -> tuple[Callable[[], Iterator[bytes]], str]:
    """A multipart/form-data body with one `file` part (as chunks), and its content type."""

    def chunks() -> Iterator[bytes]:
        yield (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        if isinstance(payload, bytes):
            yield payload
        else:
            yield from payload
        yield f"\r\n--{boundary}--\r\n".encode()

    return chunks, f"multipart/form-data; boundary={boundary}"


class ChunkStream(io.RawIOBase):
    """A readable stream over chunks produced on demand (a body of unknown length)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
