"""Test harness: a fresh PostgreSQL database migrated for real, a dedicated Redis index.

- The server comes from `DATABASE_URL` / `REDIS_URL` (`make test` starts embedded ones when
  nothing answers). Each run creates its own database `myapp_test_<run id>` (dropped at the
  end) and uses Redis database `TEST_REDIS_DB` (default 15) with its own key prefix
  `myapp-<run id>:test:`, cleared before every test. Two runs on one machine never see
  each other's data.
- Each test runs inside a transaction that is rolled back; services' commits only release
  a savepoint.
- Under `pytest -n N`, each worker starts with its share of the slow tests
  (`tests/support/ordering.py`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import delete, make_url, or_, select

from myapp import create_app
from myapp.audit.models import AuditLog
from myapp.core.config import current_settings
from myapp.core.db import unit_of_work
from myapp.core.outbox import OutboxEvent
from myapp.core.redis import redis_client
from myapp.core.tasks import QUEUES, celery_app
from myapp.devservices.secrets import generate as generate_local_secrets
from myapp.extensions import db, limiter
from myapp.flags import service as flags_service
from myapp.flags.cache import FlagCache, flag_cache
from myapp.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings
from myapp.users.models import Role, User
from myapp.users.seed import seed_roles
from tests.support.ordering import slow_first
from tests.support.pgwire import StatementCounter
from tests.support.routes import register_test_routes


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist, lay the slow tests out so that every worker starts with its share."""
    items[:] = slow_first(items, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")))


#: Non-placeholder secrets, so a test can boot the stage/prod profiles (never used anywhere else).
PROD_SECRETS = {
    "secret_key": "t" * 40 + "-test-only",
    "jwt_secret_key": "j" * 40 + "-test-only",
    "encryption_keys": "k1:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=",
    "blind_index_key": "SUpLTE1OT1BRUlNUVVZXWFlaYWJjZGVmZ2hpamtsbW4=",
}
RUN_ID = os.environ.get("TEST_RUN_ID") or secrets.token_hex(3)
# The app has no built-in secrets: this run gets random ones, in the environment so that
# the gunicorn and Celery processes some tests start use the same (a token signed by one
# process is valid in another).
for _name, _value in generate_local_secrets().items():
    os.environ.setdefault(_name, _value)
TEST_DB_NAME = f"myapp_test_{RUN_ID}"
#: Local blob storage of this test process (the workers and servers it starts inherit it).
FILES_DIR = os.path.join(  # noqa: PTH118
    tempfile.gettempdir(), f"myapp-files-{RUN_ID}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
)
os.environ["FILES_LOCAL_DIR"] = FILES_DIR
TEST_APP_NAME = f"myapp-{RUN_ID}"
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15"))


def server_database_url(name: str) -> str:
    """`DATABASE_URL`'s server with another database name."""
    base = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def libpq_url(sqlalchemy_url: str) -> str:
    """The same URL without SQLAlchemy's `+psycopg` driver suffix."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def drop_database(name: str) -> None:
    """Drop `name` on the test server, closing its connections."""
    with psycopg.connect(libpq_url(server_database_url("postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def recreate_database(name: str) -> str:
    """Drop and create `name` on the test server; return its SQLAlchemy URL."""
    drop_database(name)
    with psycopg.connect(libpq_url(server_database_url("postgres")), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_database_url(name)


def redis_test_url() -> str:
    """`REDIS_URL`'s server with the dedicated test index."""
    base = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    head, _, _ = base.rpartition("/")
    return f"{head}/{TEST_REDIS_DB}" if head.count("/") >= 2 else f"{base}/{TEST_REDIS_DB}"


def redis_of(app: Flask) -> Any:
    """The app's Redis client."""
    with app.app_context():
        return redis_client()


def settings_of(app: Flask) -> Settings:
    """The app's settings."""
    with app.app_context():
        return current_settings()


def flags_of(app: Flask) -> FlagCache:
    """The app's flag cache."""
    with app.app_context():
        return flag_cache()


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """Environment for an app server (gunicorn) a test starts: this run's database, Redis
    index and key prefix, quiet logs."""
    return {
        "APP_ENV": "test",
        "APP_NAME": TEST_APP_NAME,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_test_url(),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def make_settings(**overrides: Any) -> Settings:
    """Test settings; keyword overrides win over the environment."""
    values: dict[str, Any] = {
        "app_env": "test",
        "app_name": TEST_APP_NAME,
        "database_url": server_database_url(TEST_DB_NAME),
        "redis_url": redis_test_url(),
        "celery_broker_url": None,
        "cache_redis_url": None,
        "log_level": "INFO",
        "shutdown_drain_seconds": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh test database at the head migration (the real migrations, not create_all)."""
    url = recreate_database(TEST_DB_NAME)
    app = create_app(make_settings(database_url=url))
    with app.app_context():
        upgrade()
        seed_roles()  # reference data every test may rely on (committed once)
        flags_service.seed()
        db.engine.dispose()
    yield url
    drop_database(TEST_DB_NAME)
    shutil.rmtree(FILES_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def app(database_url: str) -> Iterator[Flask]:
    """The application under test (test profile), plus test-only routes under `/_test`."""
    application = create_app(make_settings(database_url=database_url))
    register_test_routes(application)
    yield application
    clear_redis_prefix(redis_of(application), settings_of(application).redis_prefix)
    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def make_app(app: Flask, database_url: str) -> Callable[..., Flask]:
    """Build another app with some settings changed (`make_app(app_env="prod", ...)`)."""
    created: list[Flask] = []
    # flask-limiter is one object per process; init_app on another app re-points its
    # storage. Put it back afterwards so later tests use the session app's Redis.
    limiter_state = dict(limiter.__dict__)

    def factory(**overrides: Any) -> Flask:
        new_app = create_app(make_settings(**{"database_url": database_url, **overrides}))
        created.append(new_app)
        return new_app

    yield factory
    for made in created:
        with made.app_context():
            db.engine.dispose()
    limiter.__dict__.clear()
    limiter.__dict__.update(limiter_state)
    # Each new Celery app becomes the current and default one (what `@shared_task`
    # proxies resolve to): give that back to the session app, whose broker outlives this test.
    celery_app(app).set_current()
    celery_app(app).set_default()


@dataclass(frozen=True)
class OwnDatabase:
    """A migrated database no other test uses, and an app bound to it."""

    url: str
    app: Flask
    #: Redis key prefix of its own: give its servers `APP_NAME=app_name`.
    app_name: str
    manager_email: str


@pytest.fixture
def own_database(request, make_app, password_hash) -> Iterator[OwnDatabase]:
    """For tests whose served processes must not share work with other tests' workers and
    outbox relays (which would take their jobs): a database and a Redis prefix of their
    own, migrated and seeded, with a manager (`PASSWORD`) who may export users."""
    suffix = re.sub(r"\W", "_", request.node.name)[:24].lower()
    name = f"{TEST_DB_NAME}_{suffix}"
    url = recreate_database(name)
    app_name = f"{TEST_APP_NAME}-{suffix.replace('_', '-')}"[:31].rstrip("-")
    app = make_app(database_url=url, app_name=app_name)
    email = f"manager-{secrets.token_hex(4)}@own.test"
    with app.app_context():
        upgrade()
        seed_roles()
        flags_service.seed()
        with unit_of_work():
            manager = User(email=email, name="Manager", password_hash=password_hash)
            manager.roles = list(db.session.scalars(select(Role).where(Role.name == "manager")))
            db.session.add(manager)
    yield OwnDatabase(url=url, app=app, app_name=app_name, manager_email=email)
    with app.app_context():
        db.engine.dispose()
    drop_database(name)


def clear_redis_prefix(client: Any, prefix: str) -> None:
    """Delete this run's keys only (other runs may share the index)."""
    batch = list(client.scan_iter(match=f"{prefix}*", count=500))
    while batch:
        client.unlink(*batch[:500])
        batch = batch[500:]


@pytest.fixture(autouse=True)
def _clear_test_redis(app: Flask) -> None:
    clear_redis_prefix(redis_of(app), settings_of(app).redis_prefix)
    flags_of(app).clear()  # flags cached inside an earlier, rolled-back test


class _ConnectionBoundSession(FlaskSession):
    """Flask-SQLAlchemy's session routes statements to its engine, ignoring `bind`; in tests
    everything must go through the one connection holding the test transaction."""

    def get_bind(self, *args: Any, **kwargs: Any) -> Any:
        return self.bind


@pytest.fixture
def db_session(app: Flask) -> Iterator[Any]:
    """Run the test in a transaction that is rolled back; commits become savepoints."""
    with app.app_context():
        connection = db.engine.connect()
        transaction = connection.begin()
        original = db.session
        db.session = db._make_scoped_session(
            {
                "class_": _ConnectionBoundSession,
                "bind": connection,
                "join_transaction_mode": "create_savepoint",
            }
        )
        try:
            yield db.session
        finally:
            db.session.remove()
            db.session = original
            transaction.rollback()
            connection.close()


@pytest.fixture
def client(app: Flask, db_session: Any) -> FlaskClient:
    """A test client whose requests share the rolled-back test transaction."""
    return app.test_client()


class LogCapture:
    """Formatted log output of the app's own pipeline (masking and rendering included)."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    @property
    def text(self) -> str:
        """Everything logged so far."""
        return self._stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        """Each JSON line, parsed."""
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]


@pytest.fixture
def logs(app: Flask) -> Iterator[LogCapture]:
    """Capture log lines as the app's configured root handler renders them."""
    root = logging.getLogger()
    ours = next(h for h in root.handlers if h.get_name() == "myapp")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ours.formatter)
    root.addHandler(handler)
    try:
        yield LogCapture(stream)
    finally:
        root.removeHandler(handler)


# --- Brokers: the machine's Redis (this run's key prefix) and RabbitMQ (a vhost per test) ---
RABBITMQ = ("127.0.0.1", 5672)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _rabbitmq_answers() -> bool:
    try:
        socket.create_connection(RABBITMQ, timeout=1).close()
    except OSError:
        return False
    return shutil.which("rabbitmqctl") is not None


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A vhost of this run on the machine's RabbitMQ (created once, deleted at the end)."""
    if not _rabbitmq_answers():
        pytest.skip("RabbitMQ (with rabbitmqctl) is not on this machine")
    vhost = f"myapp-test-{RUN_ID}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def _purge_amqp_queues(url: str) -> None:
    """Empty our queues, so a test never meets a message another one left behind."""
    from kombu import Connection

    with Connection(url) as connection:
        for queue in QUEUES:
            channel = connection.channel()
            # A queue not declared yet has nothing to purge (and closes the channel).
            with contextlib.suppress(Exception):
                channel.queue_purge(queue)
            with contextlib.suppress(Exception):
                channel.close()


def broker_of_kind(request: pytest.FixtureRequest, kind: str) -> str:
    """The machine's Redis (this run's key prefix, cleared before each test) or RabbitMQ
    (this run's vhost, its queues purged now) as a broker URL."""
    if kind == "redis":
        return redis_test_url()
    url = request.getfixturevalue("rabbitmq_url")
    _purge_amqp_queues(url)
    return url


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request) -> str:
    """Each broker in turn: the test runs once on Redis and once on RabbitMQ."""
    return broker_of_kind(request, request.param)


PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session")
def password_hash(app: Flask) -> str:
    """One real argon2id hash of `PASSWORD`, reused so that test users are cheap to make."""
    from myapp.core.passwords import hash_password

    with app.app_context():
        return hash_password(PASSWORD)


@pytest.fixture
def wire(database_url: str) -> Iterator[StatementCounter]:
    """A proxy in front of the test PostgreSQL that counts the statements sent through it
    (`make_app(database_url=wire.url)`; `with wire.counting() as statements:`)."""
    counter = StatementCounter(database_url)
    yield counter
    counter.close()


@pytest.fixture
def commit_user(password_hash: str) -> Iterator[Callable[..., str]]:
    """Commit a user for real through `app` (an app of `make_app`, which cannot see the
    test transaction); its e-mail. Removed afterwards, with what its requests left."""
    made: list[tuple[Flask, Any]] = []

    def factory(app: Flask, role: str = "user") -> str:
        email = f"committed-{secrets.token_hex(4)}@example.com"
        with app.app_context():
            found = db.session.execute(select(Role).where(Role.name == role)).scalar_one()
            user = User(email=email, name="Committed", password_hash=password_hash, roles=[found])
            db.session.add(user)
            db.session.commit()
            made.append((app, user.id))
        return email

    yield factory
    for app, user_id in made:
        with app.app_context():
            db.session.execute(
                delete(AuditLog).where(
                    or_(AuditLog.actor_id == user_id, AuditLog.target_id == str(user_id))
                )
            )
            # Events its requests left (an ended login's) would count in outbox tests.
            db.session.execute(delete(OutboxEvent).where(OutboxEvent.aggregate_id == str(user_id)))
            db.session.execute(delete(User).where(User.id == user_id))  # logins cascade
            db.session.commit()


@pytest.fixture
def make_user(app: Flask, db_session: Any, password_hash: str) -> Callable[..., Any]:
    """Insert a user (password `PASSWORD`) inside the test transaction."""
    from sqlalchemy import select

    from myapp.users.models import Role, User

    counter = iter(range(1_000_000))

    def factory(*, roles: tuple[str, ...] = ("user",), phone: str | None = None, **fields: Any):
        n = next(counter)
        values = {
            "email": f"user{n}@example.com",
            "name": f"User {n}",
            "password_hash": password_hash,
            **fields,
        }
        user = User(**values)
        if phone:
            user.phone = phone
        user.roles = list(db_session.execute(select(Role).where(Role.name.in_(roles))).scalars())
        db_session.add(user)
        db_session.flush()
        return user

    return factory


def login(client: FlaskClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    """Log in through the API; return the token pair (fails the test otherwise)."""
    response = client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    """Authorization header for a token pair."""
    return {"Authorization": f"Bearer {tokens['accessToken']}"}


def idempotency_key() -> dict[str, str]:
    """A fresh `Idempotency-Key` header (POST /v1/users requires one)."""
    import uuid

    return {"Idempotency-Key": str(uuid.uuid4())}
