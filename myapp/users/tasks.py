"""Users' background work: subscribers to `user.*` events."""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task

from myapp.core.cache import invalidate
from myapp.core.config import current_settings
from myapp.core.events import Event, handle_once
from myapp.core.locks import distributed_lock
from myapp.core.logging import get_logger
from myapp.core.mail import send_mail
from myapp.users import service

log = get_logger(__name__)
WELCOME_SUBJECT = "Welcome"


@shared_task(name="users.send_welcome_email")
def send_welcome_email(event: dict[str, Any]) -> None:
    """`user.registered` -> one welcome e-mail (none for an account already gone)."""
    received = Event.from_message(event)
    with handle_once("users.send_welcome_email", received.id) as first:
        if not first:
            return
        user = service.get_active(user_id=uuid.UUID(received.payload["userId"]))
        if user is None:
            log.info("users.welcome_skipped", user_id=received.aggregate_id)
            return
        send_mail(
            to=user.email,
            subject=WELCOME_SUBJECT,
            body=f"Hello {user.name},\n\nYour account is ready.\n",
        )


@shared_task(name="users.purge_deleted")
def purge_deleted() -> int:
    """Nightly: erase users soft-deleted more than `USERS_PURGE_AFTER_DAYS` ago."""
    with distributed_lock("users.purge_deleted", ttl=60, auto_extend=True):
        purged = service.purge_deleted(older_than_days=current_settings().users_purge_after_days)
    log.info("users.purged", users=purged)
    return purged


@shared_task(name="users.drop_cached")
def drop_cached(event: dict[str, Any]) -> None:
    """Any `user.*` event: drop the cached reads it makes stale (in every process: the
    cache is Redis only). Idempotent by nature; a Redis error retries."""
    invalidate("users", "stats")
