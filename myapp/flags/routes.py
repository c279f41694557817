"""`/v1/feature-flags`."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from flask.views import MethodView

from myapp.core import permissions as perms
from myapp.core.api import Blueprint
from myapp.core.context import current_actor
from myapp.core.errors import AppError
from myapp.flags import service
from myapp.flags.schemas import FlagPutSchema, FlagSchema

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
blp = Blueprint("flags", __name__, url_prefix="/v1/feature-flags", description="Feature flags")


@blp.route("")
class Flags(MethodView):
    """All flags."""

    @blp.auth(perms.FLAGS_READ)
    @blp.response(200, FlagSchema(many=True))
    def get(self) -> list[Any]:
        """Every flag with its rules."""
        return service.list_flags()


@blp.route("/me")
class FlagsForMe(MethodView):
    """Flags as evaluated for the caller."""

    @blp.auth()
    @blp.response(
        200, ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Boolean()), name="FlagsForMe"
    )
    def get(self) -> dict[str, bool]:
        """`{key: on}` for the caller."""
        return service.evaluate_all(current_actor())


@blp.route("/<string:key>")
class Flag(MethodView):
    """One flag."""

    @blp.auth(perms.FLAGS_WRITE, admin=True)
    @blp.arguments(FlagPutSchema)
    @blp.response(200, FlagSchema)
    def put(self, body: dict[str, Any], key: str) -> Any:
        """Create or change a flag; every process sees it within moments."""
        if not KEY_RE.fullmatch(key):
            raise AppError(
                "VALIDATION_FAILED", details=[{"field": "key", "message": "Use a-z 0-9 . _ -"}]
            )
        return service.set_flag(
            key=key,
            enabled=body["enabled"],
            description=body.get("description"),
            rules=body.get("rules"),
        )
