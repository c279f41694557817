"""Shapes of the health answers (documented in OpenAPI exactly as served)."""

import marshmallow as ma

from myapp.core.api import Schema


class LiveSchema(Schema):
    """Liveness and readiness answer."""

    status = ma.fields.String(required=True, metadata={"example": "ok"})


class CheckSchema(Schema):
    """One dependency."""

    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["up", "down"]))
    latency_ms = ma.fields.Float(allow_none=True)
    error = ma.fields.String(allow_none=True)
    depth = ma.fields.Integer(metadata={"description": "Pending messages (queue only)"})


class ChecksSchema(Schema):
    """All dependencies."""

    database = ma.fields.Nested(CheckSchema, required=True)
    redis = ma.fields.Nested(CheckSchema, required=True)
    queue = ma.fields.Nested(CheckSchema, required=True)


class HealthSchema(Schema):
    """Detailed health."""

    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["ok", "degraded", "down"]))
    checks = ma.fields.Nested(ChecksSchema, required=True)
    version = ma.fields.String(required=True)
