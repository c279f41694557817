"""Rooms, their members (with a read cursor) and their messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from myapp.core.db import Model, TimestampMixin
from myapp.extensions import db


class Visibility(StrEnum):
    """Who may join: anybody (public) or those a room owner adds (private)."""

    PUBLIC = "public"
    PRIVATE = "private"


class MemberRole(StrEnum):
    """What a member may do: owners add members."""

    OWNER = "owner"
    MEMBER = "member"


class Room(Model, TimestampMixin):
    """A chat room."""

    __tablename__ = "rooms"
    __table_args__ = (CheckConstraint("visibility IN ('public', 'private')", name="visibility"),)

    name: Mapped[str] = mapped_column(String(100))
    visibility: Mapped[str] = mapped_column(String(16), default=Visibility.PUBLIC)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RoomMember(db.Model):
    """A user in a room, with the id of the last message they read."""

    __tablename__ = "room_members"
    __table_args__ = (CheckConstraint("role IN ('owner', 'member')", name="role"),)

    room_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16), default=MemberRole.MEMBER)
    joined_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    last_read_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class Message(Model):
    """A message. Its id (a ULID) is given when the message is accepted, so ids follow
    acceptance order; `(room, sender, client_msg_id)` is unique: a retry is stored once."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("room_id", "sender_id", "client_msg_id", name="client_msg"),
        Index("ix_messages_room_id_id", "room_id", "id"),
    )

    room_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("rooms.id", ondelete="CASCADE"))
    sender_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )
    client_msg_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
