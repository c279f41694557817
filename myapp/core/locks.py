"""Distributed locks on Redis, with fencing tokens.

`distributed_lock(name)` takes redis-py's lock (a random token per holder, a TTL, release
and extend by compare-and-set in Lua, so a holder never frees someone else's lock) under
`{app}:{env}:lock:<name>`. Each successful acquisition also draws the next number of a
per-name counter: the **fencing token**. A lock alone cannot stop a holder that paused
(GC, a long request, a network stall) past its TTL from writing after the next holder
took over; the token can. Whatever a holder writes carries its token, and the store keeps
the highest token it accepted for that resource: `FencedResource.accept(token)` (a Lua
check-and-set in Redis) or, for a row, `UPDATE ... SET fence = :token WHERE fence < :token`.

`auto_extend=True` keeps a long holder's lock alive: a background thread (a greenlet under
gevent) extends it every third of its TTL until the block ends. If the holder's process
dies, nothing extends it and the TTL frees the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import LockError

from myapp.core.logging import get_logger
from myapp.core.redis import redis_client, redis_key

log = get_logger(__name__)

_ACCEPT = """
local highest = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if token < highest then return 0 end
redis.call('SET', KEYS[1], token)
return 1
"""


class LockNotAcquiredError(Exception):
    """Another holder has the lock (and `wait` ran out)."""


@dataclass(frozen=True, slots=True)
class Held:
    """What a holder gets: the lock's name and its fencing token."""

    name: str
    token: int


def _key(name: str, *suffix: str) -> str:
    return redis_key("lock", name, *suffix)


def is_held(name: str, *, client: Redis | None = None) -> bool:
    """Whether somebody holds lock `name` now (a live holder keeps extending it)."""
    return bool((client or redis_client()).exists(_key(name)))


@contextmanager
def distributed_lock(
    name: str,
    *,
    ttl: float = 30.0,
    wait: float = 0.0,
    auto_extend: bool = False,
    client: Redis | None = None,
) -> Iterator[Held]:
    """Hold lock `name` for the block; `LockNotAcquiredError` if it is not free within `wait` s."""
    redis = client or redis_client()
    lock = redis.lock(
        _key(name),
        timeout=ttl,
        blocking=wait > 0,
        blocking_timeout=wait or None,
        thread_local=False,  # the extender thread acts for the holder
    )
    if not lock.acquire():
        raise LockNotAcquiredError(name)
    held = Held(name=name, token=int(redis.incr(_key(name, "fence"))))
    stop = threading.Event()
    if auto_extend:
        threading.Thread(
            target=_keep_extending, args=(lock, ttl, stop), name=f"lock-{name}", daemon=True
        ).start()
    try:
        yield held
    finally:
        stop.set()
        try:
            lock.release()
        except LockError:  # expired and maybe taken by another: not ours to free
            log.warning("lock.expired_while_held", lock=name, token=held.token)


def _keep_extending(lock: object, ttl: float, stop: threading.Event) -> None:
    while not stop.wait(ttl / 3):
        try:
            lock.reacquire()  # the TTL starts again from now
        except LockError:
            log.warning("lock.lost", lock=lock.name)
            return


class FencedResource:
    """A resource that accepts writes only from the newest holder of its lock."""

    def __init__(self, name: str, client: Redis | None = None) -> None:
        self.key = redis_key("fence", name)
        self._client = client

    def accept(self, token: int) -> bool:
        """True (and remember `token`) unless a newer holder already wrote."""
        client = self._client or redis_client()
        return bool(client.eval(_ACCEPT, 1, self.key, token))
