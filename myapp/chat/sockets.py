"""The `/chat` Socket.IO namespace: connect, join, leave, send, delete, heartbeat.

- **connect** takes the access token from `auth: {token}` or `Authorization: Bearer` and
  checks it with the same code as a REST request (signature and claims, denylist, user,
  token version and login in one statement); then the `chat` flag. A refusal carries
  `{code, message}` (the client's `connect_error` has it as `data`). Redis down: refused
  with `SERVICE_UNAVAILABLE` (presence and fan-out need it).
- **events** answer through their ACK: `{ok: true}` or `{ok: false, error: {code,
  message}}`; `chat:send` answers `{clientMsgId, status: "ACCEPTED"}` once the message is
  queued, or `{clientMsgId, status: "FAILED", error}`. Each user has `CHAT_SEND_LIMIT` for
  sends and `CHAT_EVENT_LIMIT` for the other events.
- **sending** validates, checks membership, appends the message to its room's inbox (one
  Redis script: the send budget and the append) and queues `chat.persist` for the room.
  The worker stores and broadcasts it (`myapp/chat/tasks.py`). If the task cannot be
  queued the entry is taken back and the client is told to retry, with the same
  `clientMsgId`: whatever happened, a message is stored once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
import redis.exceptions
from flask import Flask, current_app, request
from flask_socketio import ConnectionRefusedError as Refused
from flask_socketio import Namespace

from myapp.auth import service as auth_service
from myapp.chat import inbox, presence, service
from myapp.chat.schemas import DeleteSchema, RoomRefSchema, SendSchema
from myapp.core import tracing
from myapp.core.admission import admitted
from myapp.core.config import current_settings
from myapp.core.context import Actor
from myapp.core.db import read_in_autocommit, release_connection
from myapp.core.errors import UNAVAILABLE_ERRORS, AppError, flatten_messages
from myapp.core.guards import parse_budget, spend_budget
from myapp.core.logging import get_logger
from myapp.core.metrics import app_counter, app_histogram
from myapp.core.realtime import Connection, realtime
from myapp.core.tasks import celery_app
from myapp.flags import service as flags_service

log = get_logger(__name__)
NAMESPACE = "/chat"
FEATURE = "chat"
PERSIST_TASK = "chat.persist"
_METRICS = "myapp.chat.metrics"
_UNAVAILABLE = (*UNAVAILABLE_ERRORS, redis.exceptions.RedisError)
_BEARER = "Bearer "


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is behind a socket, and the rooms that hear about their presence."""

    actor: Actor
    rooms: set[str]


def room_of(room_id: uuid.UUID | str) -> str:
    """The Socket.IO room of a chat room."""
    return f"room:{room_id}"


@dataclass(frozen=True, slots=True)
class ChatMetrics:
    """What the chat layer counts (the socket layer counts connections and events)."""

    acks: Any
    persist_seconds: Any


def init_chat_metrics(app: Flask) -> ChatMetrics:
    """The chat metrics of `app` (created once; the worker uses them too)."""
    metrics = ChatMetrics(
        acks=app_counter(app, "chat_send_acks_total", "chat:send answers", ("status", "code")),
        persist_seconds=app_histogram(
            app,
            "chat_persist_seconds",
            "From a message's acceptance to its storage",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ),
    )
    app.extensions[_METRICS] = metrics
    return metrics


def chat_metrics() -> ChatMetrics:
    """The current app's chat metrics."""
    return current_app.extensions[_METRICS]


