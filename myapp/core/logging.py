"""Structured logging: one pipeline for our logs and stdlib, gunicorn, Celery and SQLAlchemy.

Every record, whoever emits it, goes through the root handler's `ProcessorFormatter`: the
request context is merged in, secrets and personal data are masked, and the line is
rendered as JSON (outside local) or for a human (local).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from flask import Response, g, request

from myapp.core.context import OPERATIONAL_PREFIXES

MASK = "***"
_HANDLER_NAME = "myapp"

#: Keys whose values are never logged, in any casing, with `-` or `_`.
_SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "session",
    "csrf",
    "signature",
)
_EMAIL_KEYS = frozenset({"email", "email_address", "to", "from"})
_PHONE_KEYS = frozenset({"phone", "phone_number", "mobile"})

_EMAIL_RE = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_PASSWORD_HASH_RE = re.compile(r"\$(?:argon2(?:id|i|d)|2[aby]|pbkdf2[-_a-z0-9]*|scrypt)\$[^\s'\"]+")
_URL_PASSWORD_RE = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
#: Every pattern of `scrub_text` needs one of these (lower-cased) to match.
_SCRUB_TRIGGERS = (
    "@",
    "$",
    "eyj",
    "bearer",
    "basic",
    "password",
    "passwd",
    "secret",
    "token",
    "api",
    "authorization",
    "cookie",
)
_ASSIGNMENT_RE = re.compile(
    r"(?i)\b([\w-]*(?:password|passwd|secret|token|api[_-]?key|authorization|cookie)[\w-]*)"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)


def _normalise(key: str) -> str:
    return key.lower().replace("-", "_")


@functools.lru_cache(maxsize=1024)
def is_secret_key(key: str) -> bool:
    """True when a field of this name holds a secret."""
    name = _normalise(key)
    return any(part in name for part in _SECRET_KEY_PARTS)


def mask_email(value: str) -> str:
    """`jane.doe@example.com` -> `j***@example.com`."""
    return _EMAIL_RE.sub(lambda m: f"{m.group(1)}{MASK}@{m.group(2)}", value)


def mask_phone(value: str) -> str:
    """Keep only the last four digits."""
    digits = re.sub(r"\D", "", value)
    return f"{MASK}{digits[-4:]}" if len(digits) > 4 else MASK


def scrub_text(text: str) -> str:
    """Mask secrets and e-mail addresses inside free text (messages, tracebacks)."""
    lowered = text.lower()
    for trigger in _SCRUB_TRIGGERS:  # a loop: twice as fast as any() over a generator
        if trigger in lowered:
            break
    else:
        return text  # none of the patterns below can match: most lines take this way
    text = _URL_PASSWORD_RE.sub(rf"\1{MASK}@", text)
    text = _BEARER_RE.sub(rf"\1 {MASK}", text)
    text = _JWT_RE.sub(MASK, text)
    text = _PASSWORD_HASH_RE.sub(MASK, text)
    text = _ASSIGNMENT_RE.sub(rf"\1\2{MASK}", text)
    return mask_email(text)


def mask_value(key: str, value: Any) -> Any:
    """Mask one field by its name, recursing into mappings and sequences."""
    if value is None or isinstance(value, bool | int | float):
        return value
    rule = _rule_for(key)
    if rule is _SECRET:
        return MASK
    if isinstance(value, Mapping):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [mask_value(key, item) for item in value]
    text = value if isinstance(value, str) else str(value)
    return rule(text)


_SECRET = object()  # the rule of secret fields: masked whole


@functools.lru_cache(maxsize=1024)
def _rule_for(key: str) -> Any:
    """How a field of this name is masked (`_SECRET` or a function of its text)."""
    name = _normalise(key)
    if is_secret_key(name):
        return _SECRET
    if name in _PHONE_KEYS:
        return mask_phone
    if name in _EMAIL_KEYS:
        return mask_email
    return scrub_text


_ID_LIKE = re.compile(r"^[0-9A-Za-z-]{20,40}$")  # UUIDs and ULIDs stay readable


def mask_arguments(value: Any) -> Any:
    """Task arguments with their shape kept: ids, numbers and booleans readable, other text
    replaced by `***(length)`. For logs, message headers and dead letters."""
    if isinstance(value, Mapping):
        return {str(key): mask_arguments(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_arguments(item) for item in value]
    if isinstance(value, str):
        return value if _ID_LIKE.fullmatch(value) else f"***({len(value)})"
    return value


def mask_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask every field of the event."""
    return {key: mask_value(key, value) for key, value in event_dict.items()}


def _drop_duplicates(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """stdlib records carry their text again as `message` (and uvicorn-style `color_message`)."""
    event_dict.pop("color_message", None)
    if event_dict.get("message") == event_dict.get("event"):
        event_dict.pop("message", None)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_duplicates,
    ]


def _renderer(fmt: str) -> Any:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return structlog.processors.JSONRenderer()


def configure_logging(
    *, level: str = "INFO", fmt: str = "json", sql: bool = False, extra: Iterable[Any] = ()
) -> None:
    """Route every logger through one masked structlog pipeline writing to stderr.

    `extra`: processors added to every line's (trace ids when tracing is on)."""
    shared = [*_shared_processors(), *extra]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_processor,
            _renderer(fmt),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler: a second app in the same process (tests) must not
    # remove handlers that somebody else attached.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(level)
    # Our lines never show the caller's file and line, thread or process, so stdlib need
    # not look them up for every record (the logging HOWTO's "Optimization" switches).
    logging._srcfile = None  # noqa: SLF001 - the documented way to skip findCaller
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    for name in ("gunicorn.error", "gunicorn.access", "celery", "werkzeug", "sqlalchemy"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO if sql else logging.WARNING)
    logging.captureWarnings(True)  # `warnings.warn` from libraries: same pipeline, masked


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to `name` (module name by convention)."""
    return structlog.stdlib.get_logger(name)


_access = structlog.stdlib.get_logger("myapp.access")


def log_access(response: Response) -> Response:
    """Finisher: one line per request (method, route template, status, duration, client IP).

    The request id and user id come from the context. Probes and scrapes log at debug
    level so they do not drown the real traffic.
    """
    started = g.get("request_started", time.perf_counter())
    quiet = request.path.startswith(OPERATIONAL_PREFIXES) and response.status_code < 400
    (_access.debug if quiet else _access.info)(
        "http.request",
        method=request.method,
        route=request.url_rule.rule if request.url_rule else None,
        path=request.path,
        status=response.status_code,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        ip=request.remote_addr,
    )
    return response
