"""Dead letters: tasks that failed for good, kept to be read, replayed or purged.

A task that raises a non-retryable error, or runs out of retries, becomes one
`dead_letters` row, written in the same step as its `task.dead_lettered` log line and
counted by `celery_dead_letters_total`. Its arguments are encrypted with the app's key ring
(bound to the row) and shown masked; the error is kept as its type, a scrubbed message
and a digest of the traceback's frames (the same bug gives the same digest).

`replay` sends the task again with its original arguments and request id; the worker then
marks the letter `resolved` when the run succeeds, or back to `dead` (attempts added) when
it fails again. Commands: `flask dlq list|show|replay|purge` (`myapp.cli`).
"""

from __future__ import annotations

import hashlib
import json
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Task
from flask import Flask, current_app
from prometheus_client import Counter
from sqlalchemy import DateTime, Integer, String, Text, delete, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from myapp.core.context import current_request_id
from myapp.core.crypto import crypto, row_aad
from myapp.core.db import Model, new_id, unit_of_work
from myapp.core.logging import get_logger, mask_arguments, scrub_text
from myapp.core.metrics import app_counter
from myapp.core.tasks import (
    DEAD_LETTER_HEADER,
    DEAD_LETTER_HOOK,
    FIRST_FAILURE_HEADER,
    REPLAY_SUCCEEDED_HOOK,
    REQUEST_ID_HEADER,
    celery_app,
    message_header,
)
from myapp.extensions import db

log = get_logger(__name__)
_COUNTER = "myapp.dead_letters_counter"
DEAD, REPLAYING, RESOLVED = "dead", "replaying", "resolved"


class DeadLetter(Model):
    """A task that failed for good."""

    __tablename__ = "dead_letters"

    task_id: Mapped[str] = mapped_column(String(155), nullable=False)
    task_name: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    arguments_ciphertext: Mapped[str] = mapped_column(Text, nullable=False)
    arguments_masked: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    error_type: Mapped[str] = mapped_column(String(200), nullable=False)
    error_message: Mapped[str] = mapped_column(Text, nullable=False)
    traceback_digest: Mapped[str] = mapped_column(String(16), nullable=False)
    traceback_frames: Mapped[str] = mapped_column(Text, nullable=False)
    request_id: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    first_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_failed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=DEAD)
    replays: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replay_task_id: Mapped[str | None] = mapped_column(String(155))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def arguments(self) -> dict[str, Any]:
        """The original `{args, kwargs}` (decrypted)."""
        aad = row_aad(self.__tablename__, "arguments", self.id)
        return json.loads(crypto().ring.decrypt(self.arguments_ciphertext, aad=aad))


def _frames(einfo: Any, error: BaseException) -> str:
    """`file:function` of each frame, innermost last: no values, no messages."""
    tb = getattr(einfo, "tb", None) or error.__traceback__
    frames = traceback.extract_tb(tb) if tb else []
    return "\n".join(f"{frame.filename.rsplit('/', 2)[-1]}:{frame.name}" for frame in frames)


def _first_failure(task: Task, now: datetime) -> datetime:
    stamp = message_header(task.request, FIRST_FAILURE_HEADER)
    try:
        return datetime.fromtimestamp(float(stamp), UTC) if stamp else now
    except (TypeError, ValueError):
        return now


