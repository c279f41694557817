"""The `/chat` namespace with real clients over WebSocket, a real realtime process under
gunicorn, a real worker, PostgreSQL and Redis."""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest

from tests.support.chat import RefusedError, rest
from tests.support.servers import wait_until

pytestmark = pytest.mark.slow


def send(chat, room_id: str, client_msg_id: str | None = None, body: str = "hello") -> dict:
    return chat.call(
        "chat:send",
        {"roomId": room_id, "clientMsgId": client_msg_id or uuid.uuid4().hex, "body": body},
    )


def stored(stack, room_id: str) -> list[tuple]:
    return stack.query(
        "SELECT id, client_msg_id, body FROM messages WHERE room_id = %s ORDER BY id", room_id
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
        room,
        a.id,
        "m-1",
        "hi B",
    )
    assert [(str(row[0]), row[2]) for row in stored(stack, room)] == [(at_b["id"], "hi B")]
    assert chat_b.drain("chat:message") == []


def test_a_client_msg_id_sent_again_is_acked_but_stored_and_broadcast_once(stack):
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    chat_a, chat_b = stack.joined(a, room), stack.joined(b, room)

    acks = [send(chat_a, room, "same", "only once") for _ in range(3)]
    chat_a.close()  # a lost ACK: the client reconnects and sends it again
    again = stack.joined(a, room)
    acks.append(send(again, room, "same", "only once"))
    assert acks == [{"clientMsgId": "same", "status": "ACCEPTED"}] * 4

    first = chat_b.next("chat:message")
    assert first["clientMsgId"] == "same"
    assert chat_b.drain("chat:message", wait=2.0) == []
    assert [row[1:] for row in stored(stack, room)] == [("same", "only once")]


def test_messages_of_a_room_are_stored_in_acceptance_order_and_history_pages_them_once(stack):
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    chat_a, chat_b = stack.joined(a, room), stack.joined(b, room)
    for n in range(12):
        assert send(chat_a if n % 2 else chat_b, room, f"c{n}", f"n{n}")["status"] == "ACCEPTED"
    live = [chat_b.next("chat:message")["body"] for _ in range(12)]
    assert live == [f"n{n}" for n in range(12)]  # broadcast in id (acceptance) order

    status, latest = rest(stack.base, "GET", f"/v1/rooms/{room}/messages?limit=5", b.token)
    assert status == 200 and latest["meta"]["hasMore"] is True
    pages = [latest["data"]]
    while pages[-1] and (cursor := pages[-1][0]["id"]):
        _, older = rest(
            stack.base, "GET", f"/v1/rooms/{room}/messages?before={cursor}&limit=5", b.token
        )
        pages.append(older["data"])
    backwards = [m["body"] for page in reversed(pages) for m in page]
    assert backwards == [f"n{n}" for n in range(12)]

    seen, after = [], None
    while True:
        query = (
            f"?after={after}&limit=4"
            if after
            else "?limit=4&after=00000000-0000-0000-0000-000000000000"
        )
        _, page = rest(stack.base, "GET", f"/v1/rooms/{room}/messages{query}", b.token)
        if not page["data"]:
            break
        seen += [m["body"] for m in page["data"]]
        after = page["data"][-1]["id"]
    assert seen == [f"n{n}" for n in range(12)]

    _, rooms = rest(stack.base, "GET", "/v1/rooms", b.token)
    assert rooms["data"][0]["unreadCount"] == 6  # a's six; b's own never count
    sixth = latest["data"][0]["id"]  # n7
    assert (
        rest(stack.base, "POST", f"/v1/rooms/{room}/read", b.token, {"messageId": sixth})[0] == 204
    )
    oldest = pages[-2][0]["id"]
    assert (
        rest(stack.base, "POST", f"/v1/rooms/{room}/read", b.token, {"messageId": oldest})[0] == 204
    )
    _, rooms = rest(stack.base, "GET", "/v1/rooms", b.token)
    assert rooms["data"][0]["unreadCount"] == 2  # n9, n11: the cursor did not move back


def test_non_members_and_bad_tokens_are_refused(stack):
    owner, outsider = stack.person(), stack.person()
    room = stack.room(owner, visibility="private")
    chat = stack.client(outsider).connect()

    assert chat.call("chat:join", {"roomId": room}) == {
        "ok": False,
        "error": {"code": "FORBIDDEN", "message": "You are not a member of this room."},
    }
    ack = send(chat, room, "x")
    assert (ack["status"], ack["error"]["code"]) == ("FAILED", "FORBIDDEN")
    assert rest(stack.base, "GET", f"/v1/rooms/{room}/messages", outsider.token)[0] == 403
    assert chat.call("chat:join", {"roomId": "nope"})["error"]["code"] == "VALIDATION_FAILED"

    for token, code in (
        (None, "AUTH_REQUIRED"),
        ("not-a-jwt", "AUTH_TOKEN_INVALID"),
        (outsider.token[:-3] + "abc", "AUTH_TOKEN_INVALID"),
    ):
        with pytest.raises(RefusedError) as refused:
            stack.client(None).connect(auth={"token": token} if token else None)
        assert refused.value.data["data"]["code"] == code, refused.value.data
    with pytest.raises(RefusedError) as refused:  # Origin outside the allowlist
        stack.client(outsider).connect(headers={"Origin": "https://evil.example"})
    # The bearer header works as well as `auth`.
    header = stack.client(None).connect(
        auth=None, headers={"Authorization": f"Bearer {outsider.token}"}
    )
    assert header.connected


