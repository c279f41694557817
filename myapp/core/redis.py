"""Redis clients: retries with exponential backoff and jitter, bounded socket waits, key prefix.

Creating a client opens no connection; the first command does. `redis_client()` is the
application's Redis (guards, idempotency, denylist, flags, Socket.IO); `broker_redis()`
the Celery broker's (the same client when both URLs are equal).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app
from redis import BlockingConnectionPool, Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from myapp.core.config import current_settings
from myapp.settings import Settings

_CLIENT = "myapp.redis"
_BROKER = "myapp.broker_redis"


def create_redis(
    url: str,
    settings: Settings,
    *,
    decode_responses: bool = True,
    retries: int | None = None,
    max_connections: int | None = None,
) -> Redis:
    """A client for `url` with the resilience options from settings.

    `retries` overrides `REDIS_MAX_RETRIES` (a cache read retries nothing: it falls back to
    the database). `max_connections` bounds the pool: callers beyond it wait for a free
    connection (up to the socket timeout) instead of each opening one, so a burst of
    greenlets does not become a burst of connects.
    """
    attempts = settings.redis_max_retries if retries is None else retries
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "health_check_interval": settings.redis_health_check_interval,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), attempts),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if max_connections is None:
        return Redis.from_url(url, **options)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=settings.redis_socket_timeout, **options
    )
    return Redis(connection_pool=pool)


def init_redis(app: Flask, settings: Settings) -> Redis:
    """Create (not connect) the app's Redis client and the broker's; the app's.

    Both pools are bounded (`REDIS_MAX_CONNECTIONS` per process) and make callers beyond the
    bound wait for a free connection: redis-py's default pool would refuse the 101st
    concurrent caller at once, and a burst of greenlets (a reconnect storm of event
    streams) would see Redis "down" while it is only busy.
    """
    limit = settings.redis_max_connections
    client = create_redis(settings.redis_url, settings, max_connections=limit)
    app.extensions[_CLIENT] = client
    if settings.broker_url == settings.redis_url:
        app.extensions[_BROKER] = client
    elif settings.broker_is_redis:
        app.extensions[_BROKER] = create_redis(settings.broker_url, settings, max_connections=limit)
    return client


def redis_client() -> Redis:
    """The application's Redis client."""
    return current_app.extensions[_CLIENT]


def broker_redis() -> Redis:
    """The Celery broker's Redis client (KeyError when the broker is RabbitMQ)."""
    return current_app.extensions[_BROKER]


def redis_key(*parts: str) -> str:
    """A namespaced key: `{app}:{env}:{area}:...`."""
    return current_settings().redis_prefix + ":".join(parts)
