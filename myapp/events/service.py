"""What other domains (and operators) use to reach a user's event stream."""

from __future__ import annotations

from typing import Any

from myapp.core import streams

NOTIFICATION = "notification"


def notify(*, user_id: Any, message: str, data: dict[str, Any] | None = None) -> str | None:
    """Send a `notification` event to a user's open streams (and keep it for resuming);
    its id, or None when Redis is down (logged and counted: notifications are best effort)."""
    return streams.publish(str(user_id), NOTIFICATION, {"message": message, **(data or {})})
