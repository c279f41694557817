"""OpenTelemetry set-up, imported by `myapp.core.tracing` only when tracing is on.

Needs the packages of `requirements-otel.txt`. One tracer provider per process (gunicorn
workers build their app after the fork, so each has its own exporter thread), exporting
over OTLP/HTTP in batches. Instrumented: Flask requests (server spans named by route),
SQLAlchemy statements (text with placeholders, never parameter values), Redis commands
(command names only), Celery publish and run (the task's span continues the publisher's
trace through the message headers), and Socket.IO events through `tracing.span`.

Sampling: a trace starts only where work starts: a request, a socket event, a published
or consumed task. A lone SQL statement or Redis command with no parent (the outbox relay's
polling, the login check of the realtime role, queue gauges) is never a trace of its own.
Of those starts, `OTEL_TRACES_SAMPLER_ARG` (0..1) are kept; children follow their parent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from flask import Flask
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from myapp.settings import Settings

#: Probes and scrapes are not traced (regular expressions searched in the URL).
EXCLUDED_URLS = "/health/,/metrics"
_KINDS = {kind.name.lower(): kind for kind in SpanKind}
_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("myapp")


class StartWhereWorkStarts(Sampler):
    """Drop root spans of kind client or internal; ratio-sample the other roots."""

    def __init__(self, ratio: float) -> None:
        self._inner = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        """The SDK's sampling hook."""
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind in (None, SpanKind.CLIENT, SpanKind.INTERNAL):
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """How the SDK names this sampler."""
        return f"StartWhereWorkStarts{{{self._inner.get_description()}}}"


def start(settings: Settings) -> None:
    """The process's tracer provider and exporter; SQLAlchemy, Redis and Celery patched."""
    endpoint = str(settings.otel_exporter_otlp_endpoint).rstrip("/")
    resource = Resource.create(
        {
            "service.name": settings.otel_service_name or settings.app_name,
            "service.version": settings.app_version,
            "deployment.environment.name": settings.app_env,
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=StartWhereWorkStarts(settings.otel_traces_sampler_arg)
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{endpoint}/v1/traces")))
    trace.set_tracer_provider(provider)
    # The SQLAlchemy instrumentation declares support up to 2.0; it uses only engine events,
    # which 2.1 keeps (the tracing test checks the statements' spans).
    SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    RedisInstrumentor().instrument()
    CeleryInstrumentor().instrument()


def _path_only(span: trace.Span, environ: Mapping[str, Any]) -> None:
    """A query string can carry a single-use ticket (event stream): spans keep the path."""
    path = environ.get("PATH_INFO", "")
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    span.set_attribute("http.target", path)
    span.set_attribute("http.url", f"{environ.get('wsgi.url_scheme', 'http')}://{host}{path}")
    span.set_attribute("url.query", "")


def instrument_app(app: Flask) -> None:
    """See `tracing.instrument_app`; the hooks below are the backends of `tracing`'s."""
    FlaskInstrumentor.instrument_app(app, excluded_urls=EXCLUDED_URLS, request_hook=_path_only)


def add_trace_ids(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current span's ids, as trace back-ends print them."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def span(
    name: str, *, kind: str, attributes: Mapping[str, Any] | None
) -> AbstractContextManager[Any]:
    """A span made current for the block."""
    return _tracer.start_as_current_span(name, kind=_KINDS[kind], attributes=attributes)


def annotate(key: str, value: Any) -> None:
    """One attribute on the current span."""
    trace.get_current_span().set_attribute(key, value)


def traceparent() -> str | None:
    """The current context, W3C-encoded (None outside any span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def continued(parent: str) -> Iterator[None]:
    """The context `parent` encodes, current for the block."""
    token = otel_context.attach(_propagator.extract({"traceparent": parent}))
    try:
        yield
    finally:
        otel_context.detach(token)