def record_failure(  # noqa: PLR0913 - what Celery's on_failure hands over
    *,
    task: Task,
    task_id: str,
    error: BaseException,
    args: list[Any],
    kwargs: dict[str, Any],
    einfo: Any,
) -> None:
    """Write (or, for a failed replay, update) the dead letter of a task that gave up.

    `task_id` comes from Celery's failure callback: when the hard time limit kills a task
    (gevent pool), `task.request` is no longer that task's.
    """
    now = datetime.now(UTC)
    frames = _frames(einfo, error)
    fields = {
        "error_type": f"{type(error).__module__}.{type(error).__qualname__}",
        "error_message": scrub_text(str(error))[:1000],
        "traceback_digest": hashlib.sha256(
            f"{type(error).__qualname__}\n{frames}".encode()
        ).hexdigest()[:16],
        "traceback_frames": frames,
        "last_failed_at": now,
    }
    attempts = (task.request.retries or 0) + 1
    replayed = message_header(task.request, DEAD_LETTER_HEADER)
    with unit_of_work():
        letter = db.session.get(DeadLetter, uuid.UUID(replayed)) if replayed else None
        if letter is None:
            letter = DeadLetter(
                id=new_id(),
                task_id=task_id,
                task_name=task.name,
                arguments_masked=mask_arguments({"args": args, "kwargs": kwargs}),
                request_id=message_header(task.request, REQUEST_ID_HEADER) or current_request_id(),
                attempts=attempts,
                first_failed_at=_first_failure(task, now),
                status=DEAD,
                replays=0,
                **fields,
            )
            plain = json.dumps({"args": args, "kwargs": kwargs}, default=str)
            aad = row_aad(DeadLetter.__tablename__, "arguments", letter.id)
            letter.arguments_ciphertext = crypto().ring.encrypt(plain, aad=aad)
            db.session.add(letter)
        else:
            letter.attempts += attempts
            letter.status = DEAD
            for name, value in fields.items():
                setattr(letter, name, value)
    dead_letter_counter().labels(task.name).inc()
    log.error(
        "task.dead_lettered",
        task=task.name,
        task_id=task_id,
        dead_letter_id=str(letter.id),
        attempts=attempts,
        error_type=fields["error_type"],
        traceback_digest=fields["traceback_digest"],
    )


def mark_resolved(*, dead_letter_id: str) -> None:
    """A replay succeeded."""
    with unit_of_work():
        letter = db.session.get(DeadLetter, uuid.UUID(dead_letter_id))
        if letter is not None:
            letter.status = RESOLVED
            letter.resolved_at = datetime.now(UTC)
    log.info("task.replay_succeeded", dead_letter_id=dead_letter_id)


def list_letters(*, status: str | None = None, limit: int = 50) -> list[DeadLetter]:
    """Newest failures first."""
    statement = select(DeadLetter).order_by(DeadLetter.last_failed_at.desc()).limit(limit)
    if status:
        statement = statement.where(DeadLetter.status == status)
    return list(db.session.scalars(statement))


def get_letter(letter_id: uuid.UUID) -> DeadLetter | None:
    """One dead letter, or None."""
    return db.session.get(DeadLetter, letter_id)


def replay(letter: DeadLetter) -> str:
    """Send the task again with its original arguments; returns the new task id.

    The letter is marked `replaying` before the message leaves (the run may finish, and
    mark it `resolved`, before this call returns). Raises the broker's error when it
    cannot be reached; the letter is then `dead` again.
    """
    arguments = letter.arguments()
    task_id = str(uuid.uuid4())
    with unit_of_work():
        letter.status = REPLAYING
        letter.replays += 1
        letter.replayed_at = datetime.now(UTC)
        letter.replay_task_id = task_id
    try:
        celery_app().send_task(
            letter.task_name,
            args=arguments["args"],
            kwargs=arguments["kwargs"],
            task_id=task_id,
            headers={REQUEST_ID_HEADER: letter.request_id, DEAD_LETTER_HEADER: str(letter.id)},
        )
    except Exception:
        with unit_of_work():
            letter.status = DEAD
        raise
    log.info("task.replayed", dead_letter_id=str(letter.id), task=letter.task_name)
    return task_id


def purge(*, before: datetime) -> int:
    """Delete letters whose last failure is older than `before`; how many."""
    with unit_of_work():
        deleted = db.session.execute(
            delete(DeadLetter).where(DeadLetter.last_failed_at < before)
        ).rowcount
    log.info("dlq.purged", rows=deleted)
    return deleted


def dead_letter_counter() -> Counter:
    """The current app's count of dead-lettered tasks, by task name."""
    return current_app.extensions[_COUNTER]


def init_dead_letters(app: Flask) -> None:
    """Plug the dead-letter table into the base task; create its counter."""
    app.extensions[_COUNTER] = app_counter(
        app, "celery_dead_letters_total", "Tasks that failed for good", ("task",)
    )
    app.extensions[DEAD_LETTER_HOOK] = record_failure
    app.extensions[REPLAY_SUCCEEDED_HOOK] = mark_resolved
