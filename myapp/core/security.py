"""HTTP hardening: trusted proxies, security headers, CORS allowlist, body size and media type.

The client address comes from `X-Forwarded-For` only through `TRUSTED_PROXY_HOPS` proxies
(ProxyFix); a forged header from a direct caller changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from myapp.core.config import current_settings
from myapp.core.errors import AppError
from myapp.core.pipeline import current_route_policy
from myapp.extensions import cors, talisman
from myapp.settings import Settings

#: Locked down for a JSON API: nothing may be loaded, framed or submitted.
API_CSP = {
    "default-src": "'none'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'none'",
}
#: Swagger UI's files come from this app (`/docs/assets/`); the page starts it with a small
#: inline script. Nothing is loaded from anywhere else.
DOCS_CSP = {
    "default-src": "'self'",
    "script-src": "'self' 'unsafe-inline'",
    "style-src": "'self' 'unsafe-inline'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'none'",
}
DOCS_ENDPOINTS = ("api-docs.openapi_swagger_ui",)
EXPOSED_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Idempotent-Replayed",
]


class LazyCookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building a signer for requests that carry
    no session cookie (nearly every request of an API), nor writing one nobody used."""

    def open_session(self, app: Flask, request: object) -> SecureCookieSession | None:
        """An empty session when no cookie came; Flask's own handling otherwise."""
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SecureCookieSession, response: Response) -> None:
        """Nothing to write for a session nobody touched (Flask would still read six cookie
        settings first); Flask's own handling otherwise."""
        if session or session.modified or session.accessed:
            super().save_session(app, session, response)


def register_security(app: Flask, settings: Settings) -> None:
    """ProxyFix, Talisman and CORS (the request checks are pipeline steps below)."""
    app.session_interface = LazyCookieSessions()
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
    _compute_security_headers_once(app, secure_cookies=not settings.is_dev)
    cors.init_app(
        app,
        resources={r"/v1/*": {"origins": settings.cors_origins}},
        supports_credentials=True,
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )


def _compute_security_headers_once(app: Flask, *, secure_cookies: bool) -> None:
    """Apply Talisman's headers from a cache instead of recomputing them for each response.

    Talisman rebuilds every policy string on every response, although they depend only on
    the route (views may carry their own options, like the docs page) and on whether the
    request came over HTTPS (HSTS). Its other hooks do nothing here (no forced HTTPS, no
    CSP nonce) except set `SESSION_COOKIE_SECURE` again each time, which is set once here.
    """
    app.config["SESSION_COOKIE_SECURE"] = secure_cookies
    compute = talisman._set_response_headers  # noqa: SLF001 - the one place that builds them
    dropped = {talisman._force_https, talisman._make_nonce, compute}  # noqa: SLF001
    cache: dict[tuple[str | None, bool], list[tuple[str, str]]] = {}

    def add_security_headers(response: Response) -> Response:
        secure = request.is_secure or request.headers.get("X-Forwarded-Proto") == "https"
        key = (request.endpoint, secure)
        headers = cache.get(key)
        if headers is None:
            blank = Response()
            before = set(blank.headers.keys())
            compute(blank)
            headers = [(name, value) for name, value in blank.headers if name not in before]
            cache[key] = headers
        for name, value in headers:
            response.headers[name] = value
        return response

    for kind in (app.before_request_funcs, app.after_request_funcs):
        hooks = kind.setdefault(None, [])
        hooks[:] = [hook for hook in hooks if hook not in dropped]
    app.after_request(add_security_headers)


def relax_csp_for_docs(app: Flask) -> None:
    """Give the Swagger UI page the CSP it needs (called after the docs blueprint exists)."""
    for endpoint in DOCS_ENDPOINTS:
        if endpoint in app.view_functions:
            view = app.view_functions[endpoint]

            @wraps(view)
            def docs_view(*args: Any, _view: Callable = view, **kwargs: Any) -> Any:
                return _view(*args, **kwargs)

            app.view_functions[endpoint] = talisman(content_security_policy=DOCS_CSP)(docs_view)


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


def enforce_admin_networks() -> None:
    """Step: admin routes answer 403 outside `ADMIN_ALLOWED_CIDRS` (when that is set)."""
    if not current_route_policy().admin:
        return
    networks = current_settings().admin_allowed_cidrs
    if networks and not ip_allowed(request.remote_addr, networks):
        raise AppError("FORBIDDEN", "Admin routes are not allowed from this address.")


def forbid_caching_credentials(response: Response) -> Response:
    """Finisher: `Cache-Control: no-store` on answers to an authenticated request (it came
    with `Authorization`) and on every answer of a route that hands out credentials. Other
    directives the view set (an event stream's `no-cache`) are kept."""
    if current_route_policy().credentials or "Authorization" in request.headers:
        if "Cache-Control" in response.headers:
            response.cache_control.no_store = True
        else:
            response.headers["Cache-Control"] = "no-store"  # the common case: no parsing
    return response


def vary_on_origin(response: Response) -> Response:
    """Finisher: a response that echoes the caller's origin says it varies with `Origin`,
    so no shared cache hands one origin's answer to another."""
    allowed = response.headers.get("Access-Control-Allow-Origin")
    if allowed and allowed != "*":
        response.vary.add("Origin")
    return response
