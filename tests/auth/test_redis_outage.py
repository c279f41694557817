"""Auth while Redis is down: logout fails closed, reads keep working on the database checks."""

from __future__ import annotations

import pytest

from tests.conftest import bearer, login
from tests.support.servers import ThrowawayRedis

pytestmark = pytest.mark.slow


def test_logout_fails_closed_and_authenticated_reads_go_on(make_app, make_user):
    redis = ThrowawayRedis()
    redis.start()
    try:
        app = make_app(redis_url=redis.url, redis_max_retries=0)
        client = app.test_client()
        make_user(email="outage@example.com")
        tokens = login(client, "outage@example.com")
        redis.stop()

        # The denylist is unreachable; the session check in PostgreSQL still applies.
        assert client.get("/v1/users/me", headers=bearer(tokens)).status_code == 200
        # Logging out cannot denylist the token: refuse rather than pretend it worked.
        response = client.post("/v1/auth/logout", headers=bearer(tokens))
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert client.get("/v1/users/me", headers=bearer(tokens)).status_code == 200
        # Logins are not locked out by the rate limiter's outage (it fails open).
        login(client, "outage@example.com")

        redis.start()
        assert client.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
        assert client.get("/v1/users/me", headers=bearer(tokens)).status_code == 401
    finally:
        redis.stop()
