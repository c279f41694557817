"""A served chat stack for the socket tests: realtime processes under real gunicorn, a real
Celery worker, committed users and rooms (the processes read them from PostgreSQL)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from flask import Flask

from myapp.auth import service as auth_service
from myapp.auth import tokens
from myapp.chat import service as chat_service
from myapp.core.context import Actor
from myapp.users import service as users_service
from tests.conftest import libpq_url, server_env
from tests.support.chat import ChatClient
from tests.support.servers import gunicorn, unused_port
from tests.support.workers import Worker

APP = "wsgi:app"
DOMAIN = "chat.test"
PASSWORD = "chat-password-123"
#: Short limits: a killed worker's task comes back within seconds on Redis.
FAST = {
    "CELERY_VISIBILITY_TIMEOUT": "4",
    "CELERY_TASK_SOFT_TIME_LIMIT": "2",
    "CELERY_TASK_TIME_LIMIT": "3",
    "CELERY_RETRY_BACKOFF": "0.2",
    "CELERY_RETRY_BACKOFF_MAX": "2",
    "REALTIME_LOGIN_CHECK_SECONDS": "1",
    "REALTIME_SHUTDOWN_GRACE_SECONDS": "1",
    "OUTBOX_RELAY_IN_WORKER": "false",
}
_names = itertools.count()


@dataclass
class Person:
    """A committed user and a fresh access token."""

    id: str
    email: str
    token: str
    session_id: str

    @property
    def actor(self) -> Actor:
        """Acting as this user in a service call."""
        return Actor(type="user", id=self.id, roles=frozenset({"user"}), session_id=self.session_id)


@dataclass
class ChatStack:
    """Served processes and helpers to make users, rooms and clients."""

    app: Flask
    database_url: str
    tmp: Path
    env: dict[str, str]
    bases: list[str] = field(default_factory=list)
    processes: list = field(default_factory=list)
    worker: Worker | None = None
    worker_metrics_port: int = 0
    clients: list[ChatClient] = field(default_factory=list)

    @property
    def base(self) -> str:
        """The first realtime process."""
        return self.bases[0]

    def person(self, roles: tuple[str, ...] = ("user",)) -> Person:
        """A committed user, logged in."""
        email = f"u{next(_names)}-{uuid.uuid4().hex[:6]}@{DOMAIN}"
        with self.app.app_context():
            user = users_service.create_user(
                email=email, password=PASSWORD, name=email, roles=list(roles)
            )
            user_id = str(user.id)
        return Person(user_id, email, *self.login(email))

    def login(self, email: str) -> tuple[str, str]:
        """A new login of that user: access token and its session id."""
        with self.app.test_request_context("/v1/auth/login", method="POST"):
            pair = auth_service.login(email=email, password=PASSWORD)
        token = pair["access_token"]
        with self.app.app_context():
            return token, tokens.verify_access(token).session_id

    def room(self, owner: Person, *members: Person, visibility: str = "public") -> str:
        """A committed room of `owner` with `members` added."""
        with self.app.test_request_context():
            room = chat_service.create_room(name="r", visibility=visibility, actor=owner.actor)
            for member in members:
                chat_service.add_member(
                    room_id=room.id, user_id=uuid.UUID(member.id), actor=owner.actor
                )
        return str(room.id)

    def client(self, person: Person | None, base: str | None = None, **kw) -> ChatClient:
        """A client (not connected yet) closed at the end of the test."""
        chat = ChatClient(base or self.base, person.token if person else None, **kw)
        self.clients.append(chat)
        return chat

    def joined(self, person: Person, room_id: str, base: str | None = None) -> ChatClient:
        """A connected client that joined `room_id`."""
        chat = self.client(person, base).connect()
        assert chat.call("chat:join", {"roomId": room_id}) == {"ok": True}
        return chat

    def query(self, sql: str, *params) -> list[tuple]:
        """Read the database directly."""
        with psycopg.connect(libpq_url(self.database_url)) as conn:
            return conn.execute(sql, params).fetchall()


def _cleanup(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        ours = f"SELECT id FROM users WHERE email LIKE '%@{DOMAIN}'"  # noqa: S608
        conn.execute(f"DELETE FROM rooms WHERE created_by IN ({ours})")  # noqa: S608
        conn.execute(f"DELETE FROM users WHERE id IN ({ours})")  # noqa: S608


@contextmanager
def served_realtime(
    stack: ChatStack, *, measured: bool = True, **env: str
) -> Iterator[tuple[object, str]]:
    """One more realtime process (one gevent worker, as the `realtime` role runs);
    `measured=False` without coverage, for tests that time it."""
    environment = {**stack.env, **env}
    environment.setdefault("PROMETHEUS_MULTIPROC_DIR", str(stack.tmp / f"prom-{uuid.uuid4().hex}"))
    with gunicorn(APP, workers=1, env=environment, measured=measured) as (process, base):
        yield process, base


@pytest.fixture(scope="module")
def served(app, database_url, tmp_path_factory) -> Iterator[ChatStack]:
    """One realtime process and one worker, shared by a module's tests."""
    tmp = tmp_path_factory.mktemp("chat")
    env = server_env(database_url, **FAST)
    stack = ChatStack(app, database_url, tmp, env)
    with ExitStack() as stack_exit:
        process, base = stack_exit.enter_context(served_realtime(stack))
        stack.bases.append(base)
        stack.processes.append(process)
        stack.worker_metrics_port = unused_port()
        stack.worker = Worker(
            database_url,
            tmp / "worker.log",
            name="chat",
            WORKER_METRICS_PORT=str(stack.worker_metrics_port),
            **FAST,
        ).wait_ready()
        stack_exit.callback(stack.worker.stop)
        try:
            yield stack
        finally:
            _cleanup(database_url)


@pytest.fixture
def stack(served) -> Iterator[ChatStack]:
    """The shared stack; this test's clients are closed after it."""
    yield served
    for chat in served.clients:
        chat.close()
    served.clients.clear()


MakePerson = Callable[..., Person]
