"""`/v1/audit-logs`."""

from __future__ import annotations

from flask.views import MethodView

from myapp.audit import service
from myapp.audit.schemas import AuditLogSchema, AuditQueryArgs
from myapp.core import permissions as perms
from myapp.core.api import Blueprint
from myapp.core.paging import Page

blp = Blueprint("audit", __name__, url_prefix="/v1/audit-logs", description="Audit trail")


@blp.route("")
class AuditLogs(MethodView):
    """The audit trail."""

    @blp.auth(perms.AUDIT_READ)
    @blp.arguments(AuditQueryArgs, location="query")
    @blp.response(200, AuditLogSchema(many=True), page="offset")
    def get(self, args: dict) -> Page:
        """Audit rows, newest first, with filters."""
        return service.list_logs(**args)
