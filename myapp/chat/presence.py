"""Who is online: one Redis hash per user, one field per connected socket.

`presence:user:<id>` holds, for each of the user's sockets (in any process), the time its
presence runs out; the key's TTL (`PRESENCE_TTL_SECONDS`) is renewed by every
`presence:heartbeat`. The user is online while the key exists. The last socket's
disconnect deletes it at once; a process that dies without disconnecting leaves fields
that run out, and the key expires a TTL after the last heartbeat. Each change is one
script (one round trip, atomic), and reports whether the user just came online or went
offline, so that rooms hear about it once.

Reading is one pipelined round trip for a whole member list. Redis down: everybody reads
as offline (a warning), the room itself still answers.
"""

from __future__ import annotations

import time

import redis.exceptions

from myapp.core.config import current_settings
from myapp.core.logging import get_logger
from myapp.core.redis import redis_client, redis_key

log = get_logger(__name__)

_PRUNE = """
local now = tonumber(ARGV[2])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if tonumber(fields[i + 1]) < now then redis.call('HDEL', KEYS[1], fields[i]) end
end
"""
#: ARGV: sid, now, ttl. Returns the user's live sockets before this one (0: came online).
_ARRIVE = (
    _PRUNE
    + """
local before = redis.call('HLEN', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return before
"""
)
#: ARGV: sid, now. Returns the user's live sockets after this one left (0: went offline).
_DEPART = (
    """redis.call('HDEL', KEYS[1], ARGV[1])
"""
    + _PRUNE
    + """
local left = redis.call('HLEN', KEYS[1])
if left == 0 then redis.call('DEL', KEYS[1]) end
return left
"""
)


def presence_key(user_id: str) -> str:
    """The key that exists while a user is online."""
    return redis_key("presence", "user", user_id)


def arrive(user_id: str, sid: str) -> bool:
    """A socket of the user connected, or beat: True when the user just came online.
    Raises when Redis is down."""
    ttl = current_settings().presence_ttl_seconds
    before = redis_client().eval(_ARRIVE, 1, presence_key(user_id), sid, time.time(), ttl)
    return int(before) == 0


def depart(user_id: str, sid: str) -> bool:
    """A socket of the user went away: True when that was their last one (now offline)."""
    try:
        left = redis_client().eval(_DEPART, 1, presence_key(user_id), sid, time.time())
    except redis.exceptions.RedisError as error:
        log.warning("presence.unavailable", error_type=type(error).__name__)
        return False  # the TTL ends it
    return int(left) == 0


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
