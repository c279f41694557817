"""Auth use cases: login, refresh (rotation + reuse detection), logout, sessions, passwords,
and resolving the caller of a request.

Every use case owns its unit of work; audit rows commit with the change they describe.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app
from prometheus_client import Counter
from sqlalchemy import Exists, String, Uuid, any_, bindparam, cast, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from myapp.audit import service as audit
from myapp.auth import tickets, tokens
from myapp.auth.models import AuthSession, RefreshToken
from myapp.auth.recent_callers import recent_callers
from myapp.core import events, passwords
from myapp.core.context import Actor, Credentials, current_actor, current_client
from myapp.core.db import new_id, unit_of_work
from myapp.core.errors import AppError
from myapp.core.guards import caller_generation, deny_token, is_denied, outdate_caller
from myapp.core.metrics import app_counter
from myapp.core.permissions import permissions_for
from myapp.extensions import db
from myapp.users import service as users_service

#: Emitted when logins end (logout, revoked, all of a user's): open streams of those end.
SESSIONS_ENDED = "auth.sessions_ended"


@dataclass(frozen=True, slots=True)
class SessionView:
    """A login as the caller sees it."""

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


def _now() -> datetime:
    return datetime.now(UTC)


def _issue(user: Any, session: AuthSession, parent_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Add the session's next refresh-token row and return the pair built on it."""
    client = current_client()
    refresh = RefreshToken(
        id=new_id(),
        session_id=session.id,
        parent_id=parent_id,
        expires_at=session.expires_at,
        ip=client.ip,
        user_agent=client.user_agent,
    )
    db.session.add(refresh)
    return tokens.issue_pair(user=user, session_id=session.id, refresh_id=refresh.id)


def _open_session(user: Any) -> dict[str, Any]:
    """Start a login session with its first refresh token; return the token pair."""
    client = current_client()
    session = AuthSession(
        id=new_id(),
        user_id=user.id,
        expires_at=tokens.refresh_expiry(),
        ip=client.ip,
        user_agent=client.user_agent,
    )
    db.session.add(session)
    return _issue(user, session)


def init_auth_metrics(app: Flask) -> Counter:
    """`auth_login_failures_total{reason}`: failed logins by why (the client is never told
    which). Many `unknown_user` look like credential stuffing; many `wrong_password` on
    few accounts like guessing."""
    return app_counter(app, "auth_login_failures_total", "Failed logins", ("reason",))


def login(*, email: str, password: str) -> dict[str, Any]:
    """Check credentials; same answer and similar time for unknown email and wrong password."""
    user = users_service.find_for_login(email=email)
    if user is None:
        passwords.burn_verification(password)
        failure = "unknown_user"
    elif not passwords.verify_password(user.password_hash, password):
        failure = "wrong_password"
    else:
        failure = None if user.is_active else "inactive"
    if failure:
        init_auth_metrics(current_app).labels(failure).inc()
        with unit_of_work():
            audit.record(
                action=audit.AuditAction.LOGIN_FAILED,
                target_type="user",
                target_id=user.id if user else None,
            )
        raise AppError("AUTH_INVALID_CREDENTIALS", "Email or password is wrong.")
    with unit_of_work():
        if passwords.needs_rehash(user.password_hash):
            user.password_hash = passwords.hash_password(password)
        pair = _open_session(user)
        actor = Actor(type="user", id=str(user.id))
        audit.record(
            action=audit.AuditAction.LOGIN, target_type="user", target_id=user.id, actor=actor
        )
    return pair


def _announce_ended(user_id: Any, session_ids: list[uuid.UUID]) -> None:
    """Tell whatever holds these logins open (event streams) that they ended, once the
    revocation commits (`auth.sessions_ended` through the outbox); then, what any process
    cached about the user's logins is out of date."""
    outdate_caller(user_id)
    if session_ids:
        events.emit(
            SESSIONS_ENDED,
            aggregate_type="user",
            aggregate_id=user_id,
            payload={"sessionIds": [str(session_id) for session_id in session_ids]},
        )


