"""The caller's event stream: ids, resume with Last-Event-ID, heartbeats, tickets, auth."""

from __future__ import annotations

import json
import queue
import uuid

import pytest
from sqlalchemy import text

from myapp.core.streams import SESSION_ENDED, publish, stream_hub
from tests.conftest import PASSWORD, bearer, login
from tests.support.sse import SSEReader

HEARTBEAT = 0.3


@pytest.fixture
def sse_app(make_app):
    return make_app(sse_heartbeat_seconds=HEARTBEAT)


@pytest.fixture
def http(sse_app, db_session):
    return sse_app.test_client()


def open_stream(http, headers=None, query: str = "") -> tuple[object, SSEReader]:
    response = http.get(f"/v1/events/stream{query}", headers=headers or {}, buffered=False)
    return response, SSEReader(response.response, response.close)


def send(app, user_id, event_type: str, **data) -> str:
    with app.app_context():
        return publish(str(user_id), event_type, data)


def test_events_arrive_with_their_ids_and_a_reconnect_resumes_after_the_last_one(
    http, sse_app, make_user
):
    user = make_user()
    tokens = login(http, user.email)
    response, reader = open_stream(http, bearer(tokens))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "no-cache" in response.headers["Cache-Control"]
    first = reader.next()
    assert first.retry == 3000 and first.comments == ["connected"]

    ids = [send(sse_app, user.id, "notification", n=n) for n in range(5)]
    received = reader.events(5)
    assert [m.id for m in received] == ids
    assert [m.data for m in received] == [{"n": n} for n in range(5)]
    assert {m.event for m in received} == {"notification"}
    reader.stop()

    resumed_response, resumed = open_stream(http, {**bearer(tokens), "Last-Event-ID": ids[1]})
    assert resumed_response.status_code == 200
    assert [m.id for m in resumed.events(3)] == ids[2:]
    later = send(sse_app, user.id, "notification", n=5)
    assert resumed.next_event().id == later  # live events follow the backlog, none twice
    with pytest.raises(queue.Empty):
        resumed.next_event(timeout=HEARTBEAT * 3)
    resumed.stop()


def test_a_stream_sees_only_its_own_users_events_and_heartbeats_when_idle(http, sse_app, make_user):
    me, other = make_user(), make_user()
    _, reader = open_stream(http, bearer(login(http, me.email)))
    send(sse_app, other.id, "notification", secret="not yours")
    mine = send(sse_app, me.id, "job.progress", progress=50)
    message = reader.next_event()
    assert (message.id, message.event, message.data) == (mine, "job.progress", {"progress": 50})
    heartbeats = [reader.next(timeout=HEARTBEAT * 5) for _ in range(2)]
    assert all(m.comments == ["heartbeat"] and not m.is_event for m in heartbeats)
    reader.stop()


def test_a_ticket_opens_the_stream_once(http, sse_app, make_user):
    user = make_user()
    tokens = login(http, user.email)
    issued = http.post("/v1/events/ticket", headers=bearer(tokens))
    assert issued.status_code == 201
    ticket = issued.get_json()["data"]
    assert ticket["expiresIn"] == 60 and len(ticket["ticket"]) >= 32

    response, reader = open_stream(http, query=f"?ticket={ticket['ticket']}")
    assert response.status_code == 200
    event_id = send(sse_app, user.id, "notification", hello=True)
    assert reader.next_event().id == event_id
    reader.stop()

    again = http.get(f"/v1/events/stream?ticket={ticket['ticket']}")
    assert again.status_code == 401
    assert again.get_json()["error"]["code"] == "AUTH_TOKEN_INVALID"
    assert again.headers["Content-Type"] == "application/json"


def test_tickets_are_only_for_the_stream_and_follow_the_login(http, make_user):
    user = make_user()
    tokens = login(http, user.email)
    ticket = http.post("/v1/events/ticket", headers=bearer(tokens)).get_json()["data"]["ticket"]
    elsewhere = http.get(f"/v1/users/me?ticket={ticket}")
    assert elsewhere.status_code == 401  # only the stream takes tickets
    assert http.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
    after_logout = http.get(f"/v1/events/stream?ticket={ticket}")
    assert after_logout.status_code == 401
    assert after_logout.get_json()["error"]["code"] == "AUTH_TOKEN_REVOKED"