def test_a_socket_ends_when_its_login_ends_and_the_token_is_refused_after(stack):
    person = stack.person()
    room = stack.room(person)
    kept_token, _ = stack.login(person.email)  # another login of the same user
    chat, kept = stack.joined(person, room), stack.client(None)
    kept.token = kept_token
    kept.connect()

    assert rest(stack.base, "POST", "/v1/auth/logout", person.token)[0] == 204
    logged_out = time.monotonic()
    wait_until(lambda: not chat.connected, 5, "the socket of the ended login to close")
    assert chat.disconnected_at - logged_out < 5
    assert kept.connected  # the other login goes on
    with pytest.raises(RefusedError) as refused:
        stack.client(person).connect()
    assert refused.value.data["data"]["code"] == "AUTH_TOKEN_REVOKED"


def test_presence_follows_the_last_socket(stack):
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    chat_b = stack.joined(b, room)

    first = stack.client(a).connect()
    assert chat_b.next("presence:update") == {"userId": a.id, "online": True}
    second = stack.client(a).connect()
    assert chat_b.drain("presence:update", wait=0.5) == []  # already online

    def online() -> dict[str, bool]:
        _, members = rest(stack.base, "GET", f"/v1/rooms/{room}/members", b.token)
        return {m["userId"]: m["online"] for m in members["data"]}

    assert online() == {a.id: True, b.id: True}
    assert first.call("presence:heartbeat") == {"ok": True}
    first.close()
    assert chat_b.drain("presence:update", wait=0.5) == [] and online()[a.id] is True
    second.close()
    closed = time.monotonic()
    assert chat_b.next("presence:update", timeout=2) == {"userId": a.id, "online": False}
    assert time.monotonic() - closed < 2 and online()[a.id] is False


def test_over_the_limits_and_oversized_bodies_fail_with_their_codes(stack):
    person = stack.person()
    room = stack.room(person)
    chat = stack.joined(person, room)

    too_long = send(chat, room, "long", "x" * 4001)
    assert (too_long["status"], too_long["error"]["code"]) == ("FAILED", "VALIDATION_FAILED")
    assert too_long["error"]["details"] == [
        {"field": "body", "message": "Length must be between 1 and 4000."}
    ]
    # The budget is 20 sends per fixed 10-second window: start at a window's beginning so
    # that all 21 sends below fall into one window, however slow the machine is.
    time.sleep(10 - time.time() % 10 + 0.05)
    assert send(chat, room, "longest", "x" * 4000)["status"] == "ACCEPTED"
    acks = [send(chat, room) for _ in range(20)]
    assert [ack["status"] for ack in acks].count("ACCEPTED") == 19  # the 4,000 one included
    assert (acks[-1]["status"], acks[-1]["error"]["code"]) == ("FAILED", "RATE_LIMITED")
    assert time.time() % 10 < 9.5  # still the same window (else the machine was too slow)


def test_an_admin_deletes_a_message_and_the_room_hears_of_it(stack):
    admin, member = stack.person(roles=("admin",)), stack.person()
    room = stack.room(member, admin)
    chat_admin, chat_member = stack.joined(admin, room), stack.joined(member, room)
    send(chat_member, room, "gone", "regret")
    message = chat_member.next("chat:message")

    denied = chat_member.call("chat:delete", {"messageId": message["id"]})
    assert denied["error"]["code"] == "FORBIDDEN"
    assert chat_admin.call("chat:delete", {"messageId": message["id"]}) == {"ok": True}
    assert chat_member.next("chat:deleted") == {"id": message["id"], "roomId": room}
    _, history = rest(stack.base, "GET", f"/v1/rooms/{room}/messages", member.token)
    assert history["data"][0]["body"] is None and history["data"][0]["deletedAt"]


def scrape(base: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:  # noqa: S310
        lines = answer.read().decode().splitlines()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in lines)
        if name and not name.startswith("#")
    }


def test_sockets_events_acks_and_persist_latency_are_measured(stack):
    person = stack.person()
    room = stack.room(person)
    before = scrape(stack.base)
    chat = stack.joined(person, room)
    send(chat, room, "measured")
    chat.next("chat:message")
    send(chat, room, "x" * 5, body="")  # an empty body fails validation

    after = scrape(stack.base)

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert after["socketio_connected_clients"] >= 1
    assert grew('socketio_events_received_total{event="chat:join"}') == 1
    assert grew('socketio_events_received_total{event="chat:send"}') == 2
    assert grew('chat_send_acks_total{code="",status="ACCEPTED"}') == 1
    assert grew('chat_send_acks_total{code="VALIDATION_FAILED",status="FAILED"}') == 1
    worker = scrape(f"http://127.0.0.1:{stack.worker_metrics_port}")
    assert worker["chat_persist_seconds_count"] >= 1
    assert worker['socketio_events_sent_total{event="chat:message"}'] >= 1
    assert worker['celery_queue_depth{queue="chat"}'] >= 0  # measured since the worker started
