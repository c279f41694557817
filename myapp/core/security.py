"""HTTP hardening: trusted proxies, security headers, CORS allowlist, body size and media type.

The client address comes from `X-Forwarded-For` only through `TRUSTED_PROXY_HOPS` proxies
(ProxyFix); a forged header from a direct caller changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from myapp.core.context import Actor, current_actor
from myapp.core.errors import AppError
from myapp.extensions import cors, talisman
from myapp.settings import Settings

#: Locked down for a JSON API: nothing may be loaded, framed or submitted.
API_CSP = {
    "default-src": "'none'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'none'",
}
#: Swagger UI loads its bundle from jsDelivr and starts with a small inline script.
DOCS_CSP = {
    "default-src": "'self'",
    "script-src": "'self' 'unsafe-inline' https://cdn.jsdelivr.net",
    "style-src": "'self' 'unsafe-inline' https://cdn.jsdelivr.net",
    "img-src": "'self' data: https://cdn.jsdelivr.net",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'none'",
}
DOCS_ENDPOINTS = ("api-docs.openapi_swagger_ui",)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ACCEPTED_MEDIA_TYPES = frozenset(
    {"application/json", "multipart/form-data", "application/x-www-form-urlencoded"}
)
EXPOSED_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Idempotent-Replayed",
]


def register_security(app: Flask, settings: Settings) -> None:
    """ProxyFix, Talisman, CORS and the media-type check."""
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    talisman.init_app(
        app,
        force_https=False,  # TLS ends at the ingress; probes speak plain HTTP
        strict_transport_security=settings.app_env in ("stage", "prod"),
        strict_transport_security_max_age=31_536_000,
        content_security_policy=API_CSP,
        frame_options="DENY",
        referrer_policy="no-referrer",
        session_cookie_secure=not settings.is_dev,
    )
    cors.init_app(
        app,
        resources={r"/v1/*": {"origins": settings.cors_origins}},
        supports_credentials=True,
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
    app.before_request(_require_accepted_media_type)


def relax_csp_for_docs(app: Flask) -> None:
    """Give the Swagger UI page the CSP it needs (called after the docs blueprint exists)."""
    for endpoint in DOCS_ENDPOINTS:
        if endpoint in app.view_functions:
            view = app.view_functions[endpoint]

            @wraps(view)
            def docs_view(*args: Any, _view: Callable = view, **kwargs: Any) -> Any:
                return _view(*args, **kwargs)

            app.view_functions[endpoint] = talisman(content_security_policy=DOCS_CSP)(docs_view)


def _require_accepted_media_type() -> None:
    """A body we cannot parse is refused up front with 415 rather than misread."""
    if request.method not in _BODY_METHODS or not request.content_length:
        return
    if request.mimetype not in _ACCEPTED_MEDIA_TYPES:
        raise AppError("UNSUPPORTED_MEDIA_TYPE", "Send the body as application/json.")


def ip_allowed(address: str | None, networks: list[Any]) -> bool:
    """True when `address` lies in one of `networks`."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in networks)


def allow_only_from(networks_of: Callable[[], list[Any]]) -> Callable:
    """Decorator: 403 `FORBIDDEN` unless the client address is in the allowed networks."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not ip_allowed(request.remote_addr, networks_of()):
                raise AppError("FORBIDDEN", "Not allowed from this address.")
            return view(*args, **kwargs)

        return guarded

    return decorator


def set_authenticator(app: Flask, authenticate: Callable[[], Actor]) -> None:
    """Install the function that verifies credentials and binds the actor (auth does)."""
    app.extensions["authenticate"] = authenticate


def require_auth(permission: str | None = None, *, admin: bool = False) -> Callable:
    """Decorator: 401 unless authenticated; 403 `FORBIDDEN` without `permission` (RBAC).

    Admin routes (`admin=True`) also refuse callers outside `ADMIN_ALLOWED_CIDRS` when that
    list is set. Object-level rules (ABAC) belong to the domain's policies, which answer
    404 for objects the caller may not see.
    """

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            networks = current_app.extensions["settings"].admin_allowed_cidrs
            if admin and networks and not ip_allowed(request.remote_addr, networks):
                raise AppError("FORBIDDEN", "Admin routes are not allowed from this address.")
            actor = current_app.extensions["authenticate"]()
            if permission and not actor.can(permission):
                raise AppError("FORBIDDEN", f"Requires permission {permission}.")
            return view(*args, **kwargs)

        return guarded

    return decorator


def set_feature_evaluator(app: Flask, evaluate: Callable[[str, Actor], bool]) -> None:
    """Install the feature-flag evaluation (the flags domain does)."""
    app.extensions["feature_enabled"] = evaluate


def feature_required(key: str) -> Callable:
    """Decorator: 404 `FEATURE_DISABLED` unless flag `key` is on for the caller."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def gated(*args: Any, **kwargs: Any) -> Any:
            if not current_app.extensions["feature_enabled"](key, current_actor()):
                raise AppError("FEATURE_DISABLED", f"The feature {key!r} is not enabled.")
            return view(*args, **kwargs)

        return gated

    return decorator
