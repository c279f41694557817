"""Chat request and response bodies."""

from __future__ import annotations

import marshmallow as ma

from myapp.chat.models import Visibility
from myapp.core.api import Schema
from myapp.core.bodies import is_clean_text

NAME = ma.validate.Length(min=1, max=100)
MAX_BODY = 4000  # characters of a message


class RoomCreateSchema(Schema):
    """A new room."""

    name = ma.fields.String(required=True, validate=NAME)
    visibility = ma.fields.String(
        load_default=Visibility.PUBLIC.value,
        validate=ma.validate.OneOf([v.value for v in Visibility]),
    )


class RoomSchema(Schema):
    """A room, as one of its members sees it."""

    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    visibility = ma.fields.String(required=True)
    role = ma.fields.String(required=True, metadata={"description": "owner or member"})
    created_at = ma.fields.DateTime(required=True)
    last_message_at = ma.fields.DateTime(allow_none=True)
    unread_count = ma.fields.Integer(required=True)


class MemberAddSchema(Schema):
    """Who to add."""

    user_id = ma.fields.UUID(required=True)


class MemberSchema(Schema):
    """A member of a room."""

    user_id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    role = ma.fields.String(required=True)
    joined_at = ma.fields.DateTime(required=True)
    online = ma.fields.Boolean(required=True)


class HistoryArgs(Schema):
    """Cursor paging of a room's messages (by message id)."""

    before = ma.fields.UUID(metadata={"description": "Messages before this id"})
    after = ma.fields.UUID(metadata={"description": "Messages after this id (resync)"})
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=100))

    @ma.validates_schema
    def _one_cursor(self, data: dict, **_: object) -> None:
        if data.get("before") and data.get("after"):
            raise ma.ValidationError("Use `before` or `after`, not both.", "_schema")


class MessageSchema(Schema):
    """A stored message (`body` is null once deleted)."""

    id = ma.fields.UUID(required=True)
    room_id = ma.fields.UUID(required=True)
    sender_id = ma.fields.UUID(allow_none=True)
    client_msg_id = ma.fields.String(required=True)
    body = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime(required=True)
    deleted_at = ma.fields.DateTime(allow_none=True)


class ReadSchema(Schema):
    """The last message read."""

    message_id = ma.fields.UUID(required=True)


def present_message(message: object) -> dict:
    """A message as members see it (a deleted one keeps its place, not its text)."""
    return {
        "id": message.id,
        "room_id": message.room_id,
        "sender_id": message.sender_id,
        "client_msg_id": message.client_msg_id,
        "body": None if message.deleted_at else message.body,
        "created_at": message.created_at,
        "deleted_at": message.deleted_at,
    }


def _clean(text: str) -> bool:
    if not is_clean_text(text):
        raise ma.ValidationError("Text must not contain NUL or unpaired surrogates.")
    return True


class RoomRefSchema(Schema):
    """`chat:join`, `chat:leave`: which room."""

    room_id = ma.fields.UUID(required=True)


class SendSchema(Schema):
    """`chat:send`: a message for a room, with the client's own id for it."""

    room_id = ma.fields.UUID(required=True)
    client_msg_id = ma.fields.String(
        required=True, validate=[ma.validate.Length(min=1, max=64), _clean]
    )
    body = ma.fields.String(
        required=True, validate=[ma.validate.Length(min=1, max=MAX_BODY), _clean]
    )


class DeleteSchema(Schema):
    """`chat:delete`: which message."""

    message_id = ma.fields.UUID(required=True)


class LiveMessageSchema(Schema):
    """`chat:message`: a message just stored, as the room receives it."""

    id = ma.fields.UUID(required=True)
    room_id = ma.fields.UUID(required=True)
    sender_id = ma.fields.UUID(required=True)
    client_msg_id = ma.fields.String(required=True)
    body = ma.fields.String(required=True)
    created_at = ma.fields.DateTime(required=True)
