"""The in-process flag cache and its invalidation over Redis pub/sub.

Every process keeps the flags in memory. A change publishes on `{prefix}flags`; a
background subscriber (a greenlet under gevent) clears the cache on every message, so the
next evaluation reloads from PostgreSQL: a change is seen everywhere within moments. If a
message is lost (Redis restarting), the cache still expires after `MAX_AGE_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from flask import Flask, current_app

from myapp.core.logging import get_logger
from myapp.flags.models import FlagRules

log = get_logger(__name__)
MAX_AGE_SECONDS = 30.0
_EXTENSION = "myapp.flag_cache"


@dataclass(frozen=True, slots=True)
class FlagState:
    """What evaluation needs of a flag."""

    key: str
    enabled: bool
    rules: FlagRules


class FlagCache:
    """Flags by key, reloaded when invalidated or too old."""

    def __init__(self, redis_client: Any, channel: str) -> None:
        self._redis = redis_client
        self.channel = channel
        self._lock = threading.Lock()
        self._flags: dict[str, FlagState] | None = None
        self._loaded_at = 0.0
        self._subscriber: threading.Thread | None = None

    def get(self, load: Callable[[], dict[str, FlagState]]) -> dict[str, FlagState]:
        """The flags, loading them with `load` when the cache is empty or stale."""
        self._ensure_subscriber()
        with self._lock:
            fresh = time.monotonic() - self._loaded_at < MAX_AGE_SECONDS
            if self._flags is None or not fresh:
                self._flags, self._loaded_at = load(), time.monotonic()
            return self._flags

    def clear(self) -> None:
        """Forget everything; the next `get` reloads."""
        with self._lock:
            self._flags = None

    def publish_change(self) -> None:
        """Tell every process (this one included) to reload."""
        self.clear()
        try:
            self._redis.publish(self.channel, "changed")
        except redis.exceptions.RedisError:
            log.warning("flags.publish_failed", max_staleness_s=MAX_AGE_SECONDS)

    def _ensure_subscriber(self) -> None:
        # Started on first use, i.e. after gunicorn forked this worker.
        if self._subscriber is None or not self._subscriber.is_alive():
            self._subscriber = threading.Thread(
                target=self._listen, name="flags-subscriber", daemon=True
            )
            self._subscriber.start()

    def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.clear()  # anything published while we were not listening
                backoff = 0.5
                while True:
                    if pubsub.get_message(timeout=1.0):
                        self.clear()
            except redis.exceptions.RedisError:
                log.warning("flags.subscriber_reconnecting", in_s=backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)


def init_flag_cache(app: Flask, redis_client: Any, prefix: str) -> None:
    """Give `app` its flag cache, invalidated over `{prefix}flags`."""
    app.extensions[_EXTENSION] = FlagCache(redis_client, channel=f"{prefix}flags")


def flag_cache() -> FlagCache:
    """The current app's flag cache."""
    return current_app.extensions[_EXTENSION]
