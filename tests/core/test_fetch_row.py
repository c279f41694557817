"""`fetch_row`, the caller's read past the ORM, against the real PostgreSQL: it gives its
connection back as the ORM expects it, waits for the pool like any other read, and logs
slow reads like SQLAlchemy's own."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy import bindparam, delete, func, literal, select

from myapp.core.db import fetch_row, unit_of_work
from myapp.extensions import db
from myapp.users.models import Role
from tests.conftest import PASSWORD, bearer, login


def test_a_failed_read_leaves_its_connection_in_transaction_mode(make_app):
    """The read switches its connection to autocommit; after an error it must switch it
    back, or the next unit of work on it would commit statement by statement."""
    app = make_app(db_pool_size=1, db_max_overflow=0)  # the same connection every time
    name = f"never-{uuid.uuid4().hex[:8]}"
    with app.test_request_context():
        with pytest.raises(psycopg.errors.DivisionByZero):
            fetch_row(select(literal(1) / bindparam("zero")), {"zero": 0})
        with pytest.raises(RuntimeError), unit_of_work() as session:
            session.add(Role(name=name))
            session.flush()  # the INSERT reaches the server...
            raise RuntimeError("...and the use case fails: all of it must roll back")
        db.session.remove()
        try:
            assert fetch_row(select(func.count()).where(Role.name == name), {}) == (0,)
        finally:
            with unit_of_work() as session:  # only if the rollback did not happen
                session.execute(delete(Role).where(Role.name == name))


def test_the_caller_read_waits_for_the_pool_then_answers_503(make_app, commit_user):
    app = make_app(db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.2)
    client = app.test_client()
    headers = bearer(login(client, commit_user(app), PASSWORD))
    with app.app_context():
        held = db.engine.connect()  # the pool's only connection
    try:
        answer = client.get("/v1/users/me", headers=headers)
    finally:
        held.close()
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (
        503,
        "SERVICE_UNAVAILABLE",
    )
    assert client.get("/v1/users/me", headers=headers).status_code == 200


def test_a_slow_read_is_logged_with_its_text_and_never_its_parameters(make_app, logs):
    app = make_app(db_slow_query_ms=20)
    with app.test_request_context():
        row = fetch_row(select(func.pg_sleep(0.05), bindparam("secret")), {"secret": "s3cr3t"})
    assert row is not None
    slow = [r for r in logs.records() if r["event"] == "db.slow_query"]
    assert len(slow) == 1 and slow[0]["duration_ms"] >= 50
    assert "pg_sleep" in slow[0]["sql"] and "s3cr3t" not in str(slow[0])
