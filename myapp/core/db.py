"""Database platform: model base and mixins, engine options, the unit of work, SQL comments.

Primary keys are ULIDs stored as native `uuid`: time-ordered (index friendly, keyset
pageable) and still a standard type for every tool. Timestamps come from the database
clock, never from a default evaluated once at import.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, Uuid, event, func
from sqlalchemy.orm import Mapped, Session, mapped_column
from ulid import ULID

from myapp.core.context import current_request_id
from myapp.extensions import db
from myapp.settings import Settings


def new_id() -> uuid.UUID:
    """A new ULID as a UUID (time-ordered)."""
    return ULID().to_uuid()


class Model(db.Model):
    """Base of every table: a ULID primary key."""

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)


class TimestampMixin:
    """`created_at` / `updated_at`, timezone-aware, set by PostgreSQL per row."""

    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class SoftDeleteMixin:
    """`deleted_at`: rows are hidden, not removed, until a purge job runs."""

    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    @property
    def is_deleted(self) -> bool:
        """True once soft-deleted."""
        return self.deleted_at is not None

    def soft_delete(self) -> None:
        """Mark the row deleted now."""
        self.deleted_at = datetime.now(UTC)

    def restore(self) -> None:
        """Undo a soft delete."""
        self.deleted_at = None


def engine_options(settings: Settings) -> dict[str, Any]:
    """SQLAlchemy engine options: pool sized for the worker's greenlets, bounded waits."""
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "pool_recycle": settings.db_pool_recycle,
        "pool_pre_ping": True,
        "connect_args": {
            "connect_timeout": settings.db_connect_timeout,
            "application_name": f"{settings.app_name}-{settings.app_env}",
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
        },
    }


def _comment_with_request_id(  # noqa: PLR0913 - SQLAlchemy's event signature
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    """Append `/* request_id=... */` so slow-query logs and pg_stat_activity name the request.

    Request ids are restricted to `[A-Za-z0-9._-]`, so they cannot close the comment.
    """
    request_id = current_request_id()
    if request_id:
        statement = f"{statement} /* request_id={request_id} */"
    return statement, parameters


def install_sql_comments() -> None:
    """Register the request-id comment on every engine, once per process."""
    if not event.contains(Engine, "before_cursor_execute", _comment_with_request_id):
        event.listen(Engine, "before_cursor_execute", _comment_with_request_id, retval=True)


@contextmanager
def unit_of_work(session: Session | None = None) -> Iterator[Session]:
    """The one transaction of a use case: commit on success, roll back on any error.

    Nested calls join the outermost one, so services compose and only the top-level
    service commits. Helpers inside only `flush()`.
    """
    session = session or db.session
    depth = session.info.get("uow_depth", 0)
    session.info["uow_depth"] = depth + 1
    try:
        yield session
        if depth == 0:
            session.commit()
    except BaseException:
        if depth == 0:
            session.rollback()
        raise
    finally:
        session.info["uow_depth"] = depth