def _revoke_family(session_id: uuid.UUID) -> None:
    now = _now()
    db.session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.session_id == session_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def refresh(*, refresh_token: str) -> dict[str, Any]:
    """Spend `refresh_token` for a new pair. A spent token coming back revokes its family."""
    claims = tokens.verify(refresh_token, expected_type="refresh")
    actor = Actor(type="user", id=claims["sub"])
    with unit_of_work():
        row = db.session.execute(
            select(RefreshToken)
            .where(RefreshToken.id == uuid.UUID(claims["jti"]))
            .with_for_update()
        ).scalar_one_or_none()
        if row is None:
            raise AppError("AUTH_TOKEN_INVALID")
        if row.used_at is None:
            return _rotate(row=row, claims=claims, actor=actor)
        _revoke_family(row.session_id)
        _announce_ended(claims["sub"], [row.session_id])
        audit.record(
            action=audit.AuditAction.TOKEN_REUSE,
            target_type="auth_session",
            target_id=row.session_id,
            actor=actor,
        )
    # Raised after the commit: the revocation must survive the error answer.
    raise AppError("AUTH_TOKEN_REUSED")


def _rotate(*, row: RefreshToken, claims: dict[str, Any], actor: Actor) -> dict[str, Any]:
    """Spend the locked, unused `row` and issue its child (inside the caller's unit of work)."""
    session = db.session.get(AuthSession, row.session_id, with_for_update=True)
    if row.revoked_at is not None or session is None or session.revoked_at is not None:
        raise AppError("AUTH_TOKEN_REVOKED")
    user = users_service.get_active(user_id=uuid.UUID(claims["sub"]))
    if user is None or user.token_version != claims.get("ver"):
        raise AppError("AUTH_TOKEN_REVOKED")
    now = _now()
    row.used_at = now
    session.last_used_at = now
    session.expires_at = tokens.refresh_expiry()
    pair = _issue(user, session, parent_id=row.id)
    audit.record(
        action=audit.AuditAction.TOKEN_REFRESH,
        target_type="auth_session",
        target_id=session.id,
        actor=actor,
    )
    return pair


def logout(*, credentials: Credentials) -> None:
    """End the caller's login: its access token at once (Redis), its refresh family (DB)."""
    deny_token(credentials.token_id, credentials.expires_at)
    with unit_of_work():
        _revoke_family(uuid.UUID(credentials.session_id))
        _announce_ended(credentials.user_id, [uuid.UUID(credentials.session_id)])
        audit.record(
            action=audit.AuditAction.LOGOUT,
            target_type="auth_session",
            target_id=credentials.session_id,
        )


def list_sessions(*, actor: Actor) -> list[SessionView]:
    """The caller's open logins, most recently used first."""
    rows = db.session.execute(
        select(AuthSession)
        .where(
            AuthSession.user_id == uuid.UUID(actor.id),
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > _now(),
        )
        .order_by(AuthSession.last_used_at.desc())
    ).scalars()
    return [
        SessionView(
            id=row.id,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            ip=row.ip,
            user_agent=row.user_agent,
            current=str(row.id) == actor.session_id,
        )
        for row in rows
    ]


def revoke_session(*, session_id: uuid.UUID, actor: Actor) -> None:
    """End one of the caller's logins (404 for anybody else's)."""
    with unit_of_work():
        session = db.session.get(AuthSession, session_id)
        if session is None or str(session.user_id) != actor.id or session.revoked_at:
            raise AppError("NOT_FOUND")
        _revoke_family(session.id)
        _announce_ended(session.user_id, [session.id])
        audit.record(
            action=audit.AuditAction.SESSION_REVOKE,
            target_type="auth_session",
            target_id=session.id,
        )


