"""The error-code catalog, `AppError`, and the handlers that turn every failure into the envelope.

Clients branch on `error.code`, never on the text. No handler ever puts a stack trace, SQL,
secret or internal path into a response; unexpected exceptions are logged once (by Flask's
`log_exception`, through our masked logging pipeline) and answered `INTERNAL_ERROR`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kombu.exceptions
import psycopg
import redis.exceptions
import sqlalchemy.exc
from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

from myapp.core.blobs import StorageError
from myapp.core.context import current_request_id, new_request_id
from myapp.core.logging import get_logger

log = get_logger(__name__)
_UNAVAILABLE_LISTENERS = "myapp.unavailable_listeners"


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One entry of the catalog: machine code, HTTP status and when it is used."""

    code: str
    status: int
    description: str


_CATALOG = (
    ErrorCode("BAD_REQUEST", 400, "Malformed request: invalid JSON, bad header or parameter."),
    ErrorCode("VALIDATION_FAILED", 422, "The body or query failed validation; see details."),
    ErrorCode("AUTH_REQUIRED", 401, "Authentication is required."),
    ErrorCode("AUTH_INVALID_CREDENTIALS", 401, "Email or password is wrong."),
    ErrorCode("AUTH_TOKEN_EXPIRED", 401, "The token has expired."),
    ErrorCode(
        "AUTH_TOKEN_INVALID", 401, "The token is malformed, mis-signed or of the wrong type."
    ),
    ErrorCode("AUTH_TOKEN_REVOKED", 401, "The token has been revoked."),
    ErrorCode("AUTH_TOKEN_REUSED", 401, "A spent refresh token came back; its login is revoked."),
    ErrorCode("FORBIDDEN", 403, "You may not do this."),
    ErrorCode("NOT_FOUND", 404, "No such resource or route."),
    ErrorCode("FEATURE_DISABLED", 404, "This feature is turned off."),
    ErrorCode("METHOD_NOT_ALLOWED", 405, "The route does not accept this method."),
    ErrorCode("CONFLICT", 409, "The request conflicts with the current state."),
    ErrorCode("IDEMPOTENCY_KEY_IN_USE", 409, "A request with this Idempotency-Key is running."),
    ErrorCode(
        "IDEMPOTENCY_KEY_MISMATCH", 422, "This Idempotency-Key was used for another request."
    ),
    ErrorCode("PAYLOAD_TOO_LARGE", 413, "The request body is over the size limit."),
    ErrorCode("UNSUPPORTED_MEDIA_TYPE", 415, "The content type is not accepted here."),
    ErrorCode("RANGE_NOT_SATISFIABLE", 416, "The requested range cannot be served."),
    ErrorCode("RATE_LIMITED", 429, "Too many requests; retry after `Retry-After` seconds."),
    ErrorCode("INTERNAL_ERROR", 500, "Unexpected server error."),
    ErrorCode("SERVICE_UNAVAILABLE", 503, "A dependency is down; retry later."),
)
CATALOG: Mapping[str, ErrorCode] = {entry.code: entry for entry in _CATALOG}

#: Code used for an HTTP status raised by Flask/Werkzeug without one of ours.
_CODE_FOR_STATUS = {
    400: "BAD_REQUEST",
    401: "AUTH_REQUIRED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    416: "RANGE_NOT_SATISFIABLE",
    422: "VALIDATION_FAILED",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}

#: Exceptions that mean "a dependency is down", answered 503.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,  # the broker (RabbitMQ or Redis) does not answer
    StorageError,  # the blob store (S3) does not answer
)


#: At most this many `details` are returned; the message says how many there were.
MAX_DETAILS = 50


