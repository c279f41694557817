"""Users request and response bodies, and how a user is shown to a given caller."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from myapp.core.api import OffsetPageArgs, Schema
from myapp.core.context import Actor
from myapp.core.passwords import MAX_LENGTH, MIN_LENGTH
from myapp.core.permissions import ROLE_PERMISSIONS
from myapp.users import policies
from myapp.users.models import User, UserStatus

PHONE = ma.validate.Regexp(r"^\+?[0-9][0-9 ()-]{5,24}$", error="Not a valid phone number.")
STATUSES = [s.value for s in UserStatus]
ROLE_NAMES = sorted(ROLE_PERMISSIONS)
SORTS = ["createdAt", "-createdAt", "email", "-email", "name", "-name"]


def masked_phone(phone: str) -> str:
    """`+15551235678` -> `***-****-5678`."""
    return f"***-****-{phone[-4:]}"


def present_user(user: User, actor: Actor) -> dict[str, Any]:
    """The user as `actor` may see it (phone masked unless self or admin)."""
    phone = user.phone
    if phone and not policies.sees_full_phone(actor, user):
        phone = masked_phone(phone)
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "phone": phone,
        "roles": user.role_names,
        "status": user.status,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "deleted_at": user.deleted_at,
    }


class UserSchema(Schema):
    """A user."""

    id = ma.fields.UUID(required=True)
    email = ma.fields.Email(required=True)
    name = ma.fields.String(required=True)
    phone = ma.fields.String(allow_none=True, metadata={"example": "***-****-5678"})
    roles = ma.fields.List(ma.fields.String(), required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(STATUSES))
    created_at = ma.fields.DateTime(required=True)
    updated_at = ma.fields.DateTime(required=True)
    deleted_at = ma.fields.DateTime(allow_none=True)


class RegisterSchema(Schema):
    """Sign-up."""

    email = ma.fields.Email(required=True, validate=ma.validate.Length(max=320))
    password = ma.fields.String(
        required=True, load_only=True, validate=ma.validate.Length(min=MIN_LENGTH, max=MAX_LENGTH)
    )
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=120))


class UserCreateSchema(RegisterSchema):
    """A new user (by a `users:write` holder)."""

    phone = ma.fields.String(load_default=None, allow_none=True, validate=PHONE)
    roles = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(ROLE_NAMES)),
        validate=ma.validate.Length(min=1),
    )


class MePatchSchema(Schema):
    """What anybody may change about themselves."""

    name = ma.fields.String(validate=ma.validate.Length(min=1, max=120))
    phone = ma.fields.String(allow_none=True, validate=PHONE)


class UserPatchSchema(MePatchSchema):
    """What `users:write` holders may change (policies refine it per caller)."""

    email = ma.fields.Email(validate=ma.validate.Length(max=320))
    status = ma.fields.String(validate=ma.validate.OneOf(STATUSES))


class UserStatsSchema(Schema):
    """How many users there are (soft-deleted ones not counted)."""

    total = ma.fields.Integer(required=True)
    by_status = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    by_role = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())


class RolesSchema(Schema):
    """A user's complete set of roles."""

    roles = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(ROLE_NAMES)),
        required=True,
        validate=ma.validate.Length(min=1),
    )


class UserListArgs(OffsetPageArgs):
    """Filters, sort and paging; `cursor`/`limit` switch to cursor paging."""

    cursor = ma.fields.String(validate=ma.validate.Length(max=512))
    limit = ma.fields.Integer(validate=ma.validate.Range(min=1, max=100))
    sort = ma.fields.String(load_default="-createdAt", validate=ma.validate.OneOf(SORTS))
    status = ma.fields.String(validate=ma.validate.OneOf(STATUSES))
    role = ma.fields.String(validate=ma.validate.OneOf(ROLE_NAMES))
    q = ma.fields.String(validate=ma.validate.Length(min=1, max=100))
    include_deleted = ma.fields.Boolean(load_default=False)


class ExportStartedSchema(Schema):
    """An export was queued: follow it at `GET /v1/jobs/{jobId}`."""

    job_id = ma.fields.UUID(required=True)
