"""Redis clients: retries with exponential backoff and jitter, bounded socket waits, key prefix.

Creating a client opens no connection; the first command does.
"""

from __future__ import annotations

from flask import current_app
from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from myapp.settings import Settings


def create_redis(url: str, settings: Settings, *, decode_responses: bool = True) -> Redis:
    """A client for `url` with the resilience options from settings."""
    return Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
        health_check_interval=settings.redis_health_check_interval,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), settings.redis_max_retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def redis_client() -> Redis:
    """The application's Redis client (created by the app factory)."""
    return current_app.extensions["redis"]


def redis_key(*parts: str) -> str:
    """A namespaced key: `{app}:{env}:{area}:...`."""
    settings: Settings = current_app.extensions["settings"]
    return settings.redis_prefix + ":".join(parts)
