"""Request bodies and query strings, checked before anything parses them for a route.

Hostile input must be a fast 4xx in the envelope, never a 5xx or a stalled worker:

- a body that is not JSON (or a form where a route takes one) is 415;
- a JSON body over `JSON_MAX_BYTES` is 413 before a byte of it is read (the size the
  client declares) or as soon as reading passes the limit (chunked bodies);
- JSON is parsed once, here, with limits the standard parser lacks: nesting deeper than
  `MAX_DEPTH` and numbers longer than `MAX_NUMBER_LENGTH` (or not finite) are 400, like
  malformed JSON; the routes' schemas then load what was parsed here;
- text anywhere in the request (JSON keys and strings, query parameters) holding NUL or
  an unpaired surrogate is 422: PostgreSQL, argon2 and UTF-8 encoders all fail on them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import g, request
from werkzeug.exceptions import RequestEntityTooLarge

from myapp.core.config import current_settings
from myapp.core.errors import AppError

MAX_DEPTH = 32
MAX_NUMBER_LENGTH = 50
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACCEPTED_MEDIA_TYPES = frozenset(
    {"application/json", "multipart/form-data", "application/x-www-form-urlencoded"}
)
_UNSET = object()


class RefusedJSONError(ValueError):
    """JSON we refuse to parse, with the reason."""


def _number(text: str, convert: type) -> Any:
    if len(text) > MAX_NUMBER_LENGTH:
        raise RefusedJSONError(f"numbers may have at most {MAX_NUMBER_LENGTH} characters")
    value = convert(text)
    if convert is float and not math.isfinite(value):
        raise RefusedJSONError("numbers must be finite")
    return value


def _constant(name: str) -> Any:
    raise RefusedJSONError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """Parse with our limits; `RefusedJSONError` (a ValueError) for anything refused."""
    try:
        value = json.loads(
            raw,
            parse_int=lambda text: _number(text, int),
            parse_float=lambda text: _number(text, float),
            parse_constant=_constant,
        )
    except RecursionError:
        raise RefusedJSONError(f"JSON may nest at most {MAX_DEPTH} levels") from None
    except RefusedJSONError:
        raise
    except (ValueError, UnicodeDecodeError):
        raise RefusedJSONError("malformed JSON") from None
    return value


def is_clean_text(text: str) -> bool:
    """No NUL, no unpaired surrogate (nothing UTF-8 cannot encode)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_problem(value: Any) -> tuple[str, str] | None:
    """(path, message) of the first string that is not clean text or the first level too
    deep, walking iteratively (a recursive walk is what deep nesting attacks)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return path or "_schema", f"JSON may nest at most {MAX_DEPTH} levels."
        if isinstance(item, str):
            if not is_clean_text(item):
                return path or "_schema", "Text must not contain NUL or unpaired surrogates."
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if not is_clean_text(key):
                    return path or "_schema", "Keys must not contain NUL or unpaired surrogates."
                stack.append((child, child_path, depth + 1))
        elif isinstance(item, list):
            stack.extend(
                (child, f"{path}.{n}" if path else str(n), depth + 1)
                for n, child in enumerate(item)
            )
    return None


def _refuse_dirty_query() -> None:
    for name, values in request.args.lists():
        for text in (name, *values):
            if not is_clean_text(text):
                message = "Text must not contain NUL or unpaired surrogates."
                raise AppError("VALIDATION_FAILED", details=[{"field": name, "message": message}])


def _read_json() -> None:
    settings = current_settings()
    limit = min(settings.json_max_bytes, settings.max_content_length)
    if request.content_length is not None and request.content_length > limit:
        raise AppError("PAYLOAD_TOO_LARGE", f"JSON bodies are limited to {limit} bytes.")
    request.max_content_length = limit  # also bounds a body sent without a length
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise AppError("PAYLOAD_TOO_LARGE", f"JSON bodies are limited to {limit} bytes.") from None
    if not raw:
        return
    try:
        value = parse_json(raw)
    except RefusedJSONError as error:
        raise AppError("BAD_REQUEST", f"Malformed JSON body: {error}.") from None
    problem = find_problem(value)
    if problem is not None:
        field, message = problem
        code = "BAD_REQUEST" if "nest" in message else "VALIDATION_FAILED"
        raise AppError(code, details=[{"field": field, "message": message}])
    g.json_body = value


def check_body() -> None:
    """Step: media type, JSON size, depth, numbers and text; query text."""
    if request.args:
        _refuse_dirty_query()
    if request.method not in BODY_METHODS:
        return
    if request.mimetype == "application/json":
        _read_json()
    elif request.content_length and request.mimetype not in ACCEPTED_MEDIA_TYPES:
        raise AppError("UNSUPPORTED_MEDIA_TYPE", "Send the body as application/json.")


def parsed_json() -> Any:
    """The request's JSON body as parsed by `check_body` (`None` when there was none)."""
    value = g.get("json_body", _UNSET)
    return None if value is _UNSET else value
