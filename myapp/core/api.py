"""flask-smorest subclasses: the envelope, camelCase schemas and paging live here, once.

Domains import `Blueprint`, `Schema`, the paging argument schemas and helpers from here:

    blp = Blueprint("users", __name__, url_prefix="/v1/users")

    @blp.route("")
    class Users(MethodView):
        @blp.arguments(OffsetPageArgs, location="query")
        @blp.response(200, UserSchema(many=True), page="offset")
        def get(self, args):
            "List users."
            return offset_page(select(User), page=args["page"], per_page=args["per_page"])

The view returns plain data (or a `Page`); the blueprint wraps it as
`{"success": true, "data": ..., "meta": ...}` and documents exactly that shape.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, Literal

import flask_smorest
import marshmallow as ma
from flask import Flask, Response, send_from_directory
from swagger_ui_bundle import swagger_ui_path
from webargs import core as webargs_core
from webargs.flaskparser import FlaskParser
from werkzeug.wrappers import Response as WerkzeugResponse

from myapp.core.bodies import parsed_json
from myapp.core.errors import AppError
from myapp.core.paging import Page
from myapp.core.pipeline import caller_required

PageKind = Literal["offset", "cursor", "any"]
MAX_PAGE = 10_000  # deeper offset pages are slow for the database: use the cursor
MAX_PER_PAGE = 100


def camelcase(name: str) -> str:
    """`created_at` -> `createdAt`."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Schema(ma.Schema):
    """Base schema: camelCase on the wire, unknown fields refused."""

    class Meta:
        unknown = ma.RAISE

    def on_bind_field(self, field_name: str, field_obj: ma.fields.Field) -> None:
        """Expose every field under its camelCase name unless one is given."""
        field_obj.data_key = field_obj.data_key or camelcase(field_name)


class ErrorDetailSchema(Schema):
    """One validation problem."""

    field = ma.fields.String(required=True, metadata={"example": "email"})
    message = ma.fields.String(required=True, metadata={"example": "Not a valid email address."})


class ErrorSchema(Schema):
    """The `error` member of a failure."""

    code = ma.fields.String(required=True, metadata={"example": "VALIDATION_FAILED"})
    message = ma.fields.String(required=True)
    details = ma.fields.List(ma.fields.Nested(ErrorDetailSchema))


class ErrorEnvelopeSchema(Schema):
    """Every 4xx/5xx body."""

    success = ma.fields.Boolean(required=True, metadata={"example": False})
    error = ma.fields.Nested(ErrorSchema, required=True)
    request_id = ma.fields.String(required=True, metadata={"example": "01JD3Q7ZK2X9V5T8N4R6M1P0A"})


class OffsetMetaSchema(Schema):
    """Paging of an offset list."""

    page = ma.fields.Integer(required=True)
    per_page = ma.fields.Integer(required=True)
    total = ma.fields.Integer(required=True)
    total_pages = ma.fields.Integer(required=True)


class CursorMetaSchema(Schema):
    """Paging of a cursor list."""

    next_cursor = ma.fields.String(required=True, allow_none=True)
    has_more = ma.fields.Boolean(required=True)


class AnyPageMetaSchema(Schema):
    """Paging of a list that offers both modes: offset fields or cursor fields."""

    page = ma.fields.Integer()
    per_page = ma.fields.Integer()
    total = ma.fields.Integer()
    total_pages = ma.fields.Integer()
    next_cursor = ma.fields.String(allow_none=True)
    has_more = ma.fields.Boolean()


class OffsetPageArgs(Schema):
    """`?page=1&perPage=20` (max 100)."""

    page = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=MAX_PAGE))
    per_page = ma.fields.Integer(load_default=20, validate=ma.validate.Range(min=1, max=100))


class CursorPageArgs(Schema):
    """`?cursor=..&limit=..` (max 100)."""

    cursor = ma.fields.String(load_default=None, validate=ma.validate.Length(max=512))
    limit = ma.fields.Integer(load_default=20, validate=ma.validate.Range(min=1, max=100))


_META_SCHEMAS: dict[str, type[Schema]] = {
    "offset": OffsetMetaSchema,
    "cursor": CursorMetaSchema,
    "any": AnyPageMetaSchema,
}
_envelope_cache: dict[tuple[Any, ...], type[ma.Schema]] = {}


