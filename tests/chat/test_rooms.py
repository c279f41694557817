"""Chat over REST: rooms and membership, history pages, read cursor, exactly-once storage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from myapp.chat import service
from myapp.chat.inbox import Accepted
from myapp.chat.presence import presence_key
from myapp.core.db import new_id
from tests.conftest import bearer, login, redis_of


def make_room(client, tokens, name="general", visibility="public") -> dict:
    answer = client.post(
        "/v1/rooms", json={"name": name, "visibility": visibility}, headers=bearer(tokens)
    )
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["data"]


def send(app, room_id, sender_id, text: str, client_msg_id: str | None = None):
    """What the worker does with an accepted message (the id is given at acceptance)."""
    message = Accepted(
        entry_id="0-0",
        id=new_id(),
        room_id=uuid.UUID(str(room_id)),
        sender_id=uuid.UUID(str(sender_id)),
        client_msg_id=client_msg_id or uuid.uuid4().hex,
        body=text,
        accepted_at=datetime.now(UTC),
    )
    with app.app_context():
        stored = service.store_messages([message])
    return stored[0] if stored else None


def test_rooms_membership_and_privacy(client, make_user):
    owner, other = make_user(), make_user()
    owner_tokens, other_tokens = login(client, owner.email), login(client, other.email)
    public = make_room(client, owner_tokens)
    assert (public["visibility"], public["role"], public["unreadCount"]) == ("public", "owner", 0)
    private = make_room(client, owner_tokens, "secret", "private")

    join = client.post(f"/v1/rooms/{public['id']}/join", headers=bearer(other_tokens))
    assert join.status_code == 200 and join.get_json()["data"]["role"] == "member"
    refused = client.post(f"/v1/rooms/{private['id']}/join", headers=bearer(other_tokens))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "FORBIDDEN"
    history = client.get(f"/v1/rooms/{private['id']}/messages", headers=bearer(other_tokens))
    assert history.status_code == 403

    not_owner = client.post(
        f"/v1/rooms/{public['id']}/members",
        json={"userId": str(owner.id)},
        headers=bearer(other_tokens),
    )
    assert not_owner.status_code == 403
    invited = client.post(
        f"/v1/rooms/{private['id']}/members",
        json={"userId": str(other.id)},
        headers=bearer(owner_tokens),
    )
    assert invited.status_code == 201
    assert invited.get_json()["data"]["userId"] == str(other.id)
    names = {
        r["name"] for r in client.get("/v1/rooms", headers=bearer(other_tokens)).get_json()["data"]
    }
    assert names == {"general", "secret"}

    left = client.post(f"/v1/rooms/{public['id']}/leave", headers=bearer(other_tokens))
    assert left.status_code == 204
    assert (
        client.get(f"/v1/rooms/{public['id']}/messages", headers=bearer(other_tokens)).status_code
        == 403
    )
    missing = client.post(f"/v1/rooms/{uuid.uuid4()}/join", headers=bearer(other_tokens))
    assert missing.status_code == 404


def test_members_show_who_is_online(app, client, make_user):
    owner, other = make_user(), make_user()
    tokens = login(client, owner.email)
    room = make_room(client, tokens)
    client.post(
        f"/v1/rooms/{room['id']}/members", json={"userId": str(other.id)}, headers=bearer(tokens)
    )
    with app.app_context():
        redis_of(app).set(presence_key(str(other.id)), "1", ex=60)
    members = client.get(f"/v1/rooms/{room['id']}/members", headers=bearer(tokens)).get_json()[
        "data"
    ]
    assert {m["userId"]: (m["role"], m["online"]) for m in members} == {
        str(owner.id): ("owner", False),
        str(other.id): ("member", True),
    }


def test_the_same_client_message_id_is_stored_once_ever(app, client, make_user):
    sender = make_user()
    tokens = login(client, sender.email)
    room = make_room(client, tokens)
    first = send(app, room["id"], sender.id, "hello", client_msg_id="c-1")
    assert first is not None
    again = [send(app, room["id"], sender.id, "hello", client_msg_id="c-1") for _ in range(3)]
    assert again == [None, None, None]
    page = client.get(f"/v1/rooms/{room['id']}/messages", headers=bearer(tokens)).get_json()
    assert [m["clientMsgId"] for m in page["data"]] == ["c-1"]
    assert page["data"][0]["id"] == str(first.id)


def test_history_pages_return_every_message_once_in_id_order(app, client, make_user):
    sender = make_user()
    tokens = login(client, sender.email)
    room = make_room(client, tokens)
    sent = [str(send(app, room["id"], sender.id, f"m{n}").id) for n in range(23)]
    url = f"/v1/rooms/{room['id']}/messages"

    latest = client.get(f"{url}?limit=10", headers=bearer(tokens)).get_json()
    assert [m["id"] for m in latest["data"]] == sent[-10:]
    seen, page = list(latest["data"]), latest
    while page["meta"]["hasMore"]:
        page = client.get(
            f"{url}?limit=10&before={page['meta']['nextCursor']}", headers=bearer(tokens)
        ).get_json()
        seen = page["data"] + seen
    assert [m["id"] for m in seen] == sent  # backwards: everything once, in order

    forward, cursor = [], sent[4]
    while True:
        page = client.get(f"{url}?limit=7&after={cursor}", headers=bearer(tokens)).get_json()
        forward += page["data"]
        if not page["meta"]["hasMore"]:
            break
        cursor = page["meta"]["nextCursor"]
    assert [m["id"] for m in forward] == sent[5:]  # a resync after id 4 misses nothing

    both = client.get(f"{url}?before={sent[3]}&after={sent[1]}", headers=bearer(tokens))
    assert both.status_code == 422
    too_many = client.get(f"{url}?limit=101", headers=bearer(tokens))
    assert too_many.status_code == 422


def test_unread_counts_follow_a_read_cursor_that_never_moves_back(app, client, make_user):
    reader, writer = make_user(), make_user()
    reader_tokens, writer_tokens = login(client, reader.email), login(client, writer.email)
    room = make_room(client, writer_tokens)
    client.post(f"/v1/rooms/{room['id']}/join", headers=bearer(reader_tokens))
    ids = [str(send(app, room["id"], writer.id, f"m{n}").id) for n in range(5)]
    send(app, room["id"], reader.id, "my own")  # one's own messages are never unread

    def unread() -> int:
        rooms = client.get("/v1/rooms", headers=bearer(reader_tokens)).get_json()["data"]
        return next(r for r in rooms if r["id"] == room["id"])["unreadCount"]

    assert unread() == 5
    read = client.post(
        f"/v1/rooms/{room['id']}/read", json={"messageId": ids[2]}, headers=bearer(reader_tokens)
    )
    assert read.status_code == 204
    assert unread() == 2
    back = client.post(
        f"/v1/rooms/{room['id']}/read", json={"messageId": ids[0]}, headers=bearer(reader_tokens)
    )
    assert back.status_code == 204
    assert unread() == 2  # not backwards
    foreign = client.post(
        f"/v1/rooms/{room['id']}/read",
        json={"messageId": str(uuid.uuid4())},
        headers=bearer(reader_tokens),
    )
    assert foreign.status_code == 404
    rooms = client.get("/v1/rooms", headers=bearer(reader_tokens)).get_json()["data"]
    assert next(r for r in rooms if r["id"] == room["id"])["lastMessageAt"] is not None
