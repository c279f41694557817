"""JWTs: issuing access/refresh pairs (flask-jwt-extended) and verifying them (PyJWT).

Both kinds carry `sub` (user id), `ver` (the user's token_version), `fam` (the login
session), `jti` and `type`; access tokens also carry `roles` (informational: permissions
come from the database). Verification is pure computation: HS256 only (so `alg: none` and
key confusion are refused), expiry without leeway, every claim present and well formed.
Whether a verified access token still counts (denylist, login session, token_version) is
decided by the request pipeline's later steps.
"""

from __future__ import annotations

import functools
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import jwt
from flask import g, request
from flask_jwt_extended import create_access_token, create_refresh_token

from myapp.core.config import current_settings
from myapp.core.context import Credentials
from myapp.core.errors import AppError
from myapp.settings import Settings

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti", "type", "ver", "fam")
BEARER_PREFIX = "Bearer "


def jwt_config(settings: Settings) -> dict[str, Any]:
    """flask-jwt-extended settings for issuing tokens."""
    return {
        "JWT_ALGORITHM": ALGORITHM,
        "JWT_DECODE_ALGORITHMS": [ALGORITHM],
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
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": current_settings().jwt_access_token_expires,
    }


def refresh_expiry() -> datetime:
    """When a refresh token issued now expires."""
    seconds = current_settings().jwt_refresh_token_expires
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _signed_claims(encoded: str, secret: str) -> MappingProxyType[str, Any]:
    """Signature and structure checked, expiry not: the result may be cached and shared.

    Clients send the same access token for its whole life; remembering which strings were
    verified saves the HMAC and parsing on every later request. Expiry is checked by the
    caller each time. Failures raise and are never cached.
    """
    claims = jwt.decode(
        encoded,
        secret,
        algorithms=[ALGORITHM],
        options={"require": ["exp"], "verify_exp": False},
    )
    return MappingProxyType(claims)  # shared between requests: read-only


def verify(encoded: str, *, expected_type: str) -> MappingProxyType[str, Any]:
    """The claims of a token of `expected_type`; AppError with the catalog code otherwise."""
    try:
        claims = _signed_claims(encoded, current_settings().jwt_secret_key.get_secret_value())
    except jwt.PyJWTError:
        raise AppError("AUTH_TOKEN_INVALID") from None
    if not isinstance(claims["exp"], int | float) or claims["exp"] <= time.time():
        raise AppError("AUTH_TOKEN_EXPIRED")  # signed by us: "log in again" is the answer
    well_formed = (
        all(name in claims for name in REQUIRED_CLAIMS)
        and _is_uuid(claims["sub"])
        and _is_uuid(claims["fam"])
        and _is_uuid(claims["jti"])
        and isinstance(claims["ver"], int)
    )
    if not well_formed:
        raise AppError("AUTH_TOKEN_INVALID")
    if claims["type"] != expected_type:
        raise AppError("AUTH_TOKEN_INVALID", f"A {expected_type} token is required.")
    return claims


def read_bearer_token() -> None:
    """Pipeline step: verify the bearer access token, if any, without I/O.

    Leaves `g.credentials` for a valid token. An invalid one is remembered
    (`g.credentials_error`) and raised only if the route needs a caller, after the request
    has spent the client address's budget: forged tokens buy no budget of their own.
    """
    header = request.headers.get("Authorization")
    if not header:
        return
    if not header.startswith(BEARER_PREFIX):
        g.credentials_error = AppError("AUTH_TOKEN_INVALID", "Use `Authorization: Bearer`.")
        return
    try:
        g.credentials = verify_access(header[len(BEARER_PREFIX) :].strip())
    except AppError as error:
        g.credentials_error = error


def verify_access(encoded: str) -> Credentials:
    """The credentials an access token carries (AppError with the catalog code if it is
    not a valid one). No I/O: whether it still counts is decided afterwards."""
    claims = verify(encoded, expected_type="access")
    return Credentials(
        user_id=str(claims["sub"]),
        session_id=str(claims["fam"]),
        token_id=str(claims["jti"]),
        token_version=claims["ver"],
        expires_at=int(claims["exp"]),
    )