def test_without_credentials_the_answer_is_an_envelope_not_a_stream(http):
    for query in ("", "?ticket=made-up", "?ticket="):
        answer = http.get(f"/v1/events/stream{query}")
        assert answer.status_code == 401
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.get_json()["success"] is False
    bad_id = http.get("/v1/events/stream", headers={"Last-Event-ID": "nope"})
    assert bad_id.status_code == 401  # the caller is checked before anything else


def test_a_malformed_last_event_id_is_400(http, make_user):
    tokens = login(http, make_user().email)
    answer = http.get("/v1/events/stream", headers={**bearer(tokens), "Last-Event-ID": "x-y"})
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "BAD_REQUEST"


def test_shutdown_ends_every_stream_cleanly(http, sse_app, make_user):
    tokens = login(http, make_user().email)
    _, reader = open_stream(http, bearer(tokens))
    reader.next()
    with sse_app.app_context():
        assert stream_hub().watched == 1
    with sse_app.app_context():
        stream_hub().close()  # what `shutdown_streams()` does to each hub of the process
    assert reader.ended.wait(5), "the stream did not end"
    with sse_app.app_context():
        assert stream_hub().watched == 0


def test_a_stream_ends_when_its_login_ends_and_only_then(http, sse_app, make_user):
    user = make_user()
    tokens = login(http, user.email)
    response, reader = open_stream(http, bearer(tokens))
    reader.next()
    with sse_app.app_context():
        session_id = current_session_of(http, tokens)
        publish(str(user.id), SESSION_ENDED, {"sessionIds": [str(uuid.uuid4())]})  # another login
        after = publish(str(user.id), "notification", {"still": "here"})
    assert reader.next_event().id == after  # the control entry itself is never sent
    with sse_app.app_context():
        publish(str(user.id), SESSION_ENDED, {"sessionIds": [session_id]})
    assert reader.ended.wait(5), "the stream outlived its login"


def current_session_of(http, tokens) -> str:
    sessions = http.get("/v1/auth/sessions", headers=bearer(tokens)).get_json()["data"]
    return next(s["id"] for s in sessions if s["current"])


def test_ending_logins_announces_them_for_their_streams(http, db_session, make_user):
    user = make_user()
    first, second = login(http, user.email), login(http, user.email)
    first_session = current_session_of(http, first)

    def announced() -> list[list[str]]:
        rows = db_session.execute(
            text(
                "SELECT payload FROM outbox WHERE name = 'auth.sessions_ended'"
                " AND aggregate_id = :user_id ORDER BY id"  # this user's (tests run in parallel)
            ),
            {"user_id": str(user.id)},
        ).scalars()
        return [
            json.loads(row)["sessionIds"] if isinstance(row, str) else row["sessionIds"]
            for row in rows
        ]

    assert http.post("/v1/auth/logout", headers=bearer(first)).status_code == 204
    assert announced() == [[first_session]]
    second_session = current_session_of(http, second)
    changed = http.post(
        "/v1/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "a-new-password-1"},
        headers=bearer(second),
    )
    assert changed.status_code == 204, changed.get_json()
    assert announced()[-1] == [second_session]  # every open login of the user (one was left)


def test_a_notification_from_the_command_line_reaches_the_users_stream(http, sse_app, make_user):
    user = make_user()
    _, reader = open_stream(http, bearer(login(http, user.email)))
    reader.next()
    result = sse_app.test_cli_runner().invoke(args=["events", "notify", str(user.id), "Hello"])
    assert result.exit_code == 0, result.output
    message = reader.next_event()
    assert (message.event, message.data) == ("notification", {"message": "Hello"})
    assert result.output.strip() == f"sent: {message.id}"
    reader.stop()
