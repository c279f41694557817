"""Chat's background work: store accepted messages and tell their rooms.

`chat.persist` runs on the `chat` queue for a room: it stores the room's waiting messages
oldest first and emits `chat:message` for each one it stored (never for a duplicate),
after the commit. A worker killed before the commit leaves the messages in the inbox; the
redelivered task (or the next send to the room, or the sweep) stores them then.
`chat.sweep_inboxes` (every minute) queues rooms whose messages waited too long: their
task was lost (a broker outage after acceptance, a purged queue).
"""

from __future__ import annotations

import time
import uuid

from celery import shared_task

from myapp.chat import inbox, service
from myapp.chat.schemas import LiveMessageSchema
from myapp.chat.service import StoredMessage
from myapp.chat.sockets import NAMESPACE, PERSIST_TASK, chat_metrics, room_of
from myapp.core.locks import LockNotAcquiredError
from myapp.core.realtime import realtime
from myapp.core.tasks import TransientError, celery_app

_STALE_MS = 30_000


def _announce(messages: list[StoredMessage]) -> None:
    metrics, registry, schema = chat_metrics(), realtime(), LiveMessageSchema()
    now = time.time()
    for message in messages:
        metrics.persist_seconds.observe(max(now - message.created_at.timestamp(), 0.0))
        registry.emit(
            "chat:message", schema.dump(message), to=room_of(message.room_id), namespace=NAMESPACE
        )


@shared_task(name=PERSIST_TASK)
def persist(room_id: str) -> int:
    """Store a room's waiting messages and broadcast the new ones; how many were new."""
    try:
        return service.persist_waiting(room_id=uuid.UUID(room_id), announce=_announce)
    except LockNotAcquiredError:
        raise TransientError("another worker holds the room") from None


@shared_task(name="chat.sweep_inboxes")
def sweep_inboxes() -> int:
    """Queue `chat.persist` for rooms with messages waiting over 30 s; how many."""
    rooms = inbox.waiting_rooms(int(time.time() * 1000) - _STALE_MS)
    for room_id in rooms:
        celery_app().send_task(PERSIST_TASK, args=[str(room_id)])
    return len(rooms)
