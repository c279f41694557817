"""Shapes of the meta answers."""

import marshmallow as ma

from myapp.core.api import Schema


class ErrorCodeSchema(Schema):
    """One catalog entry."""

    code = ma.fields.String(required=True, metadata={"example": "VALIDATION_FAILED"})
    status = ma.fields.Integer(required=True, metadata={"example": 422})
    description = ma.fields.String(required=True)
