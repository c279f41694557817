"""Transactional outbox: events written with the change, published after commit.

Writing: `append` inserts one `outbox` row inside the caller's transaction, after taking a
transaction-scoped advisory lock on the event's aggregate. Two transactions that emit for
the same aggregate therefore commit one after the other, and the later one's row gets the
higher id: per aggregate, id order is commit order (ids come from a sequence at insert time,
so without the lock a lower id could commit later). An insert trigger NOTIFYs the relays at
commit.

Relaying: `relay_batch` claims pending rows with `FOR UPDATE SKIP LOCKED`, but only the
oldest pending row of each aggregate (`NOT EXISTS` an older pending one): at most one event
per aggregate is in flight, so a row that failed to publish is never overtaken by the next
one of its aggregate, whatever the number of relays. Each claimed event is sent as one
Celery message per subscriber task (`myapp.subscriptions`), then marked sent in the same
transaction. Progress is the `sent_at` of each row, never a "last relayed id".

Broker down: publishing fails, the rows stay pending, the relay backs off and tries again;
the writes that produced them were answered long ago. Delivery is at-least-once (a relay
that dies between publish and commit publishes again), so subscribers dedupe by event id
(`myapp.core.events.handle_once`).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from flask import Flask, current_app
from kombu.exceptions import BatchPublishError
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import BigInteger, DateTime, Identity, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import Uuid

from myapp.core import tracing
from myapp.core.config import current_settings
from myapp.core.context import current_request_id
from myapp.core.db import unit_of_work
from myapp.core.logging import get_logger
from myapp.core.metrics import app_counter, app_gauge
from myapp.core.tasks import REQUEST_ID_HEADER, celery_app
from myapp.extensions import db

log = get_logger(__name__)
CHANNEL = "outbox"
#: First key of the two-key advisory locks taken per aggregate ("outb" in ASCII).
_LOCK_CLASS = 0x6F757462
_EXTENSION = "myapp.outbox"


class OutboxEvent(db.Model):
    """A domain event waiting to be (or already) published."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_pending_aggregate",
            "aggregate_type",
            "aggregate_id",
            "id",
            postgresql_where=text("sent_at IS NULL"),
        ),
        Index("ix_outbox_pending", "id", postgresql_where=text("sent_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    aggregate_type: Mapped[str] = mapped_column(String(50), nullable=False)
    aggregate_id: Mapped[str] = mapped_column(String(64), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    request_id: Mapped[str | None] = mapped_column(String(128))
    #: The emitting request's trace context (W3C traceparent) when tracing is on.
    traceparent: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


_APPEND = text(
    """
    WITH serialised AS (SELECT pg_advisory_xact_lock(:lock_class, hashtext(:lock_key)))
    INSERT INTO outbox (
        event_id, name, aggregate_type, aggregate_id, payload, request_id, traceparent
    )
    SELECT :event_id, :name, :aggregate_type, :aggregate_id, CAST(:payload AS jsonb),
           :request_id, :traceparent
    FROM serialised
    """
)

_CLAIM = text(
    """
    SELECT o.id, o.event_id, o.name, o.aggregate_type, o.aggregate_id, o.payload,
           o.request_id, o.traceparent, o.created_at
    FROM outbox o
    WHERE o.sent_at IS NULL
      AND NOT EXISTS (
        SELECT 1 FROM outbox older
        WHERE older.sent_at IS NULL
          AND older.aggregate_type = o.aggregate_type
          AND older.aggregate_id = o.aggregate_id
          AND older.id < o.id
      )
    ORDER BY o.id
    LIMIT :limit
    FOR UPDATE OF o SKIP LOCKED
    """
)

# clock_timestamp(): when the batch was published, not when its transaction began.
_MARK_SENT = text("UPDATE outbox SET sent_at = clock_timestamp() WHERE id = ANY(:ids)")

_STATUS = text(
    """
    SELECT count(*) AS backlog, min(created_at) AS oldest
    FROM outbox WHERE sent_at IS NULL
    """
)


def append(
    *, event_id: uuid.UUID, name: str, aggregate_type: str, aggregate_id: str, payload: str
) -> None:
    """Insert one event in the current transaction (`payload` is JSON text)."""
    key = f"{aggregate_type}:{aggregate_id}"
    db.session.execute(
        _APPEND,
        {
            "lock_class": _LOCK_CLASS,
            "lock_key": key,
            "event_id": event_id,
            "name": name,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "payload": payload,
            "request_id": current_request_id(),
            "traceparent": tracing.traceparent(),
        },
    )


def message(row: Any) -> dict[str, Any]:
    """What a subscriber task receives as its `event` argument."""
    return {
        "id": str(row.event_id),
        "name": row.name,
        "aggregateType": row.aggregate_type,
        "aggregateId": row.aggregate_id,
        "sequence": row.id,
        "payload": row.payload,
        "occurredAt": row.created_at.isoformat(),
        "requestId": row.request_id,
    }


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """What the relay needs: who subscribes to what, and its metrics."""

    subscriptions: dict[str, tuple[str, ...]]
    published: Any
    publish_errors: Any
    backlog: Any
    oldest_age: Any


def _config() -> OutboxConfig:
    return current_app.extensions[_EXTENSION]


def relay_batch(limit: int) -> int:
    """Publish up to `limit` pending events; how many were published.

    Raises the broker's error after marking what was published before it failed.
    """
    config = _config()
    celery = celery_app()
    sent: list[int] = []  # ids published
    failure: BaseException | None = None
    with unit_of_work():
        rows = db.session.execute(_CLAIM, {"limit": limit}).all()
        if not rows:
            return 0
        try:
            # On Redis the whole batch goes out in one pipeline (kombu's producer batch);
            # on RabbitMQ each publish is confirmed as it goes. If the flush fails, none
            # is marked sent: all are published again (subscribers dedupe).
            with celery.producer_or_acquire() as producer, producer.batch(max_size=10_000):
                for row in rows:
                    body = {"event": message(row)}
                    for task_name in config.subscriptions.get(row.name, ()):
                        with tracing.continued(row.traceparent):  # the emitter's trace
                            celery.send_task(
                                task_name,
                                kwargs=body,
                                task_id=f"{row.event_id}:{task_name}",
                                headers={REQUEST_ID_HEADER: row.request_id},
                                argsrepr="()",  # replaced by the masked form at publish
                                kwargsrepr="{}",
                                producer=producer,
                            )
            sent = [row.id for row in rows]
        except (BrokerError, BatchPublishError, OSError) as error:
            failure = error
        if sent:
            db.session.execute(_MARK_SENT, {"ids": sent})
    config.published.inc(len(sent))
    if failure is not None:
        config.publish_errors.inc()
        raise failure
    return len(sent)


@dataclass(frozen=True, slots=True)
class Backlog:
    """Pending events and the age of the oldest."""

    pending: int
    oldest_age_seconds: float


def backlog() -> Backlog:
    """Count what waits (also exported as gauges)."""
    row = db.session.execute(_STATUS).one()
    age = (datetime.now(UTC) - row.oldest).total_seconds() if row.oldest else 0.0
    config = _config()
    config.backlog.set(row.backlog)
    config.oldest_age.set(age)
    return Backlog(pending=row.backlog, oldest_age_seconds=max(age, 0.0))


def purge_sent(*, before: datetime) -> int:
    """Delete rows published before `before`; how many."""
    with unit_of_work():
        return db.session.execute(
            text("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < :before"),
            {"before": before},
        ).rowcount


def resend_since(since: datetime) -> int:
    """Mark events published at or after `since` pending again; how many.

    For a broker that lost messages (a Redis broker restarted without its last writes): the
    relays publish them again, and subscribers, which dedupe by event id, run each once.
    """
    with unit_of_work():
        return db.session.execute(
            text("UPDATE outbox SET sent_at = NULL WHERE sent_at >= :since"), {"since": since}
        ).rowcount


class Relay:
    """A relay loop: publish, then sleep until NOTIFY (or `poll_seconds`); back off on errors.

    Any number may run at once (one per worker process by default, `flask outbox relay`
    for a dedicated one). `stop()` ends the loop after the batch in progress.
    """

    def __init__(self, app: Flask, *, batch_size: int, poll_seconds: float) -> None:
        self.app = app
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._stopping = threading.Event()
        self._listener: psycopg.Connection | None = None

    def stop(self) -> None:
        """Ask the loop to end."""
        self._stopping.set()

    def run(self) -> None:
        """Loop until `stop()`; every error is logged and retried with backoff."""
        backoff = 0.0
        log.info("outbox.relay_started", batch_size=self.batch_size)
        while not self._stopping.is_set():
            try:
                with self.app.app_context():
                    published = relay_batch(self.batch_size)
                    if published < self.batch_size:
                        backlog()
                backoff = 0.0
            except (BrokerError, BatchPublishError, OSError, DBAPIError) as error:
                backoff = min(5.0, backoff * 2 or 0.25)
                log.warning(
                    "outbox.relay_failed", error_type=type(error).__name__, retry_in_s=backoff
                )
                self._stopping.wait(backoff)
                continue
            except Exception:  # a bug must not end the loop silently: log it, go on slower
                log.exception("outbox.relay_error")
                backoff = 5.0
                self._stopping.wait(backoff)
                continue
            if published < self.batch_size:
                self._wait_for_notify()
        self._close_listener()
        log.info("outbox.relay_stopped")

    def _wait_for_notify(self) -> None:
        try:
            listener = self._listener or self._listen()
            for _ in listener.notifies(timeout=self.poll_seconds, stop_after=1):
                pass
        except psycopg.Error:
            self._close_listener()  # the database went away: poll, and listen again later
            self._stopping.wait(self.poll_seconds)

    def _listen(self) -> psycopg.Connection:
        with self.app.app_context():
            url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._listener = psycopg.connect(url, autocommit=True, connect_timeout=5)
        self._listener.execute(f"LISTEN {CHANNEL}")
        return self._listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg.Error):
                self._listener.close()
            self._listener = None


def start_relay_thread(app: Flask) -> Relay:
    """Run a relay in a daemon thread (a greenlet under gevent); returns it for `stop()`."""
    with app.app_context():
        settings = current_settings()
    relay = Relay(
        app, batch_size=settings.outbox_batch_size, poll_seconds=settings.outbox_poll_seconds
    )
    threading.Thread(target=relay.run, name="outbox-relay", daemon=True).start()
    return relay


def init_outbox(app: Flask, subscriptions: dict[str, tuple[str, ...]]) -> None:
    """Install who subscribes to what, and the outbox metrics."""
    app.extensions[_EXTENSION] = OutboxConfig(
        subscriptions=subscriptions,
        published=app_counter(app, "outbox_published_total", "Outbox events published"),
        publish_errors=app_counter(
            app, "outbox_publish_errors_total", "Relay batches stopped by a broker error"
        ),
        backlog=app_gauge(app, "outbox_backlog", "Outbox events not yet published"),
        oldest_age=app_gauge(
            app, "outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event"
        ),
    )
