"""Optional browser mode (`AUTH_REFRESH_COOKIE=true`): refresh token in a cookie + CSRF.

The refresh token travels in an HttpOnly, Secure, SameSite=Strict cookie limited to
`/v1/auth`, where page scripts cannot read it. Because browsers attach cookies by
themselves, refresh and logout then also require a double-submit CSRF token: the
`X-CSRF-Token` header must equal the readable `csrf_token` cookie, which another site
cannot read. Bearer mode (the default) uses neither.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from flask import Response, request

from myapp.core.config import current_settings
from myapp.core.errors import AppError

REFRESH_COOKIE = "refresh_token"
CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
COOKIE_PATH = "/v1/auth"


def enabled() -> bool:
    """True in cookie mode."""
    return current_settings().auth_refresh_cookie


def set_token_cookies(response: Response, pair: dict[str, Any]) -> None:
    """Move the refresh token from the body into cookies (with a fresh CSRF token)."""
    max_age = current_settings().jwt_refresh_token_expires
    common = {"max_age": max_age, "path": COOKIE_PATH, "secure": True, "samesite": "Strict"}
    response.set_cookie(REFRESH_COOKIE, pair["refresh_token"], httponly=True, **common)
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(32), httponly=False, **common)


def clear_token_cookies(response: Response) -> None:
    """Forget both cookies."""
    for name in (REFRESH_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH, secure=True, samesite="Strict")


def require_csrf() -> None:
    """403 unless the CSRF header matches the CSRF cookie (cookie mode only)."""
    if not enabled():
        return
    cookie, header = request.cookies.get(CSRF_COOKIE, ""), request.headers.get(CSRF_HEADER, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), header.encode()):
        raise AppError("FORBIDDEN", "Missing or wrong CSRF token.")


def refresh_token_from_request(body: dict[str, Any]) -> str:
    """The refresh token: from the cookie in cookie mode, from the body otherwise."""
    if enabled():
        token = request.cookies.get(REFRESH_COOKIE)
        if not token:
            raise AppError("AUTH_REQUIRED", "No refresh token cookie was sent.")
        return token
    if not body.get("refresh_token"):
        missing = {"field": "refreshToken", "message": "Missing data for required field."}
        raise AppError("VALIDATION_FAILED", details=[missing])
    return body["refresh_token"]
