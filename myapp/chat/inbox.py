"""Accepted messages waiting to be stored: one Redis Stream per room, in acceptance order.

Accepting a message is one script (one round trip, atomic): it counts the sender's
`CHAT_SEND_LIMIT` window and, within it, appends the message to its room's inbox. Redis
gives the entry an id (`<ms>-<seq>`) greater than every earlier entry of that room, and
the message id is made from it (milliseconds, sequence, random bits: a ULID-ordered
128-bit id), so within a room, id order is acceptance order.

The worker stores a room's inbox from its oldest entry on, and an entry leaves the inbox
only once it is committed. So whenever a message is visible in history, every message of
its room with a lower id already is: a client that resyncs with `after=` skips nothing.

`{app}:{env}:chat:inboxes` indexes the rooms with waiting entries (score: the oldest
entry's millisecond), so that a periodic sweep finds inboxes whose task was lost.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from myapp.core.config import current_settings
from myapp.core.guards import parse_budget
from myapp.core.redis import redis_client, redis_key
from myapp.core.streams import stream_id_key

_INBOX_TTL = 86_400  # an idle inbox keeps its last id this long (ids never go back)
_NOISE_BITS = 56
_SEQUENCE_BITS = 24

#: KEYS: sender's window counter, room inbox, inbox index. ARGV: window seconds, limit,
#: entry, room id, inbox TTL. Returns {1, entry id} or {0, count} when over the limit.
_ACCEPT = """
local used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]) + 1) end
if used > tonumber(ARGV[2]) then return {0, tostring(used)} end
local id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], 'NX', string.match(id, '^(%d+)'), ARGV[4])
return {1, id}
"""

#: KEYS: room inbox, inbox index. ARGV: room id, entry ids. Removes them; the room leaves
#: the index once its inbox is empty, else its score becomes the oldest entry's time.
_DONE = """
for i = 2, #ARGV do redis.call('XDEL', KEYS[1], ARGV[i]) end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #oldest == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], string.match(oldest[1][1], '^(%d+)'), ARGV[1])
end
return #oldest
"""


class OverLimitError(Exception):
    """The sender spent their `CHAT_SEND_LIMIT` for this window."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message accepted for a room, not necessarily stored yet."""

    entry_id: str  # its place in the inbox
    id: uuid.UUID
    room_id: uuid.UUID
    sender_id: uuid.UUID
    client_msg_id: str
    body: str
    accepted_at: datetime


def _inbox(room_id: uuid.UUID) -> str:
    return redis_key("chat", "inbox", str(room_id))


def _index() -> str:
    return redis_key("chat", "inboxes")


def message_id(entry_id: str, noise: int) -> uuid.UUID:
    """The message id of inbox entry `entry_id`: ordered as the entries are."""
    millis, sequence = stream_id_key(entry_id)
    sequence = min(sequence, (1 << _SEQUENCE_BITS) - 1)
    return uuid.UUID(int=(millis << 80) | (sequence << _NOISE_BITS) | noise)


def accept(*, room_id: uuid.UUID, sender_id: uuid.UUID, client_msg_id: str, body: str) -> str:
    """Queue a message for its room; the inbox entry id. `OverLimitError` over the
    sender's budget; a Redis error when Redis is down (nothing was queued then)."""
    budget = parse_budget(current_settings().chat_send_limit)
    window = int(datetime.now(UTC).timestamp()) // budget.seconds
    entry = json.dumps(
        {
            "s": str(sender_id),
            "c": client_msg_id,
            "b": body,
            "n": secrets.randbits(_NOISE_BITS),
        }
    )
    counter = redis_key("ratelimit", "chat", "send", str(sender_id), str(window))
    ok, value = redis_client().eval(
        _ACCEPT,
        3,
        counter,
        _inbox(room_id),
        _index(),
        budget.seconds,
        budget.amount,
        entry,
        str(room_id),
        _INBOX_TTL,
    )
    if not int(ok):
        raise OverLimitError
    return str(value)


def withdraw(room_id: uuid.UUID, entry_id: str) -> None:
    """Take back an entry whose task could not be queued (the client is told to retry)."""
    redis_client().eval(_DONE, 2, _inbox(room_id), _index(), str(room_id), entry_id)


def _decode(room_id: uuid.UUID, entry_id: str, fields: dict[str, str]) -> Accepted:
    entry = json.loads(fields["m"])
    millis, _ = stream_id_key(entry_id)
    return Accepted(
        entry_id=entry_id,
        id=message_id(entry_id, int(entry["n"])),
        room_id=room_id,
        sender_id=uuid.UUID(entry["s"]),
        client_msg_id=entry["c"],
        body=entry["b"],
        accepted_at=datetime.fromtimestamp(millis / 1000, UTC),
    )


def oldest(room_id: uuid.UUID, count: int) -> list[Accepted]:
    """The room's oldest waiting messages, in id order."""
    entries = redis_client().xrange(_inbox(room_id), count=count)
    return [_decode(room_id, entry_id, fields) for entry_id, fields in entries]


def done(room_id: uuid.UUID, messages: list[Accepted]) -> None:
    """These messages are stored: they leave the inbox."""
    if messages:
        ids = [message.entry_id for message in messages]
        redis_client().eval(_DONE, 2, _inbox(room_id), _index(), str(room_id), *ids)


def waiting_rooms(older_than_ms: int) -> list[uuid.UUID]:
    """Rooms whose oldest waiting message was accepted before `older_than_ms`."""
    rooms = redis_client().zrangebyscore(_index(), "-inf", older_than_ms)
    return [uuid.UUID(room) for room in rooms]
