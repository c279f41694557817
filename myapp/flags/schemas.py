"""Feature flag bodies."""

from typing import Any

import marshmallow as ma

from myapp.core.api import Schema
from myapp.core.permissions import ROLE_PERMISSIONS
from myapp.flags.service import FlagRules


class RulesSchema(Schema):
    """Who gets an enabled flag: listed users, roles, or a stable percentage of users."""

    roles = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(sorted(ROLE_PERMISSIONS))), load_default=list
    )
    user_ids = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(max=64)), load_default=list
    )
    percentage = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=0, max=100))

    @ma.post_load
    def _to_rules(self, data: dict[str, Any], **_: Any) -> FlagRules:
        return FlagRules(
            roles=tuple(data["roles"]),
            user_ids=tuple(data["user_ids"]),
            percentage=data["percentage"],
        )


class FlagSchema(Schema):
    """A flag."""

    key = ma.fields.String(required=True)
    enabled = ma.fields.Boolean(required=True)
    rules = ma.fields.Nested(RulesSchema, required=True, attribute="targeting")
    description = ma.fields.String(required=True)
    updated_at = ma.fields.DateTime(required=True)


class FlagPutSchema(Schema):
    """The new state of a flag."""

    enabled = ma.fields.Boolean(required=True)
    description = ma.fields.String(validate=ma.validate.Length(max=300))
    rules = ma.fields.Nested(RulesSchema)
