"""Blobs: the storage interface every backend implements, and the local backend.

- `LocalStorage`: files under a directory. A blob is written to a `.part` file and renamed
  into place when complete, so a reader never sees half a blob.
- `myapp.core.s3.S3Storage`: any S3-compatible service (AWS, MinIO, ...) through boto3.

`myapp.core.storage` picks one by settings and gives the app its accessor.

Both stream: a writer takes chunks and holds at most one S3 part in memory; a reader yields
chunks of a byte range. Keys are random (`new_key()`): what a user named a file is metadata
in the database, never part of a path. Deleting a missing blob is not an error.

Under gevent, local file I/O does not yield to the hub: streaming loops over local blobs
call `cooperate()` once per chunk (64 KiB), so a large transfer never holds the worker.
The S3 backend's sockets are patched and yield by themselves.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from myapp.core.concurrency import cooperate

_PART_SUFFIX = ".part"


class StorageError(Exception):
    """The storage backend failed (unreachable, refused, inconsistent)."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob found when listing the store (for the orphan sweep)."""

    key: str
    size: int
    modified_at: datetime


class BlobWriter(Protocol):
    """Streams one new blob; nothing is visible under its key before `commit()`."""

    def write(self, chunk: bytes) -> None:
        """Append `chunk`."""

    def commit(self) -> None:
        """Make the blob visible under its key."""

    def abort(self) -> None:
        """Drop whatever was written (safe to call more than once, and after a failure)."""


class Storage(Protocol):
    """What the application needs from a blob store."""

    name: str

    def writer(self, key: str, *, content_type: str) -> BlobWriter:
        """A writer for a new blob under `key`."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `start..end` (inclusive; `None`: to the end) in chunks. The blob is
        opened before this returns (errors surface here); the chunks are read lazily."""

    def delete(self, key: str) -> None:
        """Remove the blob; a missing one is fine."""

    def list_blobs(self) -> Iterator[StoredBlob]:
        """Every committed blob (for the orphan sweep)."""

    def discard_incomplete(self, older_than: datetime) -> int:
        """Drop writes begun before `older_than` and never finished (their process died);
        how many."""


def new_key() -> str:
    """A random key, fanned out over 256 directories: `ab/ab3f...` (32 hex digits)."""
    token = secrets.token_hex(16)
    return f"{token[:2]}/{token}"


class _LocalWriter:
    def __init__(self, path: Path) -> None:
        self._final = path
        self._part = path.with_name(path.name + _PART_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._part.open("xb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def commit(self) -> None:
        self._file.close()
        self._part.replace(self._final)

    def abort(self) -> None:
        self._file.close()
        self._part.unlink(missing_ok=True)


class LocalStorage:
    """Blobs as files under `root`."""

    name = "local"

    def __init__(self, root: str | Path, chunk_bytes: int) -> None:
        self.root = Path(root).resolve()
        self.chunk_bytes = chunk_bytes

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path.name.endswith(_PART_SUFFIX):
            raise StorageError("invalid key")
        return path

    def writer(self, key: str, *, content_type: str) -> BlobWriter:  # noqa: ARG002 - S3 uses it
        """A writer for a new blob under `key`."""
        return _LocalWriter(self._path(key))

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `start..end` (inclusive), opened now, read lazily."""
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise StorageError("blob missing") from None
        handle.seek(start)
        return self._chunks(handle, None if end is None else end - start + 1)

    def _chunks(self, handle: BinaryIO, remaining: int | None) -> Iterator[bytes]:
        with handle:
            while remaining is None or remaining > 0:
                size = self.chunk_bytes if remaining is None else min(self.chunk_bytes, remaining)
                chunk = handle.read(size)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
                cooperate()  # disk reads never yield to the hub by themselves

    def delete(self, key: str) -> None:
        """Remove the blob; a missing one is fine."""
        self._path(key).unlink(missing_ok=True)

    def list_blobs(self) -> Iterator[StoredBlob]:
        """Every committed blob."""
        if not self.root.is_dir():
            return
        for directory, _, names in os.walk(self.root):
            for name in names:
                if name.endswith(_PART_SUFFIX):
                    continue
                path = Path(directory) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # removed while we walked
                yield StoredBlob(
                    key=path.relative_to(self.root).as_posix(),
                    size=stat.st_size,
                    modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                )

    def discard_incomplete(self, older_than: datetime) -> int:
        """Remove `.part` files not written to since `older_than` (a killed writer's)."""
        if not self.root.is_dir():
            return 0
        removed, cutoff = 0, older_than.timestamp()
        for path in self.root.rglob(f"*{_PART_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # finished or removed meanwhile
        return removed
