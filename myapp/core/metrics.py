"""Prometheus metrics: request count and latency by method, route template and status.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set by `docker/gunicorn.conf.py` before any
worker imports prometheus_client, so every worker writes its samples to that directory and
`/metrics` aggregates all of them, whichever worker answers. Any other process started with
that variable set (the `flask` CLI, Celery) writes there too; the directory is created when
missing, and one that cannot be created stops the process with a clear message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, Request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_flask_exporter import PrometheusMetrics

from myapp.core.config import current_settings
from myapp.core.security import allow_only_from
from myapp.settings import ConfigError, Settings

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_REGISTRY = "myapp.metrics_registry"
_MADE = "myapp.metrics_made"


def route(request: Request) -> str:
    """The route template (`/v1/users/<id>`), so label values stay few and free of ids."""
    return request.url_rule.rule if request.url_rule else "<unmatched>"


def _allowed_networks() -> list:
    return current_settings().metrics_allowed_cidrs


def ensure_multiprocess_dir() -> None:
    """Create `PROMETHEUS_MULTIPROC_DIR` when it is set but missing; `ConfigError` if we can't.

    prometheus_client opens one file per metric and process in that directory as soon as a
    metric exists; a missing directory would crash the process on its first metric.
    """
    directory = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if not directory:
        return
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"Invalid configuration:\n  - {MULTIPROC_DIR_VARIABLE}: cannot create the "
            f"directory {directory!r} ({reason}); point it at a writable directory or unset it"
        ) from None


def register_metrics(app: Flask, settings: Settings) -> PrometheusMetrics:
    """Expose `/metrics` (allowlisted by CIDR) and record default HTTP metrics."""
    ensure_multiprocess_dir()
    metrics = PrometheusMetrics(
        app=None,
        path="/metrics",
        registry=CollectorRegistry(auto_describe=True),
        group_by=route,
        metrics_decorator=allow_only_from(_allowed_networks),
    )
    metrics.init_app(app)
    metrics.info("app_info", "Application version", version=settings.app_version)
    app.extensions[_REGISTRY] = metrics.registry
    return metrics


def _registered(app: Flask, kind: type, name: str, *args: Any, **kwargs: Any) -> Any:
    """One metric object per app and name, in the app's registry (tests build many apps)."""
    made = app.extensions.setdefault(_MADE, {})
    if name not in made:
        made[name] = kind(name, *args, registry=app.extensions[_REGISTRY], **kwargs)
    return made[name]


def app_counter(app: Flask, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
    """A counter of `app` (created once)."""
    return _registered(app, Counter, name, documentation, labels)


def app_histogram(
    app: Flask,
    name: str,
    documentation: str,
    labels: tuple[str, ...] = (),
    *,
    buckets: tuple[float, ...],
) -> Histogram:
    """A histogram of `app` (created once)."""
    return _registered(app, Histogram, name, documentation, labels, buckets=buckets)


def app_gauge(
    app: Flask,
    name: str,
    documentation: str,
    labels: tuple[str, ...] = (),
    *,
    multiprocess_mode: str = "mostrecent",
) -> Gauge:
    """A gauge of `app` (created once). With several processes the most recent value wins,
    or (`multiprocess_mode="livesum"`) the values of the live processes add up."""
    return _registered(app, Gauge, name, documentation, labels, multiprocess_mode=multiprocess_mode)


def serve_worker_metrics(app: Flask, port: int) -> None:
    """Expose a non-web process's metrics (a Celery worker) on `port`, all interfaces."""
    registry = app.extensions[_REGISTRY]
    if os.environ.get(MULTIPROC_DIR_VARIABLE):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry)
