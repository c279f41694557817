"""The caller cache (`AUTH_CALLER_CACHE_SECONDS`): a login read a moment ago costs no
statement; a change made through the services counts at once in every process (the
user's generation, read in the guards' round trip); one made by hand in SQL, after the
cache time.

Two apps stand for two processes (each has its own cache), on the real PostgreSQL and
Redis; statements are counted on the wire as in `tests/core/test_hot_path.py`.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.conftest import PASSWORD, bearer, libpq_url, login, settings_of
from tests.core.test_hot_path import RedisSends, forget_redis
from tests.support.servers import ThrowawayRedis

CACHE_SECONDS = 1.0


@pytest.fixture
def cached_app(make_app, wire):
    return make_app(
        database_url=wire.url,
        ratelimit_default="1000/minute",
        auth_caller_cache_seconds=CACHE_SECONDS,
    )


def end_logins_by_hand(database_url: str, email: str) -> None:
    """End the user's logins in SQL, past the services: nobody announces the change."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(
            "UPDATE auth_sessions SET revoked_at = now()"
            " WHERE user_id = (SELECT id FROM users WHERE email = %s)",
            (email,),
        )


def me(client, tokens) -> tuple[int, str | None]:
    body = client.get("/v1/users/me", headers=bearer(tokens)).get_json()
    return (200, None) if "data" in body else (401, body["error"]["code"])


def test_a_login_read_a_moment_ago_costs_no_statement(cached_app, commit_user, wire, monkeypatch):
    email = commit_user(cached_app, role="manager")
    client = cached_app.test_client()
    tokens = login(client, email, PASSWORD)
    assert me(client, tokens) == (200, None)  # read once
    forget_redis(cached_app)
    redis_sends = RedisSends(monkeypatch)
    with wire.counting() as statements:
        response = client.get("/v1/users/me", headers=bearer(tokens))
    assert response.status_code == 200
    assert (response.get_json()["data"]["email"], response.get_json()["data"]["roles"]) == (
        email,
        ["manager"],
    )
    assert statements == []
    assert redis_sends.count == 1  # the budget and the denylist are never cached


@pytest.fixture
def other_process(make_app, cached_app):
    """A second app on the same database and Redis, with a cache of its own."""
    return make_app(
        database_url=settings_of(cached_app).database_url,
        ratelimit_default="1000/minute",
        auth_caller_cache_seconds=CACHE_SECONDS,
    )


def test_changes_made_in_another_process_count_at_once(cached_app, other_process, commit_user):
    here, there = cached_app.test_client(), other_process.test_client()
    email = commit_user(cached_app)
    first, second, third = (login(here, email, PASSWORD) for _ in range(3))
    assert me(here, first) == me(here, second) == me(here, third) == (200, None)  # all kept

    assert there.post("/v1/auth/logout", headers=bearer(first)).status_code == 204
    assert me(here, first) == (401, "AUTH_TOKEN_REVOKED")

    sessions = there.get("/v1/auth/sessions", headers=bearer(second)).get_json()["data"]
    [second_id] = [s["id"] for s in sessions if s["current"]]
    ended = there.delete(f"/v1/auth/sessions/{second_id}", headers=bearer(third))
    assert ended.status_code == 204
    assert me(here, second) == (401, "AUTH_TOKEN_REVOKED")
    assert me(here, third) == (200, None)  # kept again, at the user's new generation

    renamed = there.patch("/v1/users/me", headers=bearer(third), json={"name": "Renamed"})
    assert renamed.status_code == 200
    assert here.get("/v1/users/me", headers=bearer(third)).get_json()["data"]["name"] == "Renamed"


def test_a_login_ended_by_hand_in_sql_is_refused_within_the_cache_time(
    cached_app, commit_user, database_url
):
    client = cached_app.test_client()
    email = commit_user(cached_app)
    tokens = login(client, email, PASSWORD)
    assert me(client, tokens) == (200, None)
    end_logins_by_hand(database_url, email)
    ended_at = time.monotonic()
    while me(client, tokens) == (200, None):
        assert time.monotonic() - ended_at < CACHE_SECONDS + 0.5, "still served after the TTL"
        time.sleep(0.05)
    assert me(client, tokens) == (401, "AUTH_TOKEN_REVOKED")


@pytest.mark.slow
def test_with_redis_down_every_request_reads_its_login(make_app, commit_user, database_url):
    redis = ThrowawayRedis()
    redis.start()
    try:
        app = make_app(
            redis_url=redis.url, redis_max_retries=0, auth_caller_cache_seconds=CACHE_SECONDS
        )
        client = app.test_client()
        email = commit_user(app)
        tokens = login(client, email, PASSWORD)
        assert me(client, tokens) == (200, None)  # kept, at the user's generation
        redis.stop()  # no generation now: nothing kept can be trusted, nothing is kept
        assert me(client, tokens) == (200, None)
        end_logins_by_hand(database_url, email)
        assert me(client, tokens) == (401, "AUTH_TOKEN_REVOKED")  # read again, at once
    finally:
        redis.stop()
