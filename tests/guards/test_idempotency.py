"""Idempotency-Key: replay, in-flight conflicts, mismatches, scoping, TTL, outages, 5xx."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from myapp.core.redis import redis_key
from myapp.users.models import User
from tests.conftest import bearer, login, redis_of, settings_of
from tests.support.routes import register_test_routes
from tests.support.servers import ThrowawayRedis

NEW = {"email": "idem@example.com", "password": "a-good-password", "name": "Idem"}


def count(app, name: str) -> int:
    with app.app_context():
        return int(redis_of(app).get(redis_key("test", "counted", name)) or 0)


def users_named(db_session, email: str) -> int:
    statement = select(func.count()).select_from(User).where(User.email == email)
    return db_session.execute(statement).scalar_one()


def test_same_post_twice_is_replayed_and_runs_once(client, make_user, db_session):
    headers = {**bearer(login(client, make_user(roles=("admin",)).email)), "Idempotency-Key": "k-1"}
    first = client.post("/v1/users", json=NEW, headers=headers)
    second = client.post("/v1/users", json=NEW, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json()
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    assert users_named(db_session, "idem@example.com") == 1


def test_same_key_with_another_body_is_422(client, make_user, db_session):
    headers = {**bearer(login(client, make_user(roles=("admin",)).email)), "Idempotency-Key": "k-2"}
    assert client.post("/v1/users", json=NEW, headers=headers).status_code == 201
    other = client.post("/v1/users", json={**NEW, "name": "Other"}, headers=headers)
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "IDEMPOTENCY_KEY_MISMATCH"
    reordered = client.post("/v1/users", json=dict(reversed(NEW.items())), headers=headers)
    assert reordered.status_code == 201  # the same JSON document, keys in another order


def test_required_key_and_key_format(client, make_user, db_session):
    headers = bearer(login(client, make_user(roles=("admin",)).email))
    missing = client.post("/v1/users", json=NEW, headers=headers)
    assert (
        missing.status_code == 400 and "Idempotency-Key" in missing.get_json()["error"]["message"]
    )
    for bad in ("x" * 256, "has space", "caf\u00e9"):
        response = client.post("/_test/counted", json={}, headers={"Idempotency-Key": bad})
        assert response.status_code == 400
    assert users_named(db_session, "idem@example.com") == 0


def test_ten_concurrent_requests_with_one_key_run_once(app, db_session):
    def send(_):
        with app.test_client() as client:
            return client.post(
                "/_test/counted?name=race&sleep=0.3",
                json={"a": 1},
                headers={"Idempotency-Key": "race"},
            )

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(send, range(10)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(200) >= 1
    assert set(statuses) <= {200, 409}
    ran = [r for r in answers if r.status_code == 200 and "Idempotent-Replayed" not in r.headers]
    assert len(ran) == 1
    assert count(app, "race") == 1
    conflicts = [r for r in answers if r.status_code == 409]
    assert all(r.get_json()["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE" for r in conflicts)
    replay = app.test_client().post(
        "/_test/counted?name=race&sleep=0.3", json={"a": 1}, headers={"Idempotency-Key": "race"}
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == ran[0].get_json()


def test_two_users_with_the_same_key_do_not_interfere(client, make_user, db_session):
    ann, bob = make_user(), make_user()
    for user in (ann, bob):
        headers = {**bearer(login(client, user.email)), "Idempotency-Key": "shared-key"}
        response = client.post("/_test/counted?name=scoped", json={"who": 1}, headers=headers)
        assert response.status_code == 200 and "Idempotent-Replayed" not in response.headers
    anonymous = client.post(
        "/_test/counted?name=scoped", json={"who": 1}, headers={"Idempotency-Key": "shared-key"}
    )
    assert "Idempotent-Replayed" not in anonymous.headers
    assert count(client.application, "scoped") == 3


def test_after_the_ttl_the_key_is_free(make_app, db_session):
    app = make_app(idempotency_ttl_seconds=1)
    register_test_routes(app)
    client = app.test_client()
    headers = {"Idempotency-Key": "short-lived"}
    client.post("/_test/counted?name=ttl", json={}, headers=headers)
    assert (
        client.post("/_test/counted?name=ttl", json={}, headers=headers).headers.get(
            "Idempotent-Replayed"
        )
        == "true"
    )
    time.sleep(1.2)
    again = client.post("/_test/counted?name=ttl", json={}, headers=headers)
    assert "Idempotent-Replayed" not in again.headers
    assert again.get_json()["count"] == 2


def test_a_5xx_is_not_stored_so_a_retry_runs_again(app, client, db_session):
    headers = {"Idempotency-Key": "will-fail"}
    assert client.post("/_test/fails", json={}, headers=headers).status_code == 500
    retry = client.post("/_test/fails", json={}, headers=headers)
    assert retry.status_code == 500 and "Idempotent-Replayed" not in retry.headers
    with app.app_context():
        assert int(redis_of(app).get(redis_key("test", "fails"))) == 2


@pytest.mark.slow
def test_redis_down_answers_503_and_creates_nothing(make_app, make_user, db_session):
    redis = ThrowawayRedis()
    redis.start()
    try:
        client = make_app(redis_url=redis.url, redis_max_retries=0).test_client()
        headers = {
            **bearer(login(client, make_user(roles=("admin",)).email)),
            "Idempotency-Key": "k",
        }
        redis.stop()
        response = client.post("/v1/users", json=NEW, headers=headers)
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert users_named(db_session, "idem@example.com") == 0
    finally:
        redis.stop()


def test_a_rate_limited_request_is_not_replayed(make_app, db_session):
    app = make_app(ratelimit_default="1/minute")
    register_test_routes(app)
    client = app.test_client()
    assert (
        client.post("/_test/counted?name=rl", json={}, headers={"Idempotency-Key": "a"}).status_code
        == 200
    )
    limited = client.post("/_test/counted?name=rl", json={}, headers={"Idempotency-Key": "b"})
    assert limited.status_code == 429
    with app.app_context():
        redis_of(app).delete(*redis_of(app).keys(settings_of(app).redis_prefix + "ratelimit*"))
    retry = client.post("/_test/counted?name=rl", json={}, headers={"Idempotency-Key": "b"})
    assert retry.status_code == 200 and "Idempotent-Replayed" not in retry.headers
