"""Chat use cases: rooms and membership, cursor history, read state, storing messages.

Membership decides everything: only members read a room's history or mark it read
(non-members get 403, like the socket's `FORBIDDEN`). Public rooms are joined freely;
private ones only through a room owner adding the user.

A message's id is a ULID given when the message is accepted (before it is queued), so ids
follow acceptance order and history pages by id. `store_message` is what the worker runs:
`INSERT ... ON CONFLICT (room_id, sender_id, client_msg_id) DO NOTHING`, so a message sent
again with the same `clientMsgId` (a lost ACK, a reconnect) is stored once, ever; it tells
the caller whether this call stored it (only then is it broadcast).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError

from myapp.audit import service as audit
from myapp.chat import inbox, presence
from myapp.chat.inbox import Accepted
from myapp.chat.models import MemberRole, Message, Room, RoomMember, Visibility
from myapp.core.context import Actor
from myapp.core.db import unit_of_work
from myapp.core.errors import AppError
from myapp.core.locks import distributed_lock
from myapp.core.logging import get_logger
from myapp.core.permissions import CHAT_MODERATE
from myapp.extensions import db
from myapp.users import service as users_service

log = get_logger(__name__)
MAX_PAGE = 100
_BATCH = 100  # waiting messages stored per transaction
#: A worker waits this long for another to finish a room, then retries later (the slot
#: is free meanwhile); a worker that died holding a room frees it after `_LOCK_TTL`.
_LOCK_WAIT, _LOCK_TTL = 2.0, 10.0


@dataclass(frozen=True, slots=True)
class RoomView:
    """A room as its member sees it."""

    id: uuid.UUID
    name: str
    visibility: str
    role: str
    created_at: datetime
    last_message_at: datetime | None
    unread_count: int


@dataclass(frozen=True, slots=True)
class MemberView:
    """A member of a room."""

    user_id: uuid.UUID
    name: str
    role: str
    joined_at: datetime
    online: bool


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message just stored: what the room is told (`chat:message`)."""

    id: uuid.UUID
    room_id: uuid.UUID
    sender_id: uuid.UUID
    client_msg_id: str
    body: str
    created_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Messages in id order, and whether more lie beyond them in the paging direction."""

    items: list[Message]
    has_more: bool


def _user_id(actor: Actor) -> uuid.UUID:
    return uuid.UUID(actor.id)


def _room(room_id: uuid.UUID) -> Room:
    room = db.session.get(Room, room_id)
    if room is None:
        raise AppError("NOT_FOUND", "No such room.")
    return room


def _membership(room_id: uuid.UUID, user_id: uuid.UUID) -> RoomMember | None:
    return db.session.get(RoomMember, (room_id, user_id))


def require_member(*, room_id: uuid.UUID, actor: Actor) -> RoomMember:
    """The caller's membership; 404 for an unknown room, 403 for a non-member."""
    _room(room_id)
    member = _membership(room_id, _user_id(actor))
    if member is None:
        raise AppError("FORBIDDEN", "You are not a member of this room.")
    return member


def _unread(user_id: uuid.UUID) -> Any:
    """Messages of others after the member's read cursor, not deleted (a correlated count)."""
    return (
        select(func.count(Message.id))
        .where(
            Message.room_id == RoomMember.room_id,
            Message.deleted_at.is_(None),
            Message.sender_id.is_distinct_from(user_id),
            (RoomMember.last_read_id.is_(None)) | (Message.id > RoomMember.last_read_id),
        )
        .scalar_subquery()
    )


def _views(user_id: uuid.UUID, *room_ids: uuid.UUID) -> list[RoomView]:
    statement = (
        select(Room, RoomMember.role, _unread(user_id).label("unread"))
        .join(RoomMember, RoomMember.room_id == Room.id)
        .where(RoomMember.user_id == user_id)
        .order_by(func.coalesce(Room.last_message_at, Room.created_at).desc(), Room.id)
    )
    if room_ids:
        statement = statement.where(Room.id.in_(room_ids))
    return [
        RoomView(
            id=room.id,
            name=room.name,
            visibility=room.visibility,
            role=role,
            created_at=room.created_at,
            last_message_at=room.last_message_at,
            unread_count=unread,
        )
        for room, role, unread in db.session.execute(statement)
    ]


def list_rooms(*, actor: Actor) -> list[RoomView]:
    """The caller's rooms, most recently active first, with their unread counts."""
    return _views(_user_id(actor))


