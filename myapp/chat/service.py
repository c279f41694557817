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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.dialects.postgresql import insert

from myapp.chat import presence
from myapp.chat.models import MemberRole, Message, Room, RoomMember, Visibility
from myapp.core.context import Actor
from myapp.core.db import unit_of_work
from myapp.core.errors import AppError
from myapp.extensions import db
from myapp.users import service as users_service

MAX_PAGE = 100


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


def store_message(  # noqa: PLR0913 - the fields of one accepted message
    *,
    message_id: uuid.UUID,
    room_id: uuid.UUID,
    sender_id: uuid.UUID,
    client_msg_id: str,
    body: str,
    accepted_at: datetime,
) -> StoredMessage | None:
    """Worker: store an accepted message once; the message if this call stored it, None
    for a duplicate (same sender, room and `client_msg_id`: never stored or sent twice)."""
    with unit_of_work():
        stored = db.session.execute(
            insert(Message)
            .values(
                id=message_id,
                room_id=room_id,
                sender_id=sender_id,
                client_msg_id=client_msg_id,
                body=body,
                created_at=accepted_at,
            )
            .on_conflict_do_nothing(index_elements=["room_id", "sender_id", "client_msg_id"])
            .returning(Message.id)
        ).scalar_one_or_none()
        if stored is None:
            return None
        db.session.execute(
            update(Room)
            .where(Room.id == room_id)
            .values(
                last_message_at=func.greatest(
                    func.coalesce(Room.last_message_at, accepted_at), accepted_at
                )
            )
        )
    return StoredMessage(
        id=message_id,
        room_id=room_id,
        sender_id=sender_id,
        client_msg_id=client_msg_id,
        body=body,
        created_at=accepted_at,
    )
