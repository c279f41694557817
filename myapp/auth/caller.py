"""The caller step of the request pipeline: who is asking, resolved once per request.

Routes that declare a caller (`@blp.auth(...)`) get it here, after the guards step: the
verified token (`g.credentials`) becomes an `Actor` with one SQL statement (user, roles,
token version and login session together), or the request ends with the catalog's 401
code. The actor is left on `g.caller` and bound for logs, audit rows and services; the
user row it was read from is kept too (`context.caller_record()`), so answering with
one's own account costs no second query.
"""

from __future__ import annotations

from flask import g

from myapp.auth import service
from myapp.core.context import bind_actor, current_credentials
from myapp.core.errors import AppError
from myapp.core.pipeline import current_route_policy


def resolve_caller() -> None:
    """Step: 401 without a valid, live token; 403 without the route's permission."""
    policy = current_route_policy()
    if not policy.caller:
        return
    error: AppError | None = g.get("credentials_error")
    if error is not None:
        raise error
    credentials = current_credentials()
    if credentials is None:
        raise AppError("AUTH_REQUIRED")
    if g.get("credentials_revoked"):
        raise AppError("AUTH_TOKEN_REVOKED")
    actor, record = service.resolve_caller(credentials=credentials)
    g.caller_record = record
    g.caller = actor
    bind_actor(actor)
    if policy.permission and not actor.can(policy.permission):
        raise AppError("FORBIDDEN", f"Requires permission {policy.permission}.")
