"""The database pool is observable: connections in use, and requests that found none."""

from __future__ import annotations

from myapp.extensions import db


def samples(client) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


def test_connections_in_use_and_pool_timeouts_are_counted(make_app):
    app = make_app(db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.2)
    client = app.test_client()
    before = samples(client)
    with app.app_context():
        held = db.engine.connect()  # the pool's only connection
    try:
        during = samples(client)
        answer = client.post(  # needs the database: waits 0.2 s, then 503
            "/v1/auth/login", json={"email": "nobody@example.com", "password": "x" * 12}
        )
        after = samples(client)
    finally:
        held.close()

    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert during["db_pool_connections_in_use"] >= before.get("db_pool_connections_in_use", 0) + 1
    timeouts = "db_pool_timeouts_total"
    assert after[timeouts] - before.get(timeouts, 0.0) == 1
