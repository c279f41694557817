"""The caller cache (`AUTH_CALLER_CACHE_SECONDS`): a login read in the last moments costs
no statement; ending it in this process counts at once, elsewhere after the cache time.

Against a real app (its own pool, committed users) and the real PostgreSQL and Redis,
statements counted on the wire as in `tests/core/test_hot_path.py`.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.conftest import PASSWORD, bearer, libpq_url, login
from tests.core.test_hot_path import RedisSends, forget_redis

CACHE_SECONDS = 1.0


@pytest.fixture
def cached_app(make_app, wire):
    return make_app(
        database_url=wire.url,
        ratelimit_default="1000/minute",
        auth_caller_cache_seconds=CACHE_SECONDS,
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


def test_a_logout_counts_at_once_and_a_login_ended_in_this_process_too(cached_app, commit_user):
    client = cached_app.test_client()
    email = commit_user(cached_app)
    first, second, third = (login(client, email, PASSWORD) for _ in range(3))
    assert me(client, first) == me(client, second) == me(client, third) == (200, None)

    assert client.post("/v1/auth/logout", headers=bearer(first)).status_code == 204
    assert me(client, first) == (401, "AUTH_TOKEN_REVOKED")  # the denylist, never cached

    sessions = client.get("/v1/auth/sessions", headers=bearer(second)).get_json()["data"]
    [second_id] = [s["id"] for s in sessions if s["current"]]
    ended = client.delete(f"/v1/auth/sessions/{second_id}", headers=bearer(third))
    assert ended.status_code == 204
    assert me(client, second) == (401, "AUTH_TOKEN_REVOKED")  # no wait: forgotten here
    assert me(client, third) == (200, None)


def test_a_login_ended_by_another_process_is_refused_within_the_cache_time(
    cached_app, commit_user, database_url
):
    client = cached_app.test_client()
    email = commit_user(cached_app)
    tokens = login(client, email, PASSWORD)
    assert me(client, tokens) == (200, None)
    with psycopg.connect(libpq_url(database_url)) as conn:  # as another process would
        conn.execute(
            "UPDATE auth_sessions SET revoked_at = now()"
            " WHERE user_id = (SELECT id FROM users WHERE email = %s)",
            (email,),
        )
    ended_at = time.monotonic()
    while me(client, tokens) == (200, None):
        assert time.monotonic() - ended_at < CACHE_SECONDS + 0.5, "still served after the TTL"
        time.sleep(0.05)
    assert me(client, tokens) == (401, "AUTH_TOKEN_REVOKED")
