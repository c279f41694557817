"""Audit log bodies."""

import marshmallow as ma

from myapp.audit.models import AuditAction
from myapp.core.api import OffsetPageArgs, Schema


class AuditLogSchema(Schema):
    """One audit row."""

    id = ma.fields.UUID(required=True)
    actor_id = ma.fields.UUID(allow_none=True)
    actor_type = ma.fields.String(required=True)
    action = ma.fields.String(required=True)
    target_type = ma.fields.String(required=True)
    target_id = ma.fields.String(allow_none=True)
    before = ma.fields.Dict(allow_none=True)
    after = ma.fields.Dict(allow_none=True)
    request_id = ma.fields.String(allow_none=True)
    ip = ma.fields.String(allow_none=True)
    user_agent = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime(required=True)


class AuditQueryArgs(OffsetPageArgs):
    """Filters of the audit list (`from` inclusive, `to` exclusive)."""

    actor_id = ma.fields.UUID()
    action = ma.fields.String(validate=ma.validate.OneOf([a.value for a in AuditAction]))
    target_type = ma.fields.String(validate=ma.validate.Length(max=32))
    target_id = ma.fields.String(validate=ma.validate.Length(max=64))
    since = ma.fields.AwareDateTime(data_key="from", default_timezone=None)
    until = ma.fields.AwareDateTime(data_key="to", default_timezone=None)
