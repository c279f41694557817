"""Routes that exist only in tests, to drive the platform's error, logging and SQL paths."""

from __future__ import annotations

import marshmallow as ma
from flask import Flask, request, session
from sqlalchemy import text

from myapp.core.api import Blueprint, CursorPageArgs, Schema
from myapp.core.logging import get_logger
from myapp.extensions import db

blp = Blueprint("test_support", __name__, url_prefix="/_test")
log = get_logger("tests.support")


class EchoSchema(Schema):
    """A body with a validated field."""

    email = ma.fields.Email(required=True)
    display_name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=20))


@blp.route("/echo", methods=["POST"])
@blp.arguments(EchoSchema)
@blp.response(201, EchoSchema)
def echo(body: dict) -> dict:
    """Return the validated body."""
    return body


@blp.route("/boom")
def boom() -> None:
    """Raise an unexpected error whose message holds a secret."""
    raise RuntimeError("kaboom password=hunter2-in-exception")


@blp.route("/sql")
def sql() -> dict:
    """Run two statements, returning the text PostgreSQL received for each."""
    log.info("test.sql.start")
    first = db.session.execute(text("SELECT current_query()")).scalar_one()
    second = db.session.execute(text("SELECT current_query() AS again")).scalar_one()
    log.info("test.sql.end")
    return {"queries": [first, second]}


@blp.route("/sleep")
def sleep() -> dict:
    """Hold a database connection for `?seconds=` (default 0.5) in `pg_sleep`."""
    import time

    seconds = float(request.args.get("seconds", "0.5"))
    started = time.time()
    db.session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
    db.session.rollback()
    return {"started": started, "ended": time.time()}


@blp.route("/counted", methods=["POST"])
def counted() -> dict:
    """Count executions in Redis (per `?name=`), optionally slowly (`?sleep=`)."""
    import time

    from myapp.core.redis import redis_client, redis_key

    count = redis_client().incr(redis_key("test", "counted", request.args.get("name", "x")))
    time.sleep(float(request.args.get("sleep", "0")))
    return {"count": count, "body": request.get_json(silent=True)}


@blp.route("/fails", methods=["POST"])
def fails() -> None:
    """Count executions, then fail with a 500."""
    from myapp.core.redis import redis_client, redis_key

    redis_client().incr(redis_key("test", "fails"))
    raise RuntimeError("handler failure")


@blp.route("/pid")
def pid() -> dict:
    """Which worker process answered."""
    import os

    return {"pid": os.getpid()}


@blp.route("/cursor")
@blp.arguments(CursorPageArgs, location="query")
def cursor_args(args: dict) -> dict:
    """Echo parsed cursor arguments (query validation path)."""
    return {"limit": args["limit"]}


@blp.route("/visits")
def visits() -> dict:
    """Count this browser's visits in Flask's signed-cookie session."""
    session["visits"] = session.get("visits", 0) + 1
    return {"visits": session["visits"]}


def register_test_routes(app: Flask) -> None:
    """Attach the test blueprint (plain Flask registration: not part of the OpenAPI doc)."""
    app.register_blueprint(blp)


@blp.route("/db-error", methods=["POST"])
def db_error() -> dict:
    """Insert a user row (with a real password hash) that the database refuses."""
    from myapp.core.passwords import hash_password
    from myapp.users.models import User

    password = (request.get_json(silent=True) or {}).get("password", "")
    db.session.add(
        User(
            email="dberror@example.com",
            name="Db",
            status="bogus",
            password_hash=hash_password(password),
        )
    )
    db.session.flush()  # violates the status check constraint
    return {}
