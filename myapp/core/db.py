"""Database platform: model base and mixins, engine options, the unit of work, SQL comments.

Primary keys are ULIDs stored as native `uuid`: time-ordered (index friendly, keyset
pageable) and still a standard type for every tool. Timestamps come from the database
clock, never from a default evaluated once at import.

Requests with a safe method (GET, HEAD) read in autocommit mode: each statement is its
own transaction, so a read costs one round trip instead of three (BEGIN, the statement,
ROLLBACK). Under READ COMMITTED every statement sees a fresh snapshot either way, so reads
see exactly what they would inside a transaction. Anything that writes goes through
`unit_of_work()`, which always runs in a real transaction.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy.exc
from flask import Flask, request
from sqlalchemy import Connection, DateTime, Engine, Executable, Uuid, event, func
from sqlalchemy.orm import Mapped, Session, mapped_column, scoped_session
from ulid import ULID

from myapp.core import tracing
from myapp.core.config import current_settings
from myapp.core.context import current_request_id
from myapp.core.errors import on_unavailable
from myapp.core.logging import get_logger
from myapp.core.metrics import app_counter, app_gauge
from myapp.core.pipeline import current_route_policy
from myapp.extensions import AUTOCOMMIT_READS, autocommit_reads, db, flag_autocommit_reads
from myapp.settings import Settings

log = get_logger(__name__)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_AFTER_COMMIT = "myapp.after_commit"


def new_id() -> uuid.UUID:
    """A new ULID as a UUID (time-ordered)."""
    return ULID().to_uuid()


class Model(db.Model):
    """Base of every table: a ULID primary key."""

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)


class TimestampMixin:
    """`created_at` / `updated_at`, timezone-aware, set by PostgreSQL per row; both come back
    in the `RETURNING` of the row's INSERT or UPDATE (`eager_defaults`), not in a later read."""

    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - read once by the mapper

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
    """SQLAlchemy engine options: a bounded pool per process, bounded waits everywhere.

    Greenlets beyond `pool_size + max_overflow` queue for a connection for at most
    `pool_timeout` seconds, then the request is answered 503. No pre-ping by default: it
    would cost a round trip per request; a connection found dead (database restarted)
    invalidates the whole pool instead, and `retry_on_disconnect` repeats the read that
    found it.
    """
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "pool_recycle": settings.db_pool_recycle,
        "pool_pre_ping": settings.db_pool_pre_ping,
        # Errors name the statement but never its parameters: they are user data (a
        # password hash, an e-mail) and would reach the logs with the exception.
        "hide_parameters": True,
        "connect_args": {
            "connect_timeout": settings.db_connect_timeout,
            "application_name": f"{settings.app_name}-{settings.app_env}",
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
        },
    }


def read_safe_methods_in_autocommit() -> None:
    """Pipeline step: a GET or HEAD reads in autocommit mode (see the module docstring);
    so does a streaming route (an upload), which must not hold a connection, let alone
    an open transaction, while its body trickles in. Other methods read in transactions
    (said explicitly: a keep-alive connection serves its requests in one greenlet)."""
    if request.method in SAFE_METHODS or current_route_policy().streaming:
        read_in_autocommit()
    else:
        autocommit_reads.set(False)


def end_autocommit_reads(_: BaseException | None = None) -> None:
    """Cleanup: sessions created after this request (by whatever runs next on this
    greenlet or thread) read in transactions again."""
    autocommit_reads.set(False)


def read_in_autocommit() -> None:
    """From now on the session reads in autocommit mode (one round trip per read, and
    `release_connection()` gives the connection back), until a `unit_of_work` begins.
    The session is not created for this: the one created next starts so."""
    autocommit_reads.set(True)
    if db.session.registry.has():
        flag_autocommit_reads(db.session())


