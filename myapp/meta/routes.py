"""`GET /v1/meta/error-codes`."""

from __future__ import annotations

from flask.views import MethodView

from myapp.core.api import Blueprint
from myapp.core.errors import CATALOG, ErrorCode
from myapp.meta.schemas import ErrorCodeSchema

blp = Blueprint("meta", __name__, url_prefix="/v1/meta", description="About the API")


@blp.route("/error-codes")
class ErrorCodes(MethodView):
    """The error-code catalog."""

    @blp.doc(security=[])
    @blp.response(200, ErrorCodeSchema(many=True))
    def get(self) -> list[ErrorCode]:
        """Every error code a client may receive, with its HTTP status."""
        return list(CATALOG.values())
