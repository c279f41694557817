"""Rate limits: a default budget per caller, per-route budgets, failing open on outages.

The default limit (`RATELIMIT_DEFAULT`) is keyed by user id when the request carries a
valid access token (signature and expiry checked, no database), else by client address.
Health and metrics are exempt. When Redis is unreachable the limiter lets requests through,
logs one warning line and counts it in `ratelimit_storage_errors_total`.
"""

from __future__ import annotations

import logging

import jwt
from flask import Flask, current_app, request
from flask_limiter.util import get_remote_address
from prometheus_client import Counter

from myapp.extensions import limiter

EXEMPT_PREFIXES = ("/health", "/metrics")


def caller_key() -> str:
    """`user:<id>` for a validly signed, unexpired access token, else `ip:<address>`.

    Only the signature and expiry matter for keying, so plain PyJWT does it (about a third
    of flask-jwt-extended's decode); revocation is the route guard's job.
    """
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        try:
            claims = jwt.decode(
                header[7:], current_app.config["JWT_SECRET_KEY"], algorithms=["HS256"]
            )
        except jwt.PyJWTError:
            claims = {}  # a forged or expired token spends the address's budget
        if claims.get("type") == "access" and claims.get("sub"):
            return f"user:{claims['sub']}"
    return f"ip:{get_remote_address()}"


def _limits_disabled() -> bool:
    """`RATELIMIT_ENABLED=false` (benchmarks, emergencies) lets everything through."""
    return not current_app.extensions["settings"].ratelimit_enabled


def exempt_from_defaults() -> bool:
    """Probes, scrapes and CORS preflights do not spend the budget."""
    return request.method == "OPTIONS" or request.path.startswith(EXEMPT_PREFIXES)


class _CountStorageErrors(logging.Filter):
    """Turns flask-limiter's swallowed-error tracebacks into one warning and a metric."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to"):
            return True
        counter = current_app.extensions.get("ratelimit_errors") if current_app else None
        if counter is not None:
            counter.inc()
        record.msg, record.args = "ratelimit.storage_unavailable: request allowed", ()
        record.exc_info, record.exc_text, record.levelno, record.levelname = (
            None,
            None,
            logging.WARNING,
            "WARNING",
        )
        return True


def register_ratelimit(app: Flask, registry: object) -> None:
    """Initialise the limiter and its failure counter (in the app's metrics registry)."""
    app.extensions["ratelimit_key"] = caller_key
    limiter.init_app(app)
    if _limits_disabled not in limiter._request_filters:  # noqa: SLF001 - no public check
        limiter.request_filter(_limits_disabled)
    app.extensions["ratelimit_errors"] = Counter(
        "ratelimit_storage_errors_total",
        "Requests let through because the rate-limit storage failed",
        registry=registry,
    )
    flask_limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(f, _CountStorageErrors) for f in flask_limiter_log.filters):
        flask_limiter_log.addFilter(_CountStorageErrors())
