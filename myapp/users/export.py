"""The users CSV export: a job (`users.export`) whose result is a file of its requester.

Users are read through a server-side cursor in batches (`yield_per`; the session's identity
map holds rows weakly, so written batches are let go), so memory stays flat whatever their
number; the CSV is written to blob storage as it is produced. Phone numbers
are masked unless the requester was an admin when asking. Cells a spreadsheet would run as
a formula (`=`, `+`, `-`, `@` first) are prefixed with `'`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from myapp.extensions import db
from myapp.files import service as files
from myapp.jobs import service as jobs
from myapp.users.models import User
from myapp.users.schemas import masked_phone

BATCH = 500
COLUMNS = ("id", "email", "name", "phone", "roles", "status", "createdAt", "updatedAt")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text


def _row(user: User, *, full_phones: bool) -> list[Any]:
    phone = user.phone
    if phone and not full_phones:
        phone = masked_phone(phone)
    return [
        str(user.id),
        _cell(user.email),
        _cell(user.name),
        phone or "",
        " ".join(user.role_names),
        user.status,
        user.created_at.isoformat(),
        user.updated_at.isoformat(),
    ]


def _csv_chunks(full_phones: bool, progress: jobs.Progress) -> Iterator[bytes]:
    visible = User.deleted_at.is_(None)
    total = db.session.scalar(select(func.count()).select_from(User).where(visible)) or 0
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    statement = (
        select(User)
        .where(visible)
        .order_by(User.id)
        .options(selectinload(User.roles))
        .execution_options(yield_per=BATCH)
    )
    done = 0
    for batch in db.session.scalars(statement).partitions():
        for user in batch:
            writer.writerow(_row(user, full_phones=full_phones))
        done += len(batch)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        progress(done, total)
    if buffer.tell():
        yield buffer.getvalue().encode()


def run_export(job: jobs.JobRun, progress: jobs.Progress) -> dict[str, Any]:
    """Runner of `users.export`: every visible user into a CSV file of the requester."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stored = files.store_generated(
        owner_id=job.owner_id,
        filename=f"users-{stamp}.csv",
        content_type="text/csv; charset=utf-8",
        chunks=_csv_chunks(job.params.get("phones") == "full", progress),
    )
    return {"fileId": str(stored.id)}
