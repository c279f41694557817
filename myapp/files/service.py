"""File use cases: upload, generated files, read, delete, and the workers' blob removal.

A blob is written before its row: a crash in between leaves a blob no row names, which the
orphan sweep removes after `FILES_ORPHAN_GRACE_SECONDS`; a row never names a missing blob.
Deleting hides the row at once and emits `file.deleted`; a worker removes the blob, then
the row. Owners and holders of `files:manage` (admins) see a file; anybody else gets 404,
as if it did not exist.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from sqlalchemy import delete, select

from myapp.audit import service as audit
from myapp.core import admission, events
from myapp.core import permissions as perms
from myapp.core.blobs import StorageError, new_key
from myapp.core.config import current_settings
from myapp.core.context import Actor
from myapp.core.db import release_connection, unit_of_work
from myapp.core.errors import AppError
from myapp.core.logging import get_logger
from myapp.core.storage import storage
from myapp.extensions import db
from myapp.files.models import StoredFile
from myapp.files.upload import FRAMING_ALLOWANCE, ReceivedBlob, receive_upload, too_large

log = get_logger(__name__)
FILE_DELETED = "file.deleted"
_SWEEP_BATCH = 500


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Inclusive byte positions of a file."""

    start: int
    end: int

    @property
    def length(self) -> int:
        """How many bytes."""
        return self.end - self.start + 1


def _snapshot(row: StoredFile) -> dict:
    return {
        "filename": row.filename,
        "contentType": row.content_type,
        "size": row.size,
        "sha256": row.sha256,
        "ownerId": str(row.owner_id),
    }


def _record(blob: ReceivedBlob, owner_id: uuid.UUID) -> StoredFile:
    row = StoredFile(
        owner_id=owner_id,
        filename=blob.filename,
        content_type=blob.content_type,
        size=blob.size,
        sha256=blob.sha256,
        storage_key=blob.key,
    )
    db.session.add(row)
    db.session.flush()
    audit.record(
        action=audit.AuditAction.CREATE, target_type="file", target_id=row.id, after=_snapshot(row)
    )
    return row


def _keep(blob: ReceivedBlob, owner_id: uuid.UUID) -> StoredFile:
    """Record a stored blob (the row as written); if that fails, remove the blob (the
    sweep is the backstop)."""
    try:
        with unit_of_work(keep_loaded=True):
            return _record(blob, owner_id)
    except BaseException:
        try:
            storage().delete(blob.key)
        except StorageError:
            log.warning("files.blob_left_for_sweep", key=blob.key)
        raise


def upload(
    *, stream: BinaryIO, boundary: bytes, content_length: int | None, actor: Actor
) -> StoredFile:
    """Store the `file` part of a multipart body for `actor` (see `myapp.files.upload`)."""
    settings = current_settings()
    limit = settings.files_max_bytes
    if content_length is not None and content_length > limit + FRAMING_ALLOWANCE:
        raise too_large(limit)
    # While the body streams in (minutes, maybe): no database connection, no admission slot.
    release_connection()
    admission.release()
    blob = receive_upload(
        stream,
        boundary,
        storage(),
        limit=limit,
        allowed=settings.files_allowed_extensions,
        chunk_bytes=settings.files_chunk_bytes,
    )
    row = _keep(blob, uuid.UUID(actor.id))
    log.info("files.uploaded", file_id=str(row.id), size=row.size, content_type=row.content_type)
    return row


def store_generated(
    *, owner_id: uuid.UUID, filename: str, content_type: str, chunks: Iterable[bytes]
) -> StoredFile:
    """Store what the application produced (an export) as a file of `owner_id`."""
    key, digest, size = new_key(), hashlib.sha256(), 0
    writer = storage().writer(key, content_type=content_type)
    try:
        for chunk in chunks:
            writer.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    blob = ReceivedBlob(
        key=key, filename=filename, content_type=content_type, size=size, sha256=digest.hexdigest()
    )
    return _keep(blob, owner_id)


def _visible(row: StoredFile | None, actor: Actor) -> StoredFile:
    allowed = row is not None and (
        (actor.is_user and actor.id == str(row.owner_id)) or actor.can(perms.FILES_MANAGE)
    )
    if not allowed or row is None or row.is_deleted:
        raise AppError("NOT_FOUND", "No such file.")
    return row


def get_file(*, file_id: uuid.UUID, actor: Actor) -> StoredFile:
    """A file its owner or an admin may see; 404 for anybody else."""
    return _visible(db.session.get(StoredFile, file_id), actor)


def read_content(row: StoredFile, byte_range: ByteRange | None = None) -> Iterator[bytes]:
    """The file's bytes (a range of them), opened now, streamed in chunks."""
    if row.size == 0:
        return iter(())
    if byte_range is None:
        return storage().read(row.storage_key)
    return storage().read(row.storage_key, byte_range.start, byte_range.end)


def delete_file(*, file_id: uuid.UUID, actor: Actor) -> None:
    """Hide the file now; a worker removes its blob and row (`file.deleted`)."""
    with unit_of_work():
        row = _visible(
            db.session.execute(
                select(StoredFile).where(StoredFile.id == file_id).with_for_update()
            ).scalar_one_or_none(),
            actor,
        )
        row.soft_delete()
        audit.record(
            action=audit.AuditAction.DELETE,
            target_type="file",
            target_id=row.id,
            before=_snapshot(row),
        )
        events.emit(FILE_DELETED, aggregate_type="file", aggregate_id=row.id, payload={})


def remove_blob(*, file_id: uuid.UUID) -> bool:
    """Worker: remove a deleted file's blob, then its row. False when nothing was left."""
    row = db.session.get(StoredFile, file_id)
    if row is None or not row.is_deleted:
        db.session.rollback()
        return False
    storage().delete(row.storage_key)  # first: a row without its blob is never left behind
    with unit_of_work():
        db.session.execute(
            delete(StoredFile).where(StoredFile.id == file_id, StoredFile.deleted_at.is_not(None))
        )
    log.info("files.removed", file_id=str(file_id))
    return True


def sweep(*, grace_seconds: int) -> dict[str, int]:
    """Remove blobs no row names, deleted files a worker has not removed yet, and uploads
    a killed process left unfinished (`.part` files, multipart uploads).

    Only what is older than `grace_seconds` counts: an upload in progress has a blob and
    no row yet, and a fresh delete is the worker's to finish.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    store, orphans, batch = storage(), 0, []

    def flush(candidates: list[str]) -> int:
        known = set(
            db.session.execute(
                select(StoredFile.storage_key).where(StoredFile.storage_key.in_(candidates))
            ).scalars()
        )
        db.session.rollback()
        for key in candidates:
            if key not in known:
                store.delete(key)
        return len(set(candidates) - known)

    for blob in store.list_blobs():
        if blob.modified_at < cutoff:
            batch.append(blob.key)
        if len(batch) >= _SWEEP_BATCH:
            orphans, batch = orphans + flush(batch), []
    if batch:
        orphans += flush(batch)
    stale = list(
        db.session.execute(
            select(StoredFile.id).where(StoredFile.deleted_at < cutoff).limit(_SWEEP_BATCH)
        ).scalars()
    )
    db.session.rollback()
    removed = sum(remove_blob(file_id=file_id) for file_id in stale)
    incomplete = store.discard_incomplete(cutoff)
    if orphans or removed or incomplete:
        log.info("files.swept", orphan_blobs=orphans, deleted_files=removed, incomplete=incomplete)
    return {"orphanBlobs": orphans, "deletedFiles": removed, "incompleteUploads": incomplete}
