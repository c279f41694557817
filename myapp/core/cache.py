"""Read-through cache on Redis with single-flight, stale-while-revalidate and invalidation.

`cached_value(ns, key, compute, ttl=...)` returns the value kept under
`{app}:{env}:cache:<ns>:<key>`, computing it on a miss. flask-caching (also set up, for
plain memoization) has no stampede guard; this does:

- **Single-flight.** On a miss, one caller takes a fill lock (`SET NX` with a timeout) and
  computes; the others poll for its result for up to `wait` seconds (then compute
  themselves). A value past its freshness (`ttl`, with ±10% jitter so keys written together
  do not expire together) stays for as long again as *stale*: one caller refreshes it while
  the others are served the stale value at once.
- **Invalidation.** `invalidate(ns, key)` deletes the value and any fill in progress; a fill
  that began before the invalidation cannot write its (possibly old) result afterwards (the
  write checks, in Lua, that its fill lock is still there). Domains invalidate from their
  event subscribers (`users.drop_cached` on `user.*`), so every process sees the change as
  soon as the event is handled: there is no in-process layer to go stale.
- **Redis down.** Reads compute from the source (PostgreSQL), with a warning and
  `cache_errors_total`; nothing fails because the cache is away.
"""

from __future__ import annotations

import functools
import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError

from myapp.core.logging import get_logger
from myapp.core.metrics import app_counter

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
log = get_logger(__name__)
_EXTENSION = "myapp.cache"

# Write the value only if this fill still owns the fill lock (no invalidation since).
_FILL = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
"""


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class CacheStore:
    """The cache's Redis client, key prefix and metrics."""

    client: Redis
    prefix: str
    enabled: bool
    requests: Any
    recomputes: Any
    errors: Any
    fill_seconds: float = 10.0

    def key(self, ns: str, key: str) -> str:
        """`{app}:{env}:cache:<ns>:<key>`."""
        return f"{self.prefix}cache:{ns}:{key}"


def cache_store() -> CacheStore:
    """The current app's cache."""
    return current_app.extensions[_EXTENSION]


def _recompute(store: CacheStore, ns: str, compute: Callable[[], T]) -> T:
    store.recomputes.labels(ns).inc()
    return compute()


def _fill(
    store: CacheStore, ns: str, key: str, token: str, compute: Callable[[], T], ttl: float
) -> T:
    value = _recompute(store, ns, compute)
    fresh = ttl * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret
    payload = json.dumps({"v": value, "fresh_until": time.time() + fresh}, default=str)
    name = store.key(ns, key)
    store.client.eval(_FILL, 2, name, f"{name}:fill", token, payload, int(fresh * 2 * 1000))
    return value


def cached_value(
    ns: str, key: str, compute: Callable[[], T], *, ttl: float, wait: float = 2.0
) -> T:
    """The cached value of `compute()` (JSON-serialisable), computed once per expiry."""
    store = cache_store()
    if not store.enabled:
        return _recompute(store, ns, compute)
    name = store.key(ns, key)
    try:
        raw = store.client.get(name)
        if raw is not None:
            entry = json.loads(raw)
            if entry["fresh_until"] > time.time():
                store.requests.labels(ns, "hit").inc()
                return entry["v"]
            store.requests.labels(ns, "stale").inc()
            token = secrets.token_hex(8)
            if store.client.set(f"{name}:fill", token, nx=True, px=int(store.fill_seconds * 1000)):
                return _fill(store, ns, key, token, compute, ttl)
            return entry["v"]  # someone refreshes it: serve the stale value meanwhile
        store.requests.labels(ns, "miss").inc()
        token = secrets.token_hex(8)
        if store.client.set(f"{name}:fill", token, nx=True, px=int(store.fill_seconds * 1000)):
            # Another fill may have finished between our GET and our SET NX: look again.
            raw = store.client.get(name)
            if raw is not None:
                store.client.eval(_RELEASE, 1, f"{name}:fill", token)
                return json.loads(raw)["v"]
            return _fill(store, ns, key, token, compute, ttl)
        return _wait_for_fill(store, ns, name, compute, wait)
    except RedisError as error:
        store.errors.inc()
        log.warning("cache.unavailable", namespace=ns, error_type=type(error).__name__)
        return _recompute(store, ns, compute)


def cached(ns: str, *, ttl: float, key: Callable[..., str]) -> Callable[[F], F]:
    """Decorate a service read: its result is `cached_value(ns, key(*args, **kwargs), ...)`.

    @cached("users", ttl=60, key=lambda: "stats")
    def user_stats() -> dict: ...
    """

    def decorate(read: F) -> F:
        @functools.wraps(read)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return cached_value(ns, key(*args, **kwargs), lambda: read(*args, **kwargs), ttl=ttl)

        return wrapper  # type: ignore[return-value]

    return decorate


def _wait_for_fill(
    store: CacheStore, ns: str, name: str, compute: Callable[[], T], wait: float
) -> T:
    deadline = time.monotonic() + wait
    pause = 0.005
    while time.monotonic() < deadline:
        time.sleep(pause)
        raw = store.client.get(name)
        if raw is not None:
            return json.loads(raw)["v"]
        pause = min(pause * 2, 0.05)
    log.info("cache.fill_wait_expired", namespace=ns)
    return _recompute(store, ns, compute)


def invalidate(ns: str, *keys: str) -> None:
    """Drop cached values (and fills in progress) so the next read recomputes."""
    store = cache_store()
    names = [store.key(ns, key) for key in keys]
    try:
        store.client.delete(*names, *(f"{name}:fill" for name in names))
    except RedisError as error:
        store.errors.inc()
        log.warning("cache.invalidate_failed", namespace=ns, error_type=type(error).__name__)
        raise


def init_cache(app: Flask, client: Redis, prefix: str, *, enabled: bool = True) -> None:
    """Install the cache of `app` on `client` (the `CACHE_REDIS_URL` Redis); with
    `enabled=False` (`CACHE_ENABLED=false`) every read computes from the source."""
    app.extensions[_EXTENSION] = CacheStore(
        client=client,
        prefix=prefix,
        enabled=enabled,
        requests=app_counter(
            app, "cache_requests_total", "Cache reads by result", ("namespace", "result")
        ),
        recomputes=app_counter(
            app, "cache_recomputes_total", "Values computed from the source", ("namespace",)
        ),
        errors=app_counter(app, "cache_errors_total", "Cache operations that failed on Redis"),
    )
