"""Domain events: recorded by services with their change, handled once by subscribers.

A service calls `emit(...)` inside its `unit_of_work()`; the event becomes an outbox row in
the same transaction as the change and its audit row (`myapp.core.outbox`), so an event
exists if and only if the change committed. Payloads carry ids and names of what changed,
never personal data: the outbox keeps rows for days, and subscribers read what they need.

Subscribers are Celery tasks named in `myapp.subscriptions.SUBSCRIPTIONS`. They receive the
event as a dict (`Event.from_message`) and wrap their effect in `handle_once`, which records
a receipt `(consumer, event id)` in the effect's own transaction: a redelivered event
(publisher retry, worker killed mid-task) finds the receipt and does nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String, func, text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import Uuid

from myapp.core import outbox
from myapp.core.db import new_id, unit_of_work
from myapp.core.logging import get_logger
from myapp.extensions import db

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """An event as a subscriber sees it."""

    id: uuid.UUID
    name: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    payload: dict[str, Any]
    occurred_at: str
    request_id: str | None

    @classmethod
    def from_message(cls, event: dict[str, Any]) -> Event:
        """Parse the `event` argument a subscriber task receives."""
        return cls(
            id=uuid.UUID(event["id"]),
            name=event["name"],
            aggregate_type=event["aggregateType"],
            aggregate_id=event["aggregateId"],
            sequence=int(event["sequence"]),
            payload=dict(event.get("payload") or {}),
            occurred_at=event["occurredAt"],
            request_id=event.get("requestId"),
        )


class EventReceipt(db.Model):
    """A subscriber handled an event (its dedupe key)."""

    __tablename__ = "event_receipts"

    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


def emit(
    name: str, *, aggregate_type: str, aggregate_id: Any, payload: dict[str, Any]
) -> uuid.UUID:
    """Record an event in the current unit of work; returns its id.

    Emit in a stable order (e.g. by id) when one transaction touches several aggregates:
    each takes that aggregate's lock until commit.
    """
    event_id = new_id()
    outbox.append(
        event_id=event_id,
        name=name,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id),
        payload=json.dumps(payload, default=str),
    )
    return event_id


_RECEIPT = text(
    """
    INSERT INTO event_receipts (consumer, event_id) VALUES (:consumer, :event_id)
    ON CONFLICT DO NOTHING RETURNING 1
    """
)


@contextmanager
def handle_once(consumer: str, event_id: uuid.UUID) -> Iterator[bool]:
    """A unit of work that yields True the first time `consumer` handles `event_id` (an
    event's id, or any key of a unit of work that must happen once: a job id).

    The receipt commits with whatever the block does. A concurrent duplicate waits on the
    receipt's key until the first commits, then gets False; if the first rolls back, the
    duplicate gets True and does the work.
    """
    with unit_of_work():
        first = db.session.execute(_RECEIPT, {"consumer": consumer, "event_id": event_id}).first()
        if first is None:
            log.info("event.duplicate_skipped", consumer=consumer, event_id=str(event_id))
        yield first is not None
