"""The S3 backend of `myapp.core.storage` (AWS S3, MinIO and other S3-compatible services).

Writes stream as a multipart upload: parts of `S3_PART_BYTES` (at least 5 MiB, S3's minimum
for every part but the last) are sent as they fill, so a writer holds one part in memory
whatever the blob's size; a blob smaller than one part is a single `PutObject`. An aborted
writer aborts its multipart upload, so no part is left billed or visible. Server-side
encryption (`S3_SSE`: `AES256` or `aws:kms` with `S3_SSE_KMS_KEY_ID`) applies to every write.
Credentials come from `S3_ACCESS_KEY_ID`/`S3_SECRET_ACCESS_KEY` when set, else from boto3's
usual chain (environment, instance or pod role).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from myapp.core.blobs import BlobWriter, StorageError, StoredBlob
from myapp.settings import Settings


@contextlib.contextmanager
def _failures_as_storage_error(action: str) -> Iterator[None]:
    """boto3's errors become `StorageError` (503 in requests, retried in tasks), naming
    the action and the error type only (messages may hold bucket names and keys)."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise StorageError(f"S3 {action} failed: {type(error).__name__}") from None


class _S3Writer:
    def __init__(self, store: S3Storage, key: str, content_type: str) -> None:
        self._store, self._key, self._content_type = store, key, content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= self._store.part_bytes:
            self._send_part()

    def _send_part(self) -> None:
        store = self._store
        with _failures_as_storage_error("upload"):
            if self._upload_id is None:
                started = store.client.create_multipart_upload(
                    **store.object_args(self._key),
                    ContentType=self._content_type,
                    **store.encryption,
                )
                self._upload_id = started["UploadId"]
            number = len(self._parts) + 1
            sent = store.client.upload_part(
                **store.object_args(self._key),
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(self._buffer),
            )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        self._buffer.clear()

    def commit(self) -> None:
        store = self._store
        with _failures_as_storage_error("upload"):
            if self._upload_id is None:
                store.client.put_object(
                    **store.object_args(self._key),
                    Body=bytes(self._buffer),
                    ContentType=self._content_type,
                    **store.encryption,
                )
                self._buffer.clear()
                return
            if self._buffer:
                self._send_part()
            store.client.complete_multipart_upload(
                **store.object_args(self._key),
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )

    def abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        # If this fails too, the bucket's lifecycle rule for incomplete uploads is the backstop.
        with contextlib.suppress(BotoCoreError, ClientError):
            self._store.client.abort_multipart_upload(
                **self._store.object_args(self._key), UploadId=upload_id
            )


class S3Storage:
    """Blobs as objects under `prefix` in `bucket`."""

    name = "s3"

    def __init__(  # noqa: PLR0913 - the settings of one bucket
        self,
        client: Any,
        *,
        bucket: str,
        prefix: str,
        part_bytes: int,
        chunk_bytes: int,
        encryption: dict[str, str],
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_bytes = part_bytes
        self.chunk_bytes = chunk_bytes
        self.encryption = encryption

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        """A client for the configured bucket (no request is made yet)."""
        credentials: dict[str, str] = {}
        if settings.s3_access_key_id and settings.s3_secret_access_key:
            credentials = {
                "aws_access_key_id": settings.s3_access_key_id,
                "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
            }
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=Config(
                connect_timeout=5,
                read_timeout=30,
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=50,
                s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            ),
            **credentials,
        )
        encryption: dict[str, str] = {}
        if settings.s3_sse:
            encryption["ServerSideEncryption"] = settings.s3_sse
            if settings.s3_sse == "aws:kms" and settings.s3_sse_kms_key_id:
                encryption["SSEKMSKeyId"] = settings.s3_sse_kms_key_id
        return cls(
            client,
            bucket=settings.s3_bucket or "",
            prefix=settings.s3_prefix,
            part_bytes=settings.s3_part_bytes,
            chunk_bytes=settings.files_chunk_bytes,
            encryption=encryption,
        )

    def object_args(self, key: str) -> dict[str, str]:
        """`Bucket` and `Key` of the blob `key`."""
        return {"Bucket": self.bucket, "Key": self.prefix + key}

    def writer(self, key: str, *, content_type: str) -> BlobWriter:
        """A writer for a new blob under `key`."""
        return _S3Writer(self, key, content_type)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `start..end` (inclusive), opened now, read lazily."""
        wanted = f"bytes={start}-{'' if end is None else end}"
        with _failures_as_storage_error("read"):
            answer = self.client.get_object(**self.object_args(key), Range=wanted)
        return self._chunks(answer["Body"])

    def _chunks(self, body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(self.chunk_bytes)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        """Remove the blob; a missing one is fine."""
        with _failures_as_storage_error("delete"):
            self.client.delete_object(**self.object_args(key))

    def list_blobs(self) -> Iterator[StoredBlob]:
        """Every committed blob."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        with _failures_as_storage_error("list"):
            for page in pages:
                for item in page.get("Contents", ()):
                    yield StoredBlob(
                        key=item["Key"].removeprefix(self.prefix),
                        size=item["Size"],
                        modified_at=item["LastModified"],
                    )

    def discard_incomplete(self, older_than: datetime) -> int:
        """Abort multipart uploads begun before `older_than` (a killed writer's)."""
        aborted = 0
        with _failures_as_storage_error("list"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"] < older_than:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
        return aborted

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (dev and test servers; prod provisions it)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)