class AppError(Exception):
    """An expected failure with a catalog code; raise it from services and routes."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        details: Iterable[Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        entry = CATALOG[code]
        super().__init__(message or entry.description)
        self.code = code
        self.status = entry.status
        self.message = message or entry.description
        self.details = list(details or [])
        if len(self.details) > MAX_DETAILS:
            self.message += f" {len(self.details)} problems; the first {MAX_DETAILS} are listed."
            self.details = self.details[:MAX_DETAILS]
        self.headers = dict(headers or {})


def error_body(code: str, message: str, details: list[Mapping[str, str]] | None = None) -> dict:
    """The failure envelope (docs/api.md)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"success": False, "error": error, "requestId": current_request_id() or new_request_id()}


def error_response(error: AppError) -> Response:
    """Render an `AppError` as an enveloped JSON response."""
    response = jsonify(error_body(error.code, error.message, error.details))
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def flatten_messages(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """Turn marshmallow's nested `{field: [msg]}` into `[{field, message}]` with dotted paths."""
    if isinstance(messages, Mapping):
        details: list[dict[str, str]] = []
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            details.extend(flatten_messages(value, path))
        return details
    if isinstance(messages, list | tuple):
        if all(isinstance(item, str) for item in messages):
            return [{"field": prefix or "_schema", "message": item} for item in messages]
        return [d for item in messages for d in flatten_messages(item, prefix)]
    return [{"field": prefix or "_schema", "message": str(messages)}]


def _validation_details(error: HTTPException) -> list[dict[str, str]]:
    """webargs stores `{location: {field: [msgs]}}`; the location is not part of the field."""
    data = getattr(error, "data", None) or {}
    messages = data.get("messages") or data.get("errors") or {}
    details: list[dict[str, str]] = []
    for location_messages in messages.values() if isinstance(messages, Mapping) else [messages]:
        details.extend(flatten_messages(location_messages))
    return details


def _app_error_from_http(error: HTTPException) -> AppError:
    status = error.code or 500
    code = _CODE_FOR_STATUS.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    headers: dict[str, str] = {}
    if status == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
    data = getattr(error, "data", None) or {}
    if status == 422:
        return AppError(code, details=_validation_details(error), headers=headers)
    if status == 400 and data.get("messages"):
        return AppError(code, "Malformed JSON body.", headers=headers)
    return AppError(code, headers=headers)


def handle_app_error(error: AppError) -> Response:
    """Expected failures: log at info level (warning for 5xx), answer the envelope."""
    level = "warning" if error.status >= 500 else "info"
    getattr(log, level)("request.failed", code=error.code, status=error.status)
    return error_response(error)


def handle_http_exception(error: HTTPException) -> Response:
    """404, 405, 413, webargs 422 and every other Werkzeug HTTP error."""
    if isinstance(error, InternalServerError):
        return handle_internal_error(error)
    return error_response(_app_error_from_http(error))


def on_unavailable(app: Flask, listener: Callable[[Exception], None]) -> None:
    """Call `listener` with every dependency error answered 503 (metrics count them)."""
    app.extensions.setdefault(_UNAVAILABLE_LISTENERS, []).append(listener)


def handle_unavailable(error: Exception) -> Response:
    """A database or Redis outage: 503 without the driver's message (it may hold hosts)."""
    log.warning("dependency.unavailable", error_type=type(error).__name__)
    for listener in current_app.extensions.get(_UNAVAILABLE_LISTENERS, ()):
        listener(error)
    return error_response(AppError("SERVICE_UNAVAILABLE"))


def handle_internal_error(error: InternalServerError) -> Response:
    """Unhandled exceptions land here after Flask logged them with their traceback."""
    original = getattr(error, "original_exception", None)
    if isinstance(original, UNAVAILABLE_ERRORS):
        return handle_unavailable(original)
    return error_response(AppError("INTERNAL_ERROR"))


def register_error_handlers(app: Flask) -> None:
    """Install the handlers; they replace flask-smorest's own HTTPException handler."""
    app.register_error_handler(AppError, handle_app_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(InternalServerError, handle_internal_error)
    for exc_type in UNAVAILABLE_ERRORS:
        app.register_error_handler(exc_type, handle_unavailable)
