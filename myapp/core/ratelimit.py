"""Per-route budgets (flask-limiter) and the count of requests let through on outages.

The default API budget of every request is counted by the guards step
(`myapp.core.guards`), in the same Redis round trip as the token denylist. Routes with a
budget of their own (login, refresh, register) declare it with `@limiter.limit(...)`;
flask-limiter's decorator checks it when the view is called, keyed by client address
unless the route says otherwise. flask-limiter's own before-request hook is removed: it
would only repeat, on every request, the lookup the guards step already did; its
after-request and teardown hooks run only on requests that met such a budget.

When Redis is unreachable both let requests through (an outage must not lock users out),
log one warning line and count it in `ratelimit_storage_errors_total`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial, wraps
from typing import TypeVar

from flask import Flask, current_app, has_app_context
from flask.globals import request_ctx
from prometheus_client import Counter

from myapp.core.config import current_settings
from myapp.extensions import limiter

_ERRORS = "myapp.ratelimit_errors"
#: Where flask-limiter keeps a request's state, on the request context (its own name).
LIMITER_STATE = "_limiter_request_context"
T = TypeVar("T")


def limiter_config(settings: object) -> dict[str, object]:
    """flask-limiter settings: our Redis, our key prefix, fixed windows, fail open."""
    return {
        "RATELIMIT_STORAGE_URI": settings.redis_url,
        "RATELIMIT_STORAGE_OPTIONS": {
            # The limits library prefixes keys itself ("LIMITS:" by default): keep ours.
            "key_prefix": f"{settings.redis_prefix}ratelimit",
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_connect_timeout,
        },
        "RATELIMIT_STRATEGY": "fixed-window",
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,
    }


def setting(name: str) -> Callable[[], str]:
    """A budget read from settings at request time: `@limiter.limit(setting("..."))`."""
    return lambda: getattr(current_settings(), name)


def storage_errors() -> Counter | None:
    """The current app's `ratelimit_storage_errors_total` (None outside an app)."""
    return current_app.extensions.get(_ERRORS) if has_app_context() else None


def count_storage_error() -> None:
    """One more request let through because the rate-limit storage failed."""
    counter = storage_errors()
    if counter is not None:
        counter.inc()


class _CountStorageErrors(logging.Filter):
    """Turns flask-limiter's swallowed-error tracebacks into one warning and a metric."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to"):
            return True
        count_storage_error()
        record.msg, record.args = "ratelimit.storage_unavailable: request allowed", ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _limits_disabled() -> bool:
    """`RATELIMIT_ENABLED=false` (benchmarks, emergencies) lets everything through."""
    return not current_settings().ratelimit_enabled


def _is_limiter_hook(hook: Callable) -> bool:
    owner = (
        hook.args[0] if isinstance(hook, partial) and hook.args else getattr(hook, "__self__", None)
    )
    return owner is limiter


def _only_where_limited(hook: Callable[[T], T]) -> Callable[[T], T]:
    """`hook`, skipped on requests that met no `@limiter.limit` (nearly all of them)."""

    @wraps(hook)
    def run_if_limited(value: T) -> T:
        if hasattr(request_ctx, LIMITER_STATE):
            return hook(value)
        return value

    return run_if_limited


def register_ratelimit(app: Flask, registry: object) -> None:
    """Initialise flask-limiter and the outage counter (in the app's metrics registry)."""
    limiter.init_app(app)
    hooks = app.before_request_funcs.setdefault(None, [])
    hooks[:] = [hook for hook in hooks if hook != limiter._check_request_limit]  # noqa: SLF001
    # Its after-request (headers) and teardown hooks only matter where a budget of its own
    # was checked, which leaves its state on the request context.
    for by_blueprint in (app.after_request_funcs, app.teardown_request_funcs):
        funcs = by_blueprint.setdefault(None, [])
        funcs[:] = [_only_where_limited(f) if _is_limiter_hook(f) else f for f in funcs]
    if _limits_disabled not in limiter._request_filters:  # noqa: SLF001 - no public check
        limiter.request_filter(_limits_disabled)
    app.extensions[_ERRORS] = Counter(
        "ratelimit_storage_errors_total",
        "Requests let through because the rate-limit storage failed",
        registry=registry,
    )
    flask_limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(f, _CountStorageErrors) for f in flask_limiter_log.filters):
        flask_limiter_log.addFilter(_CountStorageErrors())
