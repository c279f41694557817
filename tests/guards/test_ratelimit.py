"""Default rate limits: per caller, 429 envelope with Retry-After, exempt probes, fail open."""

from __future__ import annotations

import re

import pytest

from tests.conftest import bearer, login
from tests.support.servers import ThrowawayRedis


@pytest.fixture
def limited(make_app):
    return make_app(ratelimit_default="3/minute")


def test_the_request_over_the_limit_is_429_with_retry_after(limited, db_session):
    client = limited.test_client()
    for _ in range(3):
        ok = client.get("/v1/meta/error-codes")
        assert ok.status_code == 200
    assert ok.headers["X-RateLimit-Limit"] == "3" and ok.headers["X-RateLimit-Remaining"] == "0"
    over = client.get("/v1/meta/error-codes")
    assert over.status_code == 429
    assert over.get_json()["error"]["code"] == "RATE_LIMITED"
    assert 0 < int(over.headers["Retry-After"]) <= 60
    assert over.headers["X-RateLimit-Reset"]


def test_authenticated_callers_have_their_own_budgets(limited, make_user, db_session):
    client = limited.test_client()
    ann, bob = make_user(), make_user()
    ann_headers, bob_headers = bearer(login(client, ann.email)), bearer(login(client, bob.email))
    for _ in range(3):
        assert client.get("/v1/users/me", headers=ann_headers).status_code == 200
    assert client.get("/v1/users/me", headers=ann_headers).status_code == 429
    # Same address, another user: a budget of their own; anonymous callers too.
    assert client.get("/v1/users/me", headers=bob_headers).status_code == 200
    assert client.get("/v1/meta/error-codes").status_code == 200


def test_a_forged_token_does_not_buy_a_fresh_budget(limited, db_session):
    client = limited.test_client()
    for n in range(3):
        client.get("/v1/meta/error-codes", headers={"Authorization": f"Bearer forged.{n}.x"})
    over = client.get("/v1/meta/error-codes", headers={"Authorization": "Bearer forged.9.x"})
    assert over.status_code == 429


def test_health_and_metrics_are_exempt(limited, db_session):
    client = limited.test_client()
    for _ in range(6):
        assert client.get("/health/live").status_code == 200
        assert client.get("/metrics").status_code == 200


@pytest.mark.slow
def test_redis_down_requests_are_still_served_and_counted(make_app, db_session):
    redis = ThrowawayRedis()
    redis.start()
    try:
        app = make_app(ratelimit_default="3/minute", redis_url=redis.url, redis_max_retries=0)
        client = app.test_client()
        assert client.get("/v1/meta/error-codes").status_code == 200
        redis.stop()
        for _ in range(5):  # more than the limit: nothing can count them, so all pass
            assert client.get("/v1/meta/error-codes").status_code == 200
        text = client.get("/metrics").get_data(as_text=True)
        (value,) = re.findall(r"^ratelimit_storage_errors_total (\S+)$", text, re.MULTILINE)
        assert float(value) >= 5
    finally:
        redis.stop()
