"""The `/chat` namespace with real clients over WebSocket, a real realtime process under
gunicorn, a real worker, PostgreSQL and Redis."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.chat import Refused
from tests.support.servers import wait_until

pytestmark = pytest.mark.slow


def send(chat, room_id: str, client_msg_id: str | None = None, body: str = "hello") -> dict:
    return chat.call(
        "chat:send",
        {"roomId": room_id, "clientMsgId": client_msg_id or uuid.uuid4().hex, "body": body},
    )


def test_a_message_reaches_every_member_once_and_its_sender_is_acked(stack):
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    chat_a, chat_b = stack.joined(a, room), stack.joined(b, room)

    ack = send(chat_a, room, "m-1", "hi B")
    assert ack == {"clientMsgId": "m-1", "status": "ACCEPTED"}
    at_a, at_b = chat_a.next("chat:message"), chat_b.next("chat:message")
    assert at_a == at_b
    assert set(at_b) == {"id", "roomId", "senderId", "clientMsgId", "body", "createdAt"}
    assert (at_b["roomId"], at_b["senderId"], at_b["clientMsgId"], at_b["body"]) == (
        room, a.id, "m-1", "hi B"
    )
    assert chat_b.drain("chat:message") == []