def _error(error: AppError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    return body


def _load(schema: ma.Schema, data: Any) -> dict[str, Any]:
    try:
        return schema.load(data if isinstance(data, dict) else {})
    except ma.ValidationError as error:
        raise AppError(
            "VALIDATION_FAILED", details=flatten_messages(error.normalized_messages())
        ) from None


def _as_app_error(error: Exception, event: str) -> AppError:
    if isinstance(error, AppError):
        return error
    if isinstance(error, _UNAVAILABLE):
        log.warning("chat.unavailable", event_name=event, error_type=type(error).__name__)
        return AppError("SERVICE_UNAVAILABLE")
    log.exception("chat.event_failed", event_name=event)
    return AppError("INTERNAL_ERROR")


def _spend_event_budget(user_id: str) -> None:
    """`CHAT_EVENT_LIMIT` per user, across processes; Redis down: allowed (logged)."""
    budget = parse_budget(current_settings().chat_event_limit)
    try:
        use = spend_budget(("chat", "event", user_id), budget)
    except redis.exceptions.RedisError as error:
        log.warning("chat.budget_unavailable", error_type=type(error).__name__)
        return
    if use.exceeded:
        raise AppError("RATE_LIMITED", "Too many events; slow down.")


def _token(auth: Any) -> str | None:
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return auth["token"]
    header = request.headers.get("Authorization", "")
    return header[len(_BEARER) :].strip() if header.startswith(_BEARER) else None


def _refuse(error: AppError) -> Refused:
    return Refused(error.message, {"code": error.code, "message": error.message})


class ChatNamespace(Namespace):
    """Handlers of `/chat`; events are attributes named `on_<event>` (colons included)."""

    def __init__(self) -> None:
        super().__init__(NAMESPACE)

    def trigger_event(self, event: str, *args: Any) -> Any:
        """Every event (connect and disconnect too) in a span of its own when tracing."""
        with tracing.span(f"socket.io {event}", kind="server"):
            return super().trigger_event(event, *args)

    # -- connection ---------------------------------------------------------------------
    def on_connect(self, auth: Any = None) -> None:
        """Accept a caller with a valid token and the `chat` flag; refuse anybody else.

        Connects queue at the worker's admission gate like requests (a reconnect storm
        must not exhaust the database pool), and give their connection back before the
        Redis work."""
        registry = realtime()
        registry.metrics.events_in.labels("connect").inc()
        if registry.closing:
            raise _refuse(AppError("SERVICE_UNAVAILABLE", "This server is shutting down."))
        token = _token(auth)
        if not token:
            raise _refuse(AppError("AUTH_REQUIRED"))
        try:
            with admitted(current_settings().web_queue_timeout) as slot:
                if not slot:
                    raise AppError("SERVICE_UNAVAILABLE", "The server is busy; retry shortly.")
                read_in_autocommit()
                actor = auth_service.authenticate_token(token)
                if not flags_service.is_enabled(FEATURE, actor):
                    raise AppError("FEATURE_DISABLED", f"The feature {FEATURE!r} is not enabled.")
                rooms = {str(r) for r in service.room_ids_of(user_id=uuid.UUID(actor.id))}
                release_connection()
                came_online = presence.arrive(actor.id, request.sid)
        except Exception as error:  # noqa: BLE001 - every refusal carries a code
            raise _refuse(_as_app_error(error, "connect")) from None
        caller = Caller(actor, rooms)
        registry.add(Connection(request.sid, NAMESPACE, actor.id, actor.session_id or "", caller))
        if came_online:
            self._announce_presence(caller, online=True)

    def on_disconnect(self, reason: Any = None) -> None:
        """Forget the socket; the user's last socket makes them offline at once."""
        registry = realtime()
        connection = registry.remove(request.sid)
        if connection is None:
            return
        # 10,000 sockets may leave at once: a few at a time, so that their Redis calls
        # do not exhaust the pool (and apart from the gate, so connects never wait on them).
        with registry.departures:
            if presence.depart(connection.user_id, connection.sid):
                self._announce_presence(connection.data, online=False)

    def _announce_presence(self, caller: Caller, *, online: bool) -> None:
        """Tell the caller's rooms (no database: the rooms were read at connect)."""
        registry = realtime()
        try:
            for room_id in list(caller.rooms):
                registry.emit(
                    "presence:update",
                    {"userId": caller.actor.id, "online": online},
                    to=room_of(room_id),
                    namespace=NAMESPACE,
                )
        except Exception as error:  # noqa: BLE001 - presence is best effort; TTL is the truth
            log.warning("presence.announce_failed", error_type=type(error).__name__)

    # -- events -------------------------------------------------------------------------
    def _caller(self) -> Caller:
        connection = realtime().get(request.sid)
        if connection is None:  # not accepted (or already gone)
            raise AppError("AUTH_REQUIRED")
        return connection.data

    def _answer(self, event: str, data: Any, act: Callable[[Caller, Any], None]) -> dict:
        """Run a `{ok}`-answered event: budget, handler, errors as `{ok: false, error}`."""
        realtime().metrics.events_in.labels(event).inc()
        try:
            caller = self._caller()
            _spend_event_budget(caller.actor.id)
            read_in_autocommit()
            act(caller, data)
        except Exception as error:  # noqa: BLE001 - every failure answers with a code
            return {"ok": False, "error": _error(_as_app_error(error, event))}
        return {"ok": True}

    def _join(self, caller: Caller, data: Any) -> None:
        room_id = _load(RoomRefSchema(), data)["room_id"]
        service.require_member(room_id=room_id, actor=caller.actor)
        self.enter_room(request.sid, room_of(room_id))
        caller.rooms.add(str(room_id))  # a room joined since connect hears presence too

    def _leave(self, caller: Caller, data: Any) -> None:
        room_id = _load(RoomRefSchema(), data)["room_id"]
        self.leave_room(request.sid, room_of(room_id))

    def _delete(self, caller: Caller, data: Any) -> None:
        message = service.delete_message(
            message_id=_load(DeleteSchema(), data)["message_id"], actor=caller.actor
        )
        realtime().emit(
            "chat:deleted",
            {"id": str(message.id), "roomId": str(message.room_id)},
            to=room_of(message.room_id),
            namespace=NAMESPACE,
        )

    def _beat(self, caller: Caller, data: Any) -> None:
        if presence.arrive(caller.actor.id, request.sid):
            self._announce_presence(caller, online=True)

    def _send(self, data: Any = None) -> dict:
        """`chat:send`: ACCEPTED once queued (stored later, once), else FAILED with a code."""
        realtime().metrics.events_in.labels("chat:send").inc()
        client_msg_id = data.get("clientMsgId") if isinstance(data, dict) else None
        try:
            actor = self._caller().actor
            read_in_autocommit()
            message = _load(SendSchema(), data)
            room_id = message["room_id"]
            if not service.is_member(room_id=room_id, user_id=uuid.UUID(actor.id)):
                raise AppError("FORBIDDEN", "You are not a member of this room.")
            release_connection()
            _queue(room_id, uuid.UUID(actor.id), message["client_msg_id"], message["body"])
        except Exception as error:  # noqa: BLE001 - every failure answers with a code
            failure = _as_app_error(error, "chat:send")
            chat_metrics().acks.labels("FAILED", failure.code).inc()
            return {"clientMsgId": client_msg_id, "status": "FAILED", "error": _error(failure)}
        chat_metrics().acks.labels("ACCEPTED", "").inc()
        return {"clientMsgId": message["client_msg_id"], "status": "ACCEPTED"}


def _queue(room_id: uuid.UUID, sender_id: uuid.UUID, client_msg_id: str, body: str) -> None:
    """Append to the room's inbox and queue its worker; on failure nothing stays queued."""
    try:
        entry_id = inbox.accept(
            room_id=room_id, sender_id=sender_id, client_msg_id=client_msg_id, body=body
        )
    except inbox.OverLimitError:
        raise AppError("RATE_LIMITED", "Too many messages; slow down.") from None
    try:
        celery_app().send_task(PERSIST_TASK, args=[str(room_id)])
    except Exception:
        # Redis down too: the entry stays and is stored later, once (the retry is a duplicate).
        with contextlib.suppress(redis.exceptions.RedisError):
            inbox.withdraw(room_id, entry_id)
        raise


def _answered(event: str, method: str) -> Callable[..., dict]:
    def handler(self: ChatNamespace, data: Any = None) -> dict:
        return self._answer(event, data, getattr(self, method))

    return handler


# Event names hold a colon: the handlers are set under their `on_<event>` names.
for _event, _method in (
    ("chat:join", "_join"),
    ("chat:leave", "_leave"),
    ("chat:delete", "_delete"),
    ("presence:heartbeat", "_beat"),
):
    setattr(ChatNamespace, f"on_{_event}", _answered(_event, _method))
setattr(ChatNamespace, "on_chat:send", ChatNamespace._send)  # noqa: B010
