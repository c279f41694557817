"""The budget of an authenticated read, counted against the real PostgreSQL and Redis.

`GET /v1/users/me` must cost exactly one SQL statement (the caller: user, roles, token
version and login session together; the view reuses that row) and one Redis round trip
(the budget counter and the token denylist, pipelined). The app here is a real one, with
its own sessions and pool (not the rolled-back test transaction), so what is counted is
what production sends.
"""

from __future__ import annotations

import uuid

import pytest
import redis.connection
from sqlalchemy import delete, event, or_, select

from myapp.audit.models import AuditLog
from myapp.core.redis import redis_key
from myapp.extensions import db
from myapp.users.models import Role, User
from tests.conftest import PASSWORD, bearer, clear_redis_prefix, login, redis_of, settings_of


@pytest.fixture
def real_app(make_app):
    return make_app(ratelimit_default="1000/minute")


@pytest.fixture
def committed_user(real_app, password_hash):
    """A user committed for real (the real app cannot see the test transaction)."""
    email = f"hot-{uuid.uuid4().hex[:8]}@example.com"
    with real_app.app_context():
        role = db.session.execute(select(Role).where(Role.name == "manager")).scalar_one()
        user = User(email=email, name="Hot Path", password_hash=password_hash, roles=[role])
        db.session.add(user)
        db.session.commit()
        user_id = user.id
    yield email
    with real_app.app_context():  # what the requests committed, so later tests see none of it
        db.session.execute(
            delete(AuditLog).where(
                or_(AuditLog.actor_id == user_id, AuditLog.target_id == str(user_id))
            )
        )
        db.session.execute(delete(User).where(User.id == user_id))  # logins cascade
        db.session.commit()


def forget_redis(app) -> None:
    clear_redis_prefix(redis_of(app), settings_of(app).redis_prefix)


class RoundTrips:
    """Counts what leaves the process: SQL statements and Redis round trips."""

    def __init__(self, monkeypatch, engine) -> None:
        self.statements: list[str] = []
        self.redis_sends = 0
        event.listen(engine, "before_cursor_execute", self._statement)
        self._engine = engine
        original = redis.connection.AbstractConnection.send_packed_command

        def counting_send(connection, command, check_health=True):
            self.redis_sends += 1  # one call per round trip: a pipeline sends once
            return original(connection, command, check_health)

        monkeypatch.setattr(
            redis.connection.AbstractConnection, "send_packed_command", counting_send
        )

    def _statement(self, conn, cursor, statement, *_):
        self.statements.append(statement)

    def stop(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._statement)


def test_get_me_costs_one_statement_and_one_redis_round_trip(real_app, committed_user, monkeypatch):
    client = real_app.test_client()
    headers = bearer(login(client, committed_user, PASSWORD))
    with real_app.app_context():
        engine = db.engine
        assert engine.pool._pre_ping is False  # noqa: SLF001 - no hidden round trip per checkout
    client.get("/v1/users/me", headers=headers)  # warm: flags, compiled SQL, connections
    forget_redis(real_app)  # a fresh budget for the counted request

    counter = RoundTrips(monkeypatch, engine)
    try:
        response = client.get("/v1/users/me", headers=headers)
    finally:
        counter.stop()
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert (data["email"], data["roles"]) == (committed_user, ["manager"])
    assert len(counter.statements) == 1, counter.statements
    assert "auth_sessions" in counter.statements[0] and "roles" in counter.statements[0]
    assert counter.redis_sends == 1
    with real_app.app_context():  # this user's counter (other tests run in parallel)
        budget_keys = redis_of(real_app).keys(
            redis_key("ratelimit", "api", f"user:{data['id']}", "*")
        )
    assert len(budget_keys) == 1 and redis_of(real_app).get(budget_keys[0]) == "1"
    assert response.headers["X-RateLimit-Remaining"] == "999"


def test_a_logged_out_token_is_refused_by_the_same_single_statement(
    real_app, committed_user, monkeypatch
):
    client = real_app.test_client()
    tokens = login(client, committed_user, PASSWORD)
    assert client.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
    with real_app.app_context():
        forget_redis(real_app)  # forget the denylist: the database alone must refuse
        engine = db.engine
    counter = RoundTrips(monkeypatch, engine)
    try:
        response = client.get("/v1/users/me", headers=bearer(tokens))
    finally:
        counter.stop()
    assert (response.status_code, response.get_json()["error"]["code"]) == (
        401,
        "AUTH_TOKEN_REVOKED",
    )
    assert len(counter.statements) == 1
