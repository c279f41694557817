"""Request-scoped context: request id, credentials and actor.

The request id and the actor live in contextvars (per greenlet under gevent, per thread
otherwise), so every log line, SQL comment, audit row and outgoing task message of a
request can read them without passing them around. What the pipeline's steps leave for
later steps (the verified `Credentials`, the resolved caller) lives on `flask.g`.
"""

from __future__ import annotations

import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog
from flask import Response, g, request
from ulid import ULID

from myapp.core import tracing

REQUEST_ID_HEADER = "X-Request-ID"
#: Probes and scrapes: they skip the admission queue and the budget, and log quietly.
OPERATIONAL_PREFIXES = ("/health", "/metrics")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: a user, the system (jobs, CLI) or an anonymous caller."""

    type: str
    id: str | None = None
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()
    session_id: str | None = None

    @property
    def is_user(self) -> bool:
        """True for an authenticated user."""
        return self.type == "user"

    def can(self, permission: str) -> bool:
        """True when the actor holds `permission`."""
        return permission in self.permissions


@dataclass(frozen=True, slots=True)
class Client:
    """Where the request came from (after trusted-proxy handling)."""

    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """A bearer access token whose signature, expiry, type and claims were verified.

    Verified without I/O; whether it was revoked is decided by later steps (denylist in
    Redis, user and login session in PostgreSQL).
    """

    user_id: str
    session_id: str
    token_id: str
    token_version: int
    expires_at: int


ANONYMOUS = Actor(type="anonymous")
SYSTEM = Actor(type="system")
actor_var: ContextVar[Actor] = ContextVar("actor", default=ANONYMOUS)
client_var: ContextVar[Client] = ContextVar("client", default=Client())  # noqa: B039 - frozen


def new_request_id() -> str:
    """A fresh, time-ordered request id."""
    return str(ULID())


def accept_request_id(candidate: str | None) -> str:
    """Return the client's id when it is well formed, else a new one."""
    if candidate and _VALID_REQUEST_ID.fullmatch(candidate):
        return candidate
    return new_request_id()


def bind_request_id(request_id: str) -> None:
    """Make `request_id` current for logs, SQL comments and task headers."""
    request_id_var.set(request_id)
    structlog.contextvars.bind_contextvars(request_id=request_id)
    tracing.annotate("request_id", request_id)


def current_request_id() -> str | None:
    """The request id of the current request or task, if any."""
    return request_id_var.get()


def bind_actor(actor: Actor) -> None:
    """Record who is acting for the rest of this request or task."""
    actor_var.set(actor)
    structlog.contextvars.bind_contextvars(user_id=actor.id if actor.type == "user" else None)


def current_actor() -> Actor:
    """The current actor (anonymous when nobody is bound)."""
    return actor_var.get()


def current_client() -> Client:
    """The current request's client address and user agent."""
    return client_var.get()


def current_credentials() -> Credentials | None:
    """The verified bearer token of this request, if it carried a valid one."""
    return g.get("credentials")


def caller_record() -> Any:
    """The caller's own row, as the pipeline read it with the caller (None before)."""
    return g.get("caller_record")


def clear_context() -> None:
    """Forget the request id and actor at the end of a request or task."""
    request_id_var.set(None)
    actor_var.set(ANONYMOUS)
    client_var.set(Client())
    structlog.contextvars.clear_contextvars()


def bind_request() -> None:
    """Pipeline step 1: request id (the client's when well formed), client, anonymous actor.

    The request starts from an empty `g` even when it shares an application context with
    earlier requests (tests keep one open around several): later steps trust that what
    they find there was left by this request.
    """
    vars(g).clear()
    g.request_started = time.perf_counter()
    bind_request_id(accept_request_id(request.headers.get(REQUEST_ID_HEADER)))
    bind_actor(ANONYMOUS)
    agent = request.user_agent.string[:300] or None
    client_var.set(Client(ip=request.remote_addr, user_agent=agent))


def echo_request_id(response: Response) -> Response:
    """Every response names its request."""
    response.headers[REQUEST_ID_HEADER] = current_request_id() or new_request_id()
    return response


def forget_request(_: BaseException | None = None) -> None:
    """Teardown: nothing of this request leaks into the next one on this greenlet."""
    clear_context()
