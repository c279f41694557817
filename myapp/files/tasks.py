"""Files' background work: remove deleted files' blobs, sweep what was left behind."""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task

from myapp.core.config import current_settings
from myapp.core.events import Event
from myapp.core.locks import distributed_lock
from myapp.files import service


@shared_task(name="files.remove_blob")
def remove_blob(event: dict[str, Any]) -> bool:
    """`file.deleted` -> the blob, then the row, are removed. Idempotent: a redelivered
    event finds no deleted row left and does nothing; a storage error retries."""
    return service.remove_blob(file_id=uuid.UUID(Event.from_message(event).aggregate_id))


@shared_task(name="files.sweep")
def sweep() -> dict[str, int]:
    """Hourly: blobs no row names (an upload that died between blob and row) and deleted
    files not yet removed, older than `FILES_ORPHAN_GRACE_SECONDS`."""
    with distributed_lock("files.sweep", ttl=60, auto_extend=True):
        return service.sweep(grace_seconds=current_settings().files_orphan_grace_seconds)
