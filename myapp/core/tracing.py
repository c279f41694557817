"""Tracing, optional: OpenTelemetry spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

The rest of the code only calls the hooks below. With tracing off (the endpoint unset, the
default) no OpenTelemetry module is imported and each hook is a check of one variable:
`span()` hands back a shared null context, `traceparent()` returns None, `annotate()` and
`continued()` do nothing, and logging gets no extra processor.

With tracing on, `myapp.core.otel` (which needs `requirements-otel.txt`) sets up the
process's tracer provider and instruments Flask, SQLAlchemy, Redis and Celery; this module
then delegates to it. A request's trace crosses the outbox: `outbox.append` stores the
request's `traceparent` beside the event, and the relay publishes the event's tasks inside
that context, so the Celery task that runs minutes later is part of the same trace.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from flask import Flask

from myapp.settings import ConfigError, Settings

_NULL: AbstractContextManager[None] = contextlib.nullcontext()
#: `myapp.core.otel` once tracing is on in this process, else None.
_backend: Any = None


def init_tracing(settings: Settings) -> None:
    """Turn tracing on for this process when the endpoint is set (idempotent).

    Call it first in the app factory: the libraries are instrumented before any engine or
    client exists, and the log pipeline built next gets the trace ids.
    """
    global _backend  # noqa: PLW0603 - the tracer provider is process-wide by design
    if not settings.otel_exporter_otlp_endpoint or _backend is not None:
        return
    try:
        backend = importlib.import_module("myapp.core.otel")  # the optional extra
    except ImportError as error:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the tracing packages are missing "
            f"({error.name}): pip install -r requirements-otel.txt"
        ) from None
    backend.start(settings)
    _backend = backend


def instrument_app(app: Flask) -> None:
    """Give every request of `app` a server span; call before any other request hook, so
    that the span covers the whole pipeline (guards, caller, idempotency)."""
    if _backend is not None:
        _backend.instrument_app(app)


def log_processors() -> Iterable[Any]:
    """structlog processors adding `trace_id`/`span_id` to log lines (none when off)."""
    return (_backend.add_trace_ids,) if _backend is not None else ()


def span(
    name: str, *, kind: str = "internal", attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Any]:
    """A span around a block, child of the current one (`kind`: internal, server...)."""
    if _backend is None:
        return _NULL
    return _backend.span(name, kind=kind, attributes=attributes)


def annotate(key: str, value: Any) -> None:
    """Set an attribute on the current span (the request's or the task's)."""
    if _backend is not None:
        _backend.annotate(key, value)


def traceparent() -> str | None:
    """The current context as a W3C `traceparent` value, to resume it elsewhere later."""
    return _backend.traceparent() if _backend is not None else None


def continued(parent: str | None) -> AbstractContextManager[Any]:
    """Run a block inside the context `traceparent()` once returned (e.g. an outbox row's)."""
    if _backend is None or not parent:
        return _NULL
    return _backend.continued(parent)
