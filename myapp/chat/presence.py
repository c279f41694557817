"""Who is online: a key per user in Redis, refreshed by their sockets' heartbeats.

The socket layer sets `presence:user:<id>` with a TTL when a user's socket connects or
sends `presence:heartbeat`, and removes it when the user's last socket disconnects; a
process that dies without disconnecting is cleaned up by the TTL. Reading it is one
pipelined round trip for a whole member list. Redis down: everybody reads as offline (a
warning), the room itself still answers.
"""

from __future__ import annotations

import redis.exceptions

from myapp.core.logging import get_logger
from myapp.core.redis import redis_client, redis_key

log = get_logger(__name__)


def presence_key(user_id: str) -> str:
    """The key that exists while a user is online."""
    return redis_key("presence", "user", user_id)


def online_among(user_ids: list[str]) -> set[str]:
    """The users of `user_ids` online now."""
    if not user_ids:
        return set()
    pipe = redis_client().pipeline(transaction=False)
    for user_id in user_ids:
        pipe.exists(presence_key(user_id))
    try:
        found = pipe.execute()
    except redis.exceptions.RedisError as error:
        log.warning("presence.unavailable", error_type=type(error).__name__)
        return set()
    return {user_id for user_id, there in zip(user_ids, found, strict=True) if there}
