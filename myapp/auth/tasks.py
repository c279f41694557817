"""Auth's background work: subscribers to `auth.*` events."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from myapp.core.events import Event
from myapp.core.streams import SESSION_ENDED, stream_hub


@shared_task(name="auth.end_streams")
def end_streams(event: dict[str, Any]) -> None:
    """`auth.sessions_ended` -> a control entry on the user's event stream, which ends the
    open streams of those logins (in every web process). Harmless if repeated; a Redis
    error retries."""
    received = Event.from_message(event)
    stream_hub().publish(
        received.aggregate_id, SESSION_ENDED, {"sessionIds": received.payload["sessionIds"]}
    )