def create_room(*, name: str, visibility: str, actor: Actor) -> RoomView:
    """A new room; its creator is its first member and owner."""
    user_id = _user_id(actor)
    with unit_of_work():
        room = Room(name=name, visibility=visibility, created_by=user_id)
        db.session.add(room)
        db.session.flush()
        db.session.add(RoomMember(room_id=room.id, user_id=user_id, role=MemberRole.OWNER))
    return _views(user_id, room.id)[0]


def join_room(*, room_id: uuid.UUID, actor: Actor) -> RoomView:
    """Join a public room (a member already: nothing changes); private rooms: 403."""
    user_id = _user_id(actor)
    with unit_of_work():
        room = _room(room_id)
        if _membership(room_id, user_id) is None:
            if room.visibility != Visibility.PUBLIC:
                raise AppError("FORBIDDEN", "This room is private: a room owner adds members.")
            db.session.execute(
                insert(RoomMember)
                .values(room_id=room_id, user_id=user_id, role=MemberRole.MEMBER)
                .on_conflict_do_nothing()
            )
    return _views(user_id, room_id)[0]


def leave_room(*, room_id: uuid.UUID, actor: Actor) -> None:
    """Leave a room (not a member: nothing to do)."""
    with unit_of_work():
        _room(room_id)
        member = _membership(room_id, _user_id(actor))
        if member is not None:
            db.session.delete(member)


def add_member(*, room_id: uuid.UUID, user_id: uuid.UUID, actor: Actor) -> MemberView:
    """A room owner adds a user (the way into a private room); already there: unchanged."""
    with unit_of_work():
        if require_member(room_id=room_id, actor=actor).role != MemberRole.OWNER:
            raise AppError("FORBIDDEN", "Only a room owner adds members.")
        if users_service.get_active(user_id=user_id) is None:
            raise AppError("NOT_FOUND", "No such user.")
        db.session.execute(
            insert(RoomMember)
            .values(room_id=room_id, user_id=user_id, role=MemberRole.MEMBER)
            .on_conflict_do_nothing()
        )
    return next(m for m in list_members(room_id=room_id, actor=actor) if m.user_id == user_id)


def list_members(*, room_id: uuid.UUID, actor: Actor) -> list[MemberView]:
    """A room's members (members only), with whether each is online now."""
    require_member(room_id=room_id, actor=actor)
    members = list(
        db.session.execute(
            select(RoomMember)
            .where(RoomMember.room_id == room_id)
            .order_by(RoomMember.joined_at, RoomMember.user_id)
        ).scalars()
    )
    names = users_service.names_of(user_ids=[member.user_id for member in members])
    online = presence.online_among([str(member.user_id) for member in members])
    return [
        MemberView(
            user_id=member.user_id,
            name=names.get(member.user_id, ""),
            role=member.role,
            joined_at=member.joined_at,
            online=str(member.user_id) in online,
        )
        for member in members
        if member.user_id in names  # a member deleted meanwhile is not listed
    ]


def history(
    *,
    room_id: uuid.UUID,
    actor: Actor,
    before: uuid.UUID | None = None,
    after: uuid.UUID | None = None,
    limit: int = 50,
) -> HistoryPage:
    """Messages by id: the `limit` just before `before`, just after `after`, or the latest.

    Pages never overlap and never skip: ids are unique and ordered, and a message becomes
    visible only once every message of its room with a lower id is (see the send path).
    """
    require_member(room_id=room_id, actor=actor)
    limit = max(1, min(limit, MAX_PAGE))
    statement = select(Message).where(Message.room_id == room_id)
    if after is not None:
        statement = statement.where(Message.id > after).order_by(Message.id)
    else:
        if before is not None:
            statement = statement.where(Message.id < before)
        statement = statement.order_by(Message.id.desc())
    rows = list(db.session.execute(statement.limit(limit + 1)).scalars())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if after is None:
        rows.reverse()
    return HistoryPage(items=rows, has_more=has_more)


def mark_read(*, room_id: uuid.UUID, message_id: uuid.UUID, actor: Actor) -> None:
    """Move the caller's read cursor to `message_id`; never backwards."""
    with unit_of_work():
        require_member(room_id=room_id, actor=actor)
        known = db.session.scalar(
            select(exists().where(Message.id == message_id, Message.room_id == room_id))
        )
        if not known:
            raise AppError("NOT_FOUND", "No such message in this room.")
        db.session.execute(
            update(RoomMember)
            .where(
                RoomMember.room_id == room_id,
                RoomMember.user_id == _user_id(actor),
                (RoomMember.last_read_id.is_(None)) | (RoomMember.last_read_id < message_id),
            )
            .values(last_read_id=message_id)
        )


