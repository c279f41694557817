"""`/v1/rooms`: rooms, membership, cursor history and read state (the live part is the
Socket.IO namespace `/chat`)."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from myapp.chat import service
from myapp.chat.schemas import (
    HistoryArgs,
    MemberAddSchema,
    MemberSchema,
    MessageSchema,
    ReadSchema,
    RoomCreateSchema,
    RoomSchema,
    present_message,
)
from myapp.core.api import Blueprint
from myapp.core.context import current_actor
from myapp.core.paging import Page
from myapp.core.pipeline import feature_required

blp = Blueprint("chat", __name__, url_prefix="/v1/rooms", description="Chat rooms")


@blp.route("")
class Rooms(MethodView):
    """The caller's rooms."""

    @feature_required("chat")
    @blp.auth()
    @blp.response(200, RoomSchema(many=True))
    def get(self) -> list:
        """Rooms you belong to, most recently active first, with `unreadCount`."""
        return service.list_rooms(actor=current_actor())

    @feature_required("chat")
    @blp.auth()
    @blp.arguments(RoomCreateSchema)
    @blp.response(201, RoomSchema)
    def post(self, body: dict) -> object:
        """Create a room (public unless said otherwise); you become its owner."""
        return service.create_room(actor=current_actor(), **body)


@blp.route("/<uuid:room_id>/join")
class Join(MethodView):
    """Joining."""

    @feature_required("chat")
    @blp.auth()
    @blp.response(200, RoomSchema)
    @blp.alt_response(403, response="FORBIDDEN", description="A private room")
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, room_id: uuid.UUID) -> object:
        """Join a public room (private rooms: a room owner adds you)."""
        return service.join_room(room_id=room_id, actor=current_actor())


@blp.route("/<uuid:room_id>/leave")
class Leave(MethodView):
    """Leaving."""

    @feature_required("chat")
    @blp.auth()
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, room_id: uuid.UUID) -> None:
        """Leave a room."""
        service.leave_room(room_id=room_id, actor=current_actor())


@blp.route("/<uuid:room_id>/members")
class Members(MethodView):
    """A room's members."""

    @feature_required("chat")
    @blp.auth()
    @blp.response(200, MemberSchema(many=True))
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, room_id: uuid.UUID) -> list:
        """Members, with whether each is online (members only)."""
        return service.list_members(room_id=room_id, actor=current_actor())

    @feature_required("chat")
    @blp.auth()
    @blp.arguments(MemberAddSchema)
    @blp.response(201, MemberSchema)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, body: dict, room_id: uuid.UUID) -> object:
        """Add a user (room owners only): the way into a private room."""
        return service.add_member(room_id=room_id, user_id=body["user_id"], actor=current_actor())


@blp.route("/<uuid:room_id>/messages")
class Messages(MethodView):
    """A room's history."""

    @feature_required("chat")
    @blp.auth()
    @blp.arguments(HistoryArgs, location="query")
    @blp.response(200, MessageSchema(many=True), page="cursor")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args: dict, room_id: uuid.UUID) -> Page:
        """Messages by id: the latest, or `limit` before `before`, or after `after`.

        `nextCursor` continues in the same direction (pass it as `before`, or as `after`
        when you paged with `after`); after a reconnect, resync with `after=` the last id
        you saw.
        """
        page = service.history(room_id=room_id, actor=current_actor(), **args)
        edge = None
        if page.has_more and page.items:
            edge = page.items[-1 if args.get("after") else 0].id
        return Page(
            items=[present_message(m) for m in page.items],
            meta={"next_cursor": str(edge) if edge else None, "has_more": page.has_more},
        )


@blp.route("/<uuid:room_id>/read")
class Read(MethodView):
    """Read state."""

    @feature_required("chat")
    @blp.auth()
    @blp.arguments(ReadSchema)
    @blp.response(204)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, body: dict, room_id: uuid.UUID) -> None:
        """Everything up to `messageId` is read (the cursor never moves backwards)."""
        service.mark_read(room_id=room_id, message_id=body["message_id"], actor=current_actor())
