"""Shared by the benchmarks: a throwaway database with one user to log in as."""

from __future__ import annotations

import json
import os
import urllib.request

from sqlalchemy import make_url

from myapp.devservices.secrets import generate as generate_local_secrets
from myapp.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL

EMAIL = "bench@example.com"
PASSWORD = "bench-password-123"  # noqa: S105 - a throwaway account in a throwaway database


def prepare_database(base_url: str, name: str = "bench") -> str:
    """Fresh `myapp_bench_<name>` database, migrated, with one user to log in as (each
    benchmark has its own, so two running at once do not recreate each other's)."""
    import psycopg

    from myapp import create_app
    from myapp.core.context import SYSTEM, bind_actor
    from myapp.extensions import db
    from myapp.users.seed import ensure_user, seed_roles

    database = f"myapp_bench_{name}".replace("-", "_")
    url = make_url(base_url).set(database=database).render_as_string(hide_password=False)
    admin_url = make_url(base_url).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")
    os.environ["DATABASE_URL"] = url
    app = create_app()
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        bind_actor(SYSTEM)
        seed_roles()
        ensure_user(email=EMAIL, password=PASSWORD, name="Bench", roles=["user"])
        db.engine.dispose()
    return url


def server_env(name: str, **overrides: str) -> dict[str, str]:
    """Environment for a benchmark server: its own migrated database, quiet logs."""
    for key, value in generate_local_secrets().items():  # no built-in secrets: random ones
        os.environ.setdefault(key, value)
    base_db = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    return {
        "APP_ENV": "test",
        "DATABASE_URL": prepare_database(base_db, name),
        "REDIS_URL": os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        "APP_NAME": f"myapp-bench-{name}",  # Redis keys of its own
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": f"/tmp/myapp-bench-{name}-prometheus",  # noqa: S108
        **overrides,
    }


def access_token(base: str) -> str:
    """Log in as the benchmark user on the server at `base`; its access token."""
    body = json.dumps({"email": EMAIL, "password": PASSWORD}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{base}/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())["data"]["accessToken"]


def prod_secrets() -> dict[str, str]:
    """Fresh random secrets for the production profile (which refuses placeholders)."""
    return generate_local_secrets()


def many_access_tokens(env: dict[str, str], count: int) -> list[str]:
    """`count` access tokens of the benchmark user, each of a login of its own, signed as
    the servers running with `env` sign them (logging in that often would take minutes
    of password hashing and meet the login budget)."""
    from myapp import create_app
    from myapp.auth.models import AuthSession
    from myapp.auth.tokens import issue_pair, refresh_expiry
    from myapp.core.db import new_id, unit_of_work
    from myapp.extensions import db
    from myapp.users.models import User

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        app = create_app()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    with app.app_context():
        user = db.session.query(User).filter_by(email=EMAIL).one()
        session_ids = [new_id() for _ in range(count)]
        with unit_of_work():
            db.session.add_all(
                AuthSession(id=session_id, user_id=user.id, expires_at=refresh_expiry())
                for session_id in session_ids
            )
        tokens = [
            issue_pair(user=user, session_id=session_id, refresh_id=new_id())["access_token"]
            for session_id in session_ids
        ]
        db.engine.dispose()
    return tokens