def success_envelope(
    schema: ma.Schema | ma.fields.Field, page: PageKind | None = None, name: str | None = None
) -> ma.Schema:
    """Schema of `{"success": true, "data": <schema>, "meta": <paging>}`.

    `schema` may also be a plain field (e.g. a `Dict` of booleans) named by `name`.
    """
    if isinstance(schema, ma.fields.Field):
        key: tuple[Any, ...] = ("field", name, page)
        data, base, many = schema, name or "Data", False
    else:
        key = (type(schema), schema.many, schema.only, tuple(schema.exclude), page)
        data = ma.fields.Nested(schema, required=True)
        base, many = schema.__class__.__name__.removesuffix("Schema"), schema.many
    if key not in _envelope_cache:
        fields: dict[str, ma.fields.Field] = {
            "success": ma.fields.Boolean(required=True, metadata={"example": True}),
            "data": data,
        }
        if page:
            fields["meta"] = ma.fields.Nested(_META_SCHEMAS[page], required=True)
        name = f"{base}{'List' if many else ''}{(page or '').title()}Envelope"
        _envelope_cache[key] = Schema.from_dict(fields, name=name)
    return _envelope_cache[key]()


class _Parser(FlaskParser):
    """Loads JSON bodies as the request pipeline parsed and checked them (one parse)."""

    def _raw_load_json(self, req: Any) -> Any:
        value = parsed_json()
        return webargs_core.missing if value is None else value


class Blueprint(flask_smorest.Blueprint):
    """A smorest blueprint whose responses carry the envelope of docs/api.md."""

    ARGUMENTS_PARSER = _Parser()

    def response(
        self,
        status_code: int,
        schema: Any = None,
        *,
        page: PageKind | None = None,
        envelope: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ) -> Callable:
        """Like smorest's `response`, but wrapping data (and paging) in the envelope.

        `envelope=False` is for the few operational routes whose shape is fixed
        otherwise (health probes). A view may still return a `(data, status, headers)` tuple.
        """
        if schema is None or not envelope:
            return super().response(status_code, schema, **kwargs)
        schema_instance = schema() if isinstance(schema, type) else schema
        envelope_schema = success_envelope(schema_instance, page, name)
        outer = super().response(status_code, envelope_schema, **kwargs)

        def decorator(view: Callable) -> Callable:
            @wraps(view)
            def enveloped(*args: Any, **view_kwargs: Any) -> Any:
                result = view(*args, **view_kwargs)
                body, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
                if isinstance(body, WerkzeugResponse):
                    return result  # the view built its own response (cookies, streams)
                if isinstance(body, Page):
                    wrapped = {"success": True, "data": body.items, "meta": body.meta}
                else:
                    wrapped = {"success": True, "data": body}
                return (wrapped, *rest) if rest else wrapped

            return outer(enveloped)

        return decorator

    def auth(self, permission: str | None = None, *, admin: bool = False) -> Callable:
        """Require a bearer token (and `permission`), and say so in the OpenAPI document.

        The request pipeline checks it before the view runs (see `caller_required`).
        `admin=True` marks an admin route: callable only from `ADMIN_ALLOWED_CIDRS` when set.
        """

        def decorator(view: Callable) -> Callable:
            guarded = caller_required(permission, admin=admin)(view)
            guarded = self.doc(security=[{"bearerAuth": []}])(guarded)
            guarded = self.alt_response(401, response="UNAUTHORIZED")(guarded)
            if permission:
                guarded = self.alt_response(403, response="FORBIDDEN")(guarded)
            return guarded

        return decorator


class Api(flask_smorest.Api):
    """Our Api: error responses documented with the envelope we actually serve."""

    ERROR_SCHEMA = ErrorEnvelopeSchema

    def _register_error_handlers(self) -> None:
        """`myapp.core.errors` owns error handling; smorest's handler is not installed."""


api = Api()


#: The Swagger UI files the docs page loads, served from the pinned `swagger-ui-bundle`
#: package: the page works offline and depends on no CDN.
SWAGGER_UI_FILES = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"}
)
SWAGGER_UI_URL = "/docs/assets/"


def serve_swagger_ui_assets(app: Flask) -> None:
    """Route `/docs/assets/<file>` to Swagger UI's files (only the three the page needs)."""

    def swagger_ui_asset(filename: str) -> Response:
        if filename not in SWAGGER_UI_FILES:
            raise AppError("NOT_FOUND")
        return send_from_directory(swagger_ui_path, filename, max_age=86_400)

    app.add_url_rule(f"{SWAGGER_UI_URL}<path:filename>", "swagger_ui_asset", swagger_ui_asset)