def store_messages(messages: list[Accepted]) -> list[StoredMessage]:
    """Worker: store accepted messages (one transaction); those this call stored, in id
    order. A message whose `(room, sender, client_msg_id)` is already stored (a retry, a
    reconnect) is skipped: stored once, ever, and never announced twice."""
    if not messages:
        return []
    by_id = {message.id: message for message in messages}
    with unit_of_work():
        inserted = set(
            db.session.execute(
                insert(Message)
                .values(
                    [
                        {
                            "id": m.id,
                            "room_id": m.room_id,
                            "sender_id": m.sender_id,
                            "client_msg_id": m.client_msg_id,
                            "body": m.body,
                            "created_at": m.accepted_at,
                        }
                        for m in messages
                    ]
                )
                .on_conflict_do_nothing(index_elements=["room_id", "sender_id", "client_msg_id"])
                .returning(Message.id)
            ).scalars()
        )
        if inserted:
            newest = max(by_id[message_id].accepted_at for message_id in inserted)
            room_id = messages[0].room_id
            db.session.execute(
                update(Room)
                .where(Room.id == room_id)
                .values(
                    last_message_at=func.greatest(
                        func.coalesce(Room.last_message_at, newest), newest
                    )
                )
            )
    return [
        StoredMessage(
            id=m.id,
            room_id=m.room_id,
            sender_id=m.sender_id,
            client_msg_id=m.client_msg_id,
            body=m.body,
            created_at=m.accepted_at,
        )
        for m in sorted(messages, key=lambda m: m.id)
        if m.id in inserted
    ]


def persist_waiting(*, room_id: uuid.UUID, announce: Callable[[list[StoredMessage]], None]) -> int:
    """Worker: store a room's waiting messages, oldest first, and `announce` each batch
    once committed; how many were stored. One worker at a time per room (a lock), so a
    room's messages are stored, and announced, in id order."""
    stored = 0
    with distributed_lock(f"chat:room:{room_id}", ttl=_LOCK_TTL, wait=_LOCK_WAIT, auto_extend=True):
        while batch := inbox.oldest(room_id, _BATCH):
            new = _store_or_drop(batch)
            inbox.done(room_id, batch)
            if new:
                announce(new)
            stored += len(new)
    return stored


def _store_or_drop(batch: list[Accepted]) -> list[StoredMessage]:
    """Store a batch; if one message can never be stored (its room or sender was deleted
    meanwhile), store the others one by one and drop that one, so a room's inbox never
    stays blocked behind it."""
    try:
        return store_messages(batch)
    except (IntegrityError, DataError):
        pass
    stored: list[StoredMessage] = []
    for message in batch:
        try:
            stored += store_messages([message])
        except (IntegrityError, DataError) as error:
            log.warning(
                "chat.message_dropped",
                room_id=str(message.room_id),
                message_id=str(message.id),
                error_type=type(error).__name__,
            )
    return stored


def delete_message(*, message_id: uuid.UUID, actor: Actor) -> StoredMessage:
    """Moderator: soft-delete a message (it keeps its place in history, not its text)."""
    if not actor.can(CHAT_MODERATE):
        raise AppError("FORBIDDEN", f"Requires permission {CHAT_MODERATE}.")
    with unit_of_work():
        message = db.session.get(Message, message_id)
        if message is None:
            raise AppError("NOT_FOUND", "No such message.")
        if message.deleted_at is None:
            message.deleted_at = datetime.now(UTC)
        audit.record(
            action=audit.AuditAction.DELETE,
            target_type="message",
            target_id=message.id,
            actor=actor,
        )
    return StoredMessage(
        id=message.id,
        room_id=message.room_id,
        sender_id=message.sender_id,
        client_msg_id=message.client_msg_id,
        body=message.body,
        created_at=message.created_at,
        deleted_at=message.deleted_at,
    )


def room_ids_of(*, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The rooms a user belongs to (who hears about their presence)."""
    return list(
        db.session.execute(
            select(RoomMember.room_id).where(RoomMember.user_id == user_id)
        ).scalars()
    )


def is_member(*, room_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Whether the user belongs to the room (unknown rooms: False)."""
    return _membership(room_id, user_id) is not None