def release_connection() -> None:
    """While reading in autocommit mode, hand the connection back to the pool now.

    What was loaded stays usable (and in the identity map); a later read checks a
    connection out again. A request that would otherwise hold its connection through
    serialisation and logging frees it for the other greenlets of the worker at once.
    """
    if not db.session.registry.has():
        return  # no session, no connection
    session = db.session()
    if session.info.get(AUTOCOMMIT_READS) and session.in_transaction():
        session.commit()  # nothing to commit in autocommit mode: this only releases


def _comment_with_request_id(  # noqa: PLR0913 - SQLAlchemy's event signature
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    """Append `/* request_id=... */` so PostgreSQL's own logs and pg_stat_activity name it.

    Request ids are restricted to `[A-Za-z0-9._-]`, so they cannot close the comment. The
    price: every statement's text is unique, so psycopg never prepares it and PostgreSQL
    plans it every time (see `DB_SQL_COMMENTS`).
    """
    return with_request_id(statement), parameters


def with_request_id(statement: str) -> str:
    """`statement` with the current request id appended as a comment (if there is one)."""
    request_id = current_request_id()
    return f"{statement} /* request_id={request_id} */" if request_id else statement


def _start_clock(conn: Any, *_: Any) -> None:
    conn.info["query_started"] = time.perf_counter()  # a connection runs one at a time


def _log_if_slow(slow_ms: float) -> Callable[..., None]:
    def log_if_slow(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info.pop("query_started", time.perf_counter())
        log_slow(statement, started, slow_ms)

    return log_if_slow


def log_slow(statement: str, started: float, slow_ms: float) -> None:
    """One `db.slow_query` line (text, never parameters) if it took `slow_ms` or more."""
    elapsed_ms = (time.perf_counter() - started) * 1000
    if elapsed_ms >= slow_ms > 0:
        log.warning("db.slow_query", duration_ms=round(elapsed_ms, 1), sql=statement[:500])


def init_db(app: Flask, settings: Settings) -> None:
    """Instrument the app's engine: slow-query log lines, request-id comments if enabled.

    A statement slower than `DB_SLOW_QUERY_MS` is logged with its text (never its
    parameters) and, like every log line, the request id.
    """
    with app.app_context():
        engine = db.engine
    _instrument_pool(app, engine)
    if settings.db_slow_query_ms > 0:
        event.listen(engine, "before_cursor_execute", _start_clock)
        event.listen(engine, "after_cursor_execute", _log_if_slow(settings.db_slow_query_ms))
    if settings.db_sql_comments:
        event.listen(engine, "before_cursor_execute", _comment_with_request_id, retval=True)


def _instrument_pool(app: Flask, engine: Engine) -> None:
    """`db_pool_connections_in_use` (summed over live processes) and
    `db_pool_timeouts_total` (requests answered 503 after `DB_POOL_TIMEOUT` of waiting)."""
    in_use = app_gauge(
        app,
        "db_pool_connections_in_use",
        "Database connections checked out of the pool",
        multiprocess_mode="livesum",
    )
    timeouts = app_counter(
        app, "db_pool_timeouts_total", "Requests that found no free database connection"
    )
    event.listen(engine, "checkout", lambda *_: in_use.inc())
    event.listen(engine, "checkin", lambda *_: in_use.dec())

    def count_timeout(error: Exception) -> None:
        if isinstance(error, sqlalchemy.exc.TimeoutError):
            timeouts.inc()

    on_unavailable(app, count_timeout)


def fetch_row(statement: Executable, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The first row of the read-only `statement`, on a pooled connection in autocommit,
    past the ORM session and SQLAlchemy's execution layer.

    For the one read every authenticated request makes (its caller), where that layer
    cost more CPU than the rest of the request's SQL work together. What it would do is
    done here: the text is compiled from `statement` once; a connection found dead (a
    database restart) drops the pool and the read runs once more on a new connection,
    so no pre-ping is needed; pool waits end in 503 like any other; slow reads are
    logged; request-id comments follow `DB_SQL_COMMENTS`. No type processing: pass
    plain parameter values; columns come back as psycopg reads them.

    When the session is bound to one connection (an outer transaction, as in tests), the
    read runs there, inside that transaction, so it sees what the session sees.
    """
    sql, defaults = _compiled(statement)
    params = {**defaults, **params}  # literals in the statement are parameters too
    settings = current_settings()
    if settings.db_sql_comments:
        sql = with_request_id(sql)
    bound = db.session.session_factory.kw.get("bind")
    if isinstance(bound, Connection):
        return bound.connection.driver_connection.execute(sql, params).fetchone()
    for attempt in (1, 2):
        connection = db.engine.raw_connection()
        driver: psycopg.Connection = connection.driver_connection
        try:
            driver.autocommit = True
            started = time.perf_counter()
            with tracing.span("SELECT", kind="client", attributes=_span_attributes(sql)):
                row = driver.execute(sql, params).fetchone()
            log_slow(sql, started, settings.db_slow_query_ms)
            return row
        except psycopg.OperationalError as error:
            if attempt == 2 or not db.engine.dialect.is_disconnect(error, driver, None):
                raise
            connection.invalidate(error)
            db.engine.dispose()  # the others in the pool died with this one
            log.info("db.reconnected", error_type=type(error).__name__)
        finally:
            _give_back(connection, driver)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _span_attributes(sql: str) -> dict[str, str]:
    return {"db.system": "postgresql", "db.statement": sql}


@functools.lru_cache(maxsize=32)
def _compiled(statement: Executable) -> tuple[str, dict[str, Any]]:
    compiled = statement.compile(dialect=db.engine.dialect)
    return str(compiled), compiled.params


def _give_back(connection: Any, driver: psycopg.Connection) -> None:
    """Return the connection to the pool as the ORM expects it: in transaction mode."""
    if not driver.closed:
        try:
            driver.autocommit = False
        except psycopg.Error as error:
            connection.invalidate(error)
    connection.close()


@contextmanager
def unit_of_work(session: Session | None = None, *, keep_loaded: bool = False) -> Iterator[Session]:
    """The one transaction of a use case: commit on success, roll back on any error.

    Nested calls join the outermost one, so services compose and only the top-level
    service commits. Helpers inside only `flush()`.

    After the commit, objects are read again on their next use (another process may have
    changed them since), except with `keep_loaded` on the outermost unit: for a use case
    that answers with what it just wrote, which its objects already hold (timestamps come
    back in `RETURNING`), so presenting them needs no second transaction.
    """
    session = session or db.session
    actual = session() if isinstance(session, scoped_session) else session  # not proxied
    depth = session.info.get("uow_depth", 0)
    if depth == 0 and session.info.pop(AUTOCOMMIT_READS, False):
        session.commit()  # end the autocommit reads: what follows is one real transaction
        actual.expire_on_commit = True
    session.info["uow_depth"] = depth + 1
    try:
        yield session
        if depth == 0:
            expire = actual.expire_on_commit
            actual.expire_on_commit = expire and not keep_loaded
            try:
                session.commit()
            finally:
                actual.expire_on_commit = expire
            for callback in session.info.pop(_AFTER_COMMIT, {}).values():
                callback()
    except BaseException:
        if depth == 0:
            session.info.pop(_AFTER_COMMIT, None)
            session.rollback()
        raise
    finally:
        session.info["uow_depth"] = depth


def after_commit(callback: Callable[[], None], *, key: Hashable | None = None) -> None:
    """Run `callback` once the current unit of work has committed (never if it rolls
    back); at once outside one. For what others must only learn of a committed change.
    With a `key`, a callback already waiting under the same key is not added again."""
    session = db.session
    if not session.info.get("uow_depth", 0):
        callback()
        return
    pending = session.info.setdefault(_AFTER_COMMIT, {})
    pending.setdefault(object() if key is None else key, callback)


@contextmanager
def separate_transaction() -> Iterator[Connection]:
    """A short transaction on a connection of its own, committed at the end of the block.

    For what must become visible while the session's own transaction is still open: the
    progress a long job reports while it streams rows through a server-side cursor.
    """
    with db.engine.begin() as connection:
        yield connection
