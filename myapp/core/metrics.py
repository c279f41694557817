"""Prometheus metrics: request count and latency by method, route template and status.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set by `docker/gunicorn.conf.py` before any
worker imports prometheus_client, so every worker writes its samples to that directory and
`/metrics` aggregates all of them, whichever worker answers.
"""

from __future__ import annotations

from flask import Flask, Request, current_app
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics

from myapp.core.security import allow_only_from
from myapp.settings import Settings


def route(request: Request) -> str:
    """The route template (`/v1/users/<id>`), so label values stay few and free of ids."""
    return request.url_rule.rule if request.url_rule else "<unmatched>"


def _allowed_networks() -> list:
    return current_app.extensions["settings"].metrics_allowed_cidrs


def register_metrics(app: Flask, settings: Settings) -> PrometheusMetrics:
    """Expose `/metrics` (allowlisted by CIDR) and record default HTTP metrics."""
    metrics = PrometheusMetrics(
        app=None,
        path="/metrics",
        registry=CollectorRegistry(auto_describe=True),
        group_by=route,
        metrics_decorator=allow_only_from(_allowed_networks),
    )
    metrics.init_app(app)
    metrics.info("app_info", "Application version", version=settings.app_version)
    app.extensions["metrics"] = metrics
    return metrics
