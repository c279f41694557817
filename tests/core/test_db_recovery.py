"""A PostgreSQL restart, without pool pre-ping: the app recovers by itself.

The pool keeps connections the restart has cut. The first read that finds one dead makes
SQLAlchemy invalidate the whole pool, and the caller step repeats that read on a new
connection, so the first authenticated request after the restart is already served;
every later request, authenticated or not, gets fresh connections.
"""

from __future__ import annotations

import pytest
from flask_migrate import upgrade

from myapp.core.context import SYSTEM, bind_actor
from myapp.extensions import db
from myapp.users import service as users_service
from myapp.users.seed import seed_roles
from tests.conftest import bearer, login
from tests.support.servers import ThrowawayPostgres

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres(tmp_path):
    server = ThrowawayPostgres(tmp_path / "pg")
    server.start()
    yield server
    server.stop()


def test_requests_after_a_restart_are_served_without_pre_ping(make_app, postgres, logs):
    app = make_app(database_url=postgres.url, db_pool_pre_ping=False)
    with app.app_context():
        upgrade()
        seed_roles()
        bind_actor(SYSTEM)
        users_service.create_user(email="pg@example.com", password="pg-password-1", name="Pg")
        db.session.remove()
    client = app.test_client()
    tokens = login(client, "pg@example.com", "pg-password-1")
    assert client.get("/v1/users/me", headers=bearer(tokens)).status_code == 200

    postgres.stop()  # a restart between two requests: the pooled connection is dead
    postgres.start()
    first = client.get("/v1/users/me", headers=bearer(tokens))
    assert first.status_code == 200, first.get_json()
    assert any(r["event"] == "db.reconnected" for r in logs.records())
    assert login(client, "pg@example.com", "pg-password-1")["accessToken"]

    postgres.stop()  # down for a while: answers say so, quickly
    down = client.get("/v1/users/me", headers=bearer(tokens))
    assert (down.status_code, down.get_json()["error"]["code"]) == (503, "SERVICE_UNAVAILABLE")
    postgres.start()
    assert client.get("/v1/users/me", headers=bearer(tokens)).status_code == 200
    with app.app_context():
        assert db.engine.pool._pre_ping is False  # noqa: SLF001 - recovered without it
