"""Auth request and response bodies."""

import marshmallow as ma

from myapp.core.api import Schema
from myapp.core.passwords import MAX_LENGTH, MIN_LENGTH


def password_field(**kwargs: object) -> ma.fields.String:
    """8..128 characters (the password policy); never dumped."""
    return ma.fields.String(
        required=True,
        load_only=True,
        validate=ma.validate.Length(min=MIN_LENGTH, max=MAX_LENGTH),
        **kwargs,
    )


class LoginSchema(Schema):
    """Credentials."""

    email = ma.fields.Email(required=True, validate=ma.validate.Length(max=320))
    password = ma.fields.String(
        required=True, load_only=True, validate=ma.validate.Length(min=1, max=MAX_LENGTH)
    )


class RefreshSchema(Schema):
    """A refresh token to spend (in cookie mode it comes from the cookie instead)."""

    refresh_token = ma.fields.String(validate=ma.validate.Length(min=1, max=4096))


class TokenPairSchema(Schema):
    """A new access/refresh pair."""

    access_token = ma.fields.String(required=True)
    refresh_token = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "null in cookie mode"}
    )
    token_type = ma.fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = ma.fields.Integer(required=True, metadata={"description": "seconds"})


class PasswordChangeSchema(Schema):
    """Current and new password."""

    current_password = ma.fields.String(
        required=True, load_only=True, validate=ma.validate.Length(min=1, max=MAX_LENGTH)
    )
    new_password = password_field()


class SessionSchema(Schema):
    """One login of the caller."""

    id = ma.fields.UUID(required=True)
    created_at = ma.fields.DateTime(required=True)
    last_used_at = ma.fields.DateTime(required=True)
    ip = ma.fields.String(allow_none=True)
    user_agent = ma.fields.String(allow_none=True)
    current = ma.fields.Boolean(required=True)
