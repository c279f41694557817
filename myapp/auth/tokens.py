"""JWTs: issuing access/refresh pairs, verifying access tokens, decoding refresh tokens.

Access tokens carry `sub` (user id), `roles`, `ver` (the user's token_version), `fam` (the
login session) and `type`. An access token stops working when its jti is denylisted
(logout), its session is revoked (logout, session end, refresh-token reuse), or the user's
token_version moved on (password or role change, suspension, deletion).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import redis.exceptions
from flask import current_app, g, request
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    decode_token,
    get_jwt,
    verify_jwt_in_request,
)
from flask_jwt_extended import exceptions as jwt_errors

from myapp.auth.permissions import permissions_for
from myapp.core.context import Actor, bind_actor
from myapp.core.errors import AppError
from myapp.core.logging import get_logger
from myapp.core.redis import redis_client, redis_key
from myapp.extensions import jwt

log = get_logger(__name__)

_INVALID = (
    pyjwt.InvalidTokenError,
    jwt_errors.JWTDecodeError,
    jwt_errors.WrongTokenError,
    jwt_errors.UserLookupError,
    jwt_errors.InvalidHeaderError,
    jwt_errors.CSRFError,
    jwt_errors.FreshTokenRequired,
    jwt_errors.UserClaimsVerificationError,
)


def jwt_config(settings: Any) -> dict[str, Any]:
    """flask-jwt-extended settings: HS256 only (so `alg: none` is refused), headers only."""
    return {
        "JWT_ALGORITHM": "HS256",
        "JWT_DECODE_ALGORITHMS": ["HS256"],
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=settings.jwt_access_token_expires),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(seconds=settings.jwt_refresh_token_expires),
        "JWT_DECODE_LEEWAY": 0,
    }


def issue_pair(*, user: Any, session_id: uuid.UUID, refresh_id: uuid.UUID) -> dict[str, Any]:
    """A fresh access token and the refresh token whose jti is `refresh_id`."""
    claims = {"roles": user.role_names, "ver": user.token_version, "fam": str(session_id)}
    access = create_access_token(identity=str(user.id), additional_claims=claims)
    refresh = create_refresh_token(
        identity=str(user.id),
        additional_claims={
            "ver": user.token_version,
            "fam": str(session_id),
            "jti": str(refresh_id),
        },
    )
    settings = current_app.extensions["settings"]
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": settings.jwt_access_token_expires,
    }


def refresh_expiry() -> datetime:
    """When a refresh token issued now expires."""
    seconds = current_app.extensions["settings"].jwt_refresh_token_expires
    return datetime.now(UTC) + timedelta(seconds=seconds)


def decode_refresh(encoded: str) -> dict[str, Any]:
    """Verified claims of a refresh token; AppError with the API.md code otherwise."""
    try:
        claims = decode_token(encoded)
    except pyjwt.ExpiredSignatureError:
        raise AppError("AUTH_TOKEN_EXPIRED") from None
    except _INVALID:
        raise AppError("AUTH_TOKEN_INVALID") from None
    if claims.get("type") != "refresh":
        raise AppError("AUTH_TOKEN_INVALID", "A refresh token is required.")
    return claims


def _denylist_key(jti: str) -> str:
    return redis_key("denylist", "jti", jti)


def denylist_access_token(claims: dict[str, Any]) -> None:
    """Refuse this access token until it expires anyway (Redis; fails closed)."""
    ttl = max(int(claims["exp"] - datetime.now(UTC).timestamp()), 1)
    redis_client().set(_denylist_key(claims["jti"]), "1", ex=ttl)


def _is_denylisted(jti: str) -> bool:
    try:
        return bool(redis_client().exists(_denylist_key(jti)))
    except redis.exceptions.RedisError:
        # The database check below still refuses logged-out tokens (their session is
        # revoked), so an outage of Redis does not lock every user out.
        log.warning("auth.denylist_unavailable")
        return False


def _access_revoked(_header: dict[str, Any], claims: dict[str, Any]) -> bool:
    from myapp.auth import service as auth_service

    if claims.get("type") != "access":
        return False  # wrong type is reported as invalid, not revoked
    if _is_denylisted(claims["jti"]):
        return True
    user, active_session = auth_service.token_subject(claims)
    g.token_user = user
    return user is None or not active_session


def _lookup_user(_header: dict[str, Any], _claims: dict[str, Any]) -> Any:
    return g.get("token_user")


def install_jwt_callbacks() -> None:
    """Wire the revocation and user lookups into flask-jwt-extended (once per process)."""
    jwt.token_in_blocklist_loader(_access_revoked)
    jwt.user_lookup_loader(_lookup_user)


_ACTOR_KEY = "myapp.authenticated_actor"


def authenticate() -> Actor:
    """Verify the bearer access token and bind its actor; AppError with the API.md code.

    Verified once per request (idempotency scoping and the route guard both ask).
    """
    cached = request.environ.get(_ACTOR_KEY)
    if cached is not None:
        return cached
    try:
        verify_jwt_in_request()
    except jwt_errors.NoAuthorizationError:
        raise AppError("AUTH_REQUIRED") from None
    except pyjwt.ExpiredSignatureError:
        raise AppError("AUTH_TOKEN_EXPIRED") from None
    except jwt_errors.RevokedTokenError:
        raise AppError("AUTH_TOKEN_REVOKED") from None
    except _INVALID:
        raise AppError("AUTH_TOKEN_INVALID") from None
    claims = get_jwt()
    roles = frozenset(claims.get("roles", []))
    actor = Actor(
        type="user",
        id=claims["sub"],
        roles=roles,
        permissions=permissions_for(roles),
        session_id=claims.get("fam"),
    )
    bind_actor(actor)
    request.environ[_ACTOR_KEY] = actor
    return actor