def end_all_sessions(_sender: Any = None, *, user_id: uuid.UUID) -> None:
    """End every login of a user (inside the caller's unit of work).

    Connected to `users_service.tokens_revoked` by the factory: whatever ends a user's
    tokens (password or role change, suspension, deletion) also ends their logins.
    """
    open_sessions = db.session.execute(
        select(AuthSession.id).where(
            AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
        )
    ).scalars()
    ended = list(open_sessions)
    for session_id in ended:
        _revoke_family(session_id)
    _announce_ended(user_id, ended)


@functools.cache
def _login_open() -> Exists:
    """`the token's login session is still open`, for `users_service.read_with_roles`."""
    return (
        select(AuthSession.id)
        .where(
            AuthSession.id == bindparam("session_id"),
            AuthSession.user_id == bindparam("user_id"),
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > func.now(),
        )
        .exists()
    )


def resolve_caller(*, credentials: Credentials) -> tuple[Actor, Any]:
    """The actor behind a verified access token, and its user row, in one SQL statement
    (or none, when this login was read in the last `AUTH_CALLER_CACHE_SECONDS`).

    The user with roles and token_version, and whether the token's login is still open,
    come back together. 401 `AUTH_TOKEN_REVOKED` when the user is gone, inactive, has
    moved to a newer token version, or the login was ended.
    """
    user_id, session_id = uuid.UUID(credentials.user_id), uuid.UUID(credentials.session_id)
    found = recent_callers().read(
        user_id,
        session_id,
        caller_generation(),
        lambda: users_service.read_with_roles(
            user_id=user_id, also=_login_open(), params={"session_id": session_id}
        ),
    )
    if found is None:
        raise AppError("AUTH_TOKEN_REVOKED")
    user, still_open = found
    if not (still_open and user.is_active and user.token_version == credentials.token_version):
        raise AppError("AUTH_TOKEN_REVOKED")
    roles = frozenset(user.role_names)
    actor = Actor(
        type="user",
        id=str(user.id),
        roles=roles,
        permissions=permissions_for(roles),
        session_id=credentials.session_id,
    )
    return actor, user


def authenticate_token(token: str) -> Actor:
    """The actor behind an access token presented outside a request (a socket connect):
    the same checks as the request pipeline, in the same order (signature, expiry, type;
    the denylist; token version and login session with the user, in one statement)."""
    credentials = tokens.verify_access(token)
    if is_denied(credentials.token_id):
        raise AppError("AUTH_TOKEN_REVOKED")
    actor, _ = resolve_caller(credentials=credentials)
    return actor


def open_logins(session_ids: set[str]) -> set[str]:
    """Of these login sessions, the ones still open (one statement, ids as one array).

    Everything that invalidates a user's tokens (logout, a revoked session, reuse
    detection, a password or role change, suspension, deletion) ends their sessions, so
    an open session means its tokens still count. Ids travel as text and come back as
    text: a realtime process asks about thousands every few seconds.
    """
    if not session_ids:
        return set()
    ids = bindparam("ids", value=list(session_ids), type_=ARRAY(String))
    rows = db.session.execute(
        select(cast(AuthSession.id, String)).where(
            AuthSession.id == any_(cast(ids, ARRAY(Uuid))),
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > func.now(),
        )
    ).scalars()
    return set(rows)


def change_password(*, current_password: str, new_password: str) -> None:
    """Change the caller's password; every existing token stops working."""
    actor = current_actor()
    user = users_service.get_active(user_id=uuid.UUID(actor.id))
    if user is None or not passwords.verify_password(user.password_hash, current_password):
        raise AppError("AUTH_INVALID_CREDENTIALS", "The current password is wrong.")
    new_hash = passwords.hash_password(new_password)
    with unit_of_work():
        users_service.set_password_hash(user=user, password_hash=new_hash)
        audit.record(
            action=audit.AuditAction.PASSWORD_CHANGE, target_type="user", target_id=user.id
        )


def issue_ticket(*, credentials: Credentials) -> tuple[str, int]:
    """A single-use ticket standing in for `credentials` on routes that accept one, and
    its lifetime in seconds (`myapp.auth.tickets`)."""
    return tickets.issue(credentials)
