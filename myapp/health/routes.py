"""`/health/live`, `/health/ready`, `/health`: no `/v1` prefix and no envelope (probe shapes)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from myapp.core.api import Blueprint
from myapp.core.config import current_settings
from myapp.health import service
from myapp.health.schemas import HealthSchema, LiveSchema

blp = Blueprint("health", __name__, url_prefix="/health", description="Liveness and readiness")
NO_AUTH: list[dict[str, list[str]]] = []


@blp.route("/live")
class Live(MethodView):
    """Liveness."""

    @blp.doc(security=NO_AUTH)
    @blp.response(200, LiveSchema, envelope=False)
    def get(self) -> dict[str, str]:
        """The process is running."""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    """Readiness."""

    @blp.doc(security=NO_AUTH)
    @blp.response(200, LiveSchema, envelope=False)
    @blp.alt_response(503, schema=LiveSchema, description="A dependency is down or draining")
    def get(self) -> tuple[dict[str, str], int]:
        """Ready for traffic: PostgreSQL and Redis answer and no shutdown began (a broker
        outage shows in `/health`, not here: events wait in the outbox meanwhile)."""
        if service.is_draining():
            return {"status": "draining"}, 503
        ready = service.is_ready(service.check_all())
        return ({"status": "ok"}, 200) if ready else ({"status": "unavailable"}, 503)


@blp.route("")
class Health(MethodView):
    """Detailed health."""

    @blp.doc(security=NO_AUTH)
    @blp.response(200, HealthSchema, envelope=False)
    @blp.alt_response(503, schema=HealthSchema, description="Degraded or down")
    def get(self) -> tuple[dict[str, Any], int]:
        """Each dependency with its latency; the queue with its depth."""
        checks = service.check_all()
        status = service.overall_status(checks)
        body = {
            "status": status,
            "checks": {
                name: {
                    "status": check.status,
                    "latency_ms": check.latency_ms,
                    "error": check.error,
                    **check.extra,
                }
                for name, check in checks.items()
            },
            "version": current_settings().app_version,
        }
        return body, 200 if status == "ok" else 503
