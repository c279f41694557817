"""The bare-Flask peer of `bench/hot_path.py`: the least a `GET /v1/users/me` can do.

It verifies the same access token with PyJWT (HS256, expiry) and reads the user and its
role names with one psycopg SELECT on a pooled connection, then answers the same JSON
shape as the project. No envelope schema, guards, logs, metrics or security headers:
it is the yardstick, not an example. Served by the same gunicorn config as the project:

    gunicorn -c docker/gunicorn.conf.py bench.peer_app:app
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402 - after patching, as in wsgi.py
import queue  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import jwt  # noqa: E402
import psycopg  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402

POOL_SIZE = 10
SQL = """
SELECT u.id, u.email, u.name, u.status, u.created_at, u.updated_at,
       coalesce((SELECT array_agg(r.name ORDER BY r.name) FROM user_roles ur
                 JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}') AS roles
FROM users u WHERE u.id = %s AND u.deleted_at IS NULL
"""

app = Flask(__name__)
_secret = os.environ["JWT_SECRET_KEY"]
_dsn = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
_idle: queue.LifoQueue = queue.LifoQueue()
_opened = 0


@contextmanager
def connection():
    """A pooled autocommit connection (at most POOL_SIZE per process)."""
    global _opened  # noqa: PLW0603 - one tiny pool per worker process
    try:
        conn = _idle.get_nowait()
    except queue.Empty:
        if _opened < POOL_SIZE:
            _opened += 1
            conn = psycopg.connect(_dsn, autocommit=True)
        else:
            conn = _idle.get(timeout=5)
    try:
        yield conn
    finally:
        _idle.put(conn)


@app.get("/health/live")
def live():
    """Answers once a worker serves."""
    return {"status": "ok"}


@app.get("/v1/users/me")
def me():
    """The caller, as the project answers it."""
    header = request.headers.get("Authorization", "")
    try:
        claims = jwt.decode(header.removeprefix("Bearer "), _secret, algorithms=["HS256"])
    except jwt.PyJWTError:
        return jsonify({"success": False}), 401
    with connection() as conn:
        row = conn.execute(SQL, (claims["sub"],)).fetchone()
    if row is None:
        return jsonify({"success": False}), 404
    user_id, email, name, status, created, updated, roles = row
    data = {
        "id": str(user_id),
        "email": email,
        "name": name,
        "phone": None,
        "roles": roles,
        "status": status,
        "createdAt": created.isoformat(),
        "updatedAt": updated.isoformat(),
    }
    return jsonify({"success": True, "data": data})
