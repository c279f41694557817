"""Reading what was published to a Redis broker, in the order a worker would consume it."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis

from myapp.core.tasks import broker_queue_key


@dataclass(frozen=True)
class Published:
    """One Celery message: task name, keyword arguments, headers."""

    task: str
    kwargs: dict[str, Any]
    headers: dict[str, Any]


def published(broker_url: str, prefix: str, queue: str) -> list[Published]:
    """Messages waiting in `queue`, oldest first (kombu LPUSHes, workers pop the tail)."""
    client = redis.Redis.from_url(broker_url)
    raw = client.lrange(broker_queue_key(prefix, queue), 0, -1)
    client.close()
    messages = []
    for item in reversed(raw):
        envelope = json.loads(item)
        _, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        headers = envelope["headers"]
        messages.append(Published(task=headers["task"], kwargs=kwargs, headers=headers))
    return messages
