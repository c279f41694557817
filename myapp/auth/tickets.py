"""Single-use tickets: a bearer token's stand-in where a browser cannot send headers.

`EventSource` cannot set `Authorization`, and an access token must never travel in a URL
(it would land in proxy logs and browser history for its whole life). A client with a
valid token asks for a ticket (`POST /v1/events/ticket`) and opens the stream with
`?ticket=`. The ticket is 32 random bytes; Redis keeps only its SHA-256, with the verified
credentials it stands for, for `SSE_TICKET_TTL_SECONDS`. Redeeming it is one `GETDEL`:
it works once. The credentials then go through the same checks as a bearer token
(denylist, login session, token version), so a ticket of a revoked login is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets

from flask import g, request

from myapp.core.config import current_settings
from myapp.core.context import Credentials
from myapp.core.errors import AppError
from myapp.core.pipeline import current_route_policy
from myapp.core.redis import redis_client, redis_key

QUERY_PARAMETER = "ticket"
_MAX_LENGTH = 128


def _key(ticket: str) -> str:
    return redis_key("ticket", hashlib.sha256(ticket.encode()).hexdigest())


def issue(credentials: Credentials) -> tuple[str, int]:
    """A new ticket for `credentials` and its lifetime in seconds (raises if Redis is down)."""
    ttl = current_settings().sse_ticket_ttl_seconds
    ticket = secrets.token_urlsafe(32)
    redis_client().set(_key(ticket), json.dumps(dataclasses.asdict(credentials)), ex=ttl)
    return ticket, ttl


def redeem_ticket() -> None:
    """Pipeline step: on routes that accept one, a `?ticket=` instead of a bearer token.

    A request that also sends `Authorization` uses the token (the ticket stays unspent).
    An unknown, spent or expired ticket is remembered as `AUTH_TOKEN_INVALID`, raised when
    the route needs its caller, like a bad token.
    """
    if "Authorization" in request.headers or not current_route_policy().ticket:
        return
    ticket = request.args.get(QUERY_PARAMETER)
    if ticket is None:
        return
    stored = redis_client().getdel(_key(ticket)) if 0 < len(ticket) <= _MAX_LENGTH else None
    if stored is None:
        g.credentials_error = AppError(
            "AUTH_TOKEN_INVALID", "The ticket is unknown, used or expired."
        )
        return
    g.credentials = Credentials(**json.loads(stored))
