"""`/v1/auth`: login, refresh, logout, sessions, password (sign-up lives with users).

Every route here `carries_credentials`: no idempotent replay, no caching.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from flask import Response, jsonify, request
from flask.views import MethodView

from myapp.auth import cookies, service
from myapp.auth.schemas import (
    LoginSchema,
    PasswordChangeSchema,
    RefreshSchema,
    SessionSchema,
    TokenPairSchema,
)
from myapp.core.api import Blueprint
from myapp.core.context import current_actor, current_credentials
from myapp.core.pipeline import carries_credentials
from myapp.core.ratelimit import setting
from myapp.extensions import limiter

blp = Blueprint("auth", __name__, url_prefix="/v1/auth", description="Login and tokens")


def _account_key() -> str:
    """Per-account login budget, keyed by a hash of the e-mail (no address in Redis)."""
    body = request.get_json(silent=True) or {}
    email = str(body.get("email", "")).strip().lower()
    return "login-account:" + hashlib.sha256(email.encode()).hexdigest()


def _failed(response: Any) -> bool:
    return response.status_code == 401


def _deliver(pair: dict[str, Any]) -> Any:
    """The pair as JSON; in cookie mode the refresh token goes into cookies instead."""
    if not cookies.enabled():
        return pair
    envelope = {"success": True, "data": TokenPairSchema().dump({**pair, "refresh_token": None})}
    response = jsonify(envelope)
    cookies.set_token_cookies(response, pair)
    return response


@blp.route("/login")
class Login(MethodView):
    """Login."""

    @limiter.limit(setting("ratelimit_login_per_ip"))
    @limiter.limit(
        setting("ratelimit_login_per_account"), key_func=_account_key, deduct_when=_failed
    )
    @blp.doc(security=[])
    @blp.arguments(LoginSchema)
    @blp.response(200, TokenPairSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @carries_credentials
    def post(self, body: dict) -> Any:
        """Exchange e-mail and password for an access and a refresh token."""
        return _deliver(service.login(email=body["email"], password=body["password"]))


@blp.route("/refresh")
class Refresh(MethodView):
    """Token rotation."""

    @limiter.limit(setting("ratelimit_refresh"))
    @blp.doc(security=[])
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokenPairSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @carries_credentials
    def post(self, body: dict) -> Any:
        """Spend a refresh token for a new pair; a spent one revokes its whole login.

        In cookie mode the token comes from the cookie and `X-CSRF-Token` is required.
        """
        cookies.require_csrf()
        pair = service.refresh(refresh_token=cookies.refresh_token_from_request(body))
        return _deliver(pair)


@blp.route("/logout")
class Logout(MethodView):
    """Logout."""

    @blp.auth()
    @blp.response(204)
    @carries_credentials
    def post(self) -> Any:
        """End this login: the access token and its refresh family stop working at once."""
        cookies.require_csrf()
        service.logout(credentials=current_credentials())
        if cookies.enabled():
            response = Response(status=204)
            cookies.clear_token_cookies(response)
            return response
        return None


@blp.route("/sessions")
class Sessions(MethodView):
    """The caller's logins."""

    @blp.auth()
    @blp.response(200, SessionSchema(many=True))
    @carries_credentials
    def get(self) -> list:
        """Open logins, most recently used first; `current` marks this one."""
        return service.list_sessions(actor=current_actor())


@blp.route("/sessions/<uuid:session_id>")
class Session(MethodView):
    """One login."""

    @blp.auth()
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @carries_credentials
    def delete(self, session_id: uuid.UUID) -> None:
        """End that login; its tokens stop working."""
        service.revoke_session(session_id=session_id, actor=current_actor())


@blp.route("/password")
class Password(MethodView):
    """Password change."""

    @blp.auth()
    @blp.arguments(PasswordChangeSchema)
    @blp.response(204)
    @carries_credentials
    def post(self, body: dict) -> None:
        """Change the caller's password; every existing token of theirs stops working."""
        service.change_password(
            current_password=body["current_password"], new_password=body["new_password"]
        )
