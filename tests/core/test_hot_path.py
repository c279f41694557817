"""The budget of an authenticated read, counted against the real PostgreSQL and Redis.

`GET /v1/users/me` must cost exactly one SQL statement (the caller: user, roles, token
version and login session together; the view reuses that row) and one Redis round trip
(the budget counter and the token denylist, pipelined). The app here is a real one, with
its own sessions and pool (not the rolled-back test transaction), and statements are
counted on the wire by a proxy in front of PostgreSQL, so what is counted is what
production sends, whichever layer sends it (a hidden `BEGIN` or `ROLLBACK` counts too).
"""

from __future__ import annotations

import pytest
import redis.connection

from myapp.core.redis import redis_key
from myapp.extensions import db
from tests.conftest import PASSWORD, bearer, clear_redis_prefix, login, redis_of, settings_of


@pytest.fixture
def real_app(make_app, wire):
    return make_app(database_url=wire.url, ratelimit_default="1000/minute")


@pytest.fixture
def committed_user(real_app, commit_user):
    return commit_user(real_app, role="manager")


def forget_redis(app) -> None:
    clear_redis_prefix(redis_of(app), settings_of(app).redis_prefix)


class RedisSends:
    """Counts Redis round trips: one `send_packed_command` per round trip (a pipeline
    sends once)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        original = redis.connection.AbstractConnection.send_packed_command

        def counting_send(connection, command, check_health=True):
            self.count += 1
            return original(connection, command, check_health)

        monkeypatch.setattr(
            redis.connection.AbstractConnection, "send_packed_command", counting_send
        )


def test_get_me_costs_one_statement_and_one_redis_round_trip(
    real_app, committed_user, wire, monkeypatch
):
    client = real_app.test_client()
    headers = bearer(login(client, committed_user, PASSWORD))
    with real_app.app_context():
        assert db.engine.pool._pre_ping is False  # noqa: SLF001 - no hidden round trip per checkout
    client.get("/v1/users/me", headers=headers)  # warm: flags, compiled SQL, connections
    forget_redis(real_app)  # a fresh budget for the counted request

    redis_sends = RedisSends(monkeypatch)
    with wire.counting() as statements:
        response = client.get("/v1/users/me", headers=headers)
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert (data["email"], data["roles"]) == (committed_user, ["manager"])
    assert len(statements) == 1, statements
    assert "auth_sessions" in statements[0] and "roles" in statements[0]
    assert redis_sends.count == 1
    with real_app.app_context():  # this user's counter (other tests run in parallel)
        budget_keys = redis_of(real_app).keys(
            redis_key("ratelimit", "api", f"user:{data['id']}", "*")
        )
    assert len(budget_keys) == 1 and redis_of(real_app).get(budget_keys[0]) == "1"
    assert response.headers["X-RateLimit-Remaining"] == "999"


def test_a_logged_out_token_is_refused_by_the_same_single_statement(real_app, committed_user, wire):
    client = real_app.test_client()
    tokens = login(client, committed_user, PASSWORD)
    assert client.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
    forget_redis(real_app)  # forget the denylist: the database alone must refuse
    with wire.counting() as statements:
        response = client.get("/v1/users/me", headers=bearer(tokens))
    assert (response.status_code, response.get_json()["error"]["code"]) == (
        401,
        "AUTH_TOKEN_REVOKED",
    )
    assert len(statements) == 1, statements


def test_orm_reads_of_a_get_run_in_autocommit_and_writes_in_one_transaction(
    real_app, committed_user, wire
):
    """The session a GET creates (after the caller's read, which needs none) reads in
    autocommit mode: no BEGIN or ROLLBACK on the wire. A PATCH writes in one transaction."""
    client = real_app.test_client()
    headers = bearer(login(client, committed_user, PASSWORD))
    user_id = client.get("/v1/users/me", headers=headers).get_json()["data"]["id"]
    with wire.counting() as reads:
        assert client.get(f"/v1/users/{user_id}", headers=headers).status_code == 200
    assert len(reads) >= 2, reads  # the caller, then the ORM's own read of the user
    assert not [s for s in reads if s.split()[0] in ("BEGIN", "ROLLBACK", "COMMIT")], reads
    with wire.counting() as writes:
        changed = client.patch("/v1/users/me", headers=headers, json={"name": "Renamed"})
    assert changed.status_code == 200
    verbs = [s.split()[0] for s in writes]
    assert verbs.count("BEGIN") >= 1 and "UPDATE" in verbs and verbs.count("COMMIT") == 1, verbs


def test_a_patch_answers_with_what_it_wrote_without_reading_it_again(
    real_app, committed_user, wire
):
    """The written row comes back in the UPDATE's RETURNING (its new `updated_at`) and
    the answer is built from it: nothing is sent after the COMMIT."""
    client = real_app.test_client()
    headers = bearer(login(client, committed_user, PASSWORD))
    before = client.get("/v1/users/me", headers=headers).get_json()["data"]
    with wire.counting() as statements:
        changed = client.patch("/v1/users/me", headers=headers, json={"name": "Written Once"})
    assert changed.status_code == 200
    data = changed.get_json()["data"]
    assert (data["name"], data["roles"], data["email"]) == (
        "Written Once",
        ["manager"],
        before["email"],
    )
    assert data["updatedAt"] > before["updatedAt"]
    verbs = [s.split()[0] for s in statements if s.strip()]
    assert verbs[-1] == "COMMIT" and verbs.count("BEGIN") == 1, verbs
    assert "RETURNING users.updated_at" in next(s for s in statements if s.startswith("UPDATE"))
    after = client.get("/v1/users/me", headers=headers).get_json()["data"]
    assert after == data  # what the answer said is what was stored


def test_a_role_change_answers_with_what_it_wrote_without_reading_it_again(
    real_app, commit_user, wire
):
    client = real_app.test_client()
    admin = bearer(login(client, commit_user(real_app, role="admin"), PASSWORD))
    target = login(client, commit_user(real_app), PASSWORD)
    user_id = client.get("/v1/users/me", headers=bearer(target)).get_json()["data"]["id"]
    with wire.counting() as statements:
        changed = client.put(
            f"/v1/users/{user_id}/roles", headers=admin, json={"roles": ["manager"]}
        )
    assert changed.status_code == 200
    assert changed.get_json()["data"]["roles"] == ["manager"]
    verbs = [s.split()[0] for s in statements if s.strip()]
    assert verbs[-1] == "COMMIT" and verbs.count("BEGIN") == 1, verbs
    shown = client.get(f"/v1/users/{user_id}", headers=admin).get_json()["data"]
    assert shown["roles"] == ["manager"]
