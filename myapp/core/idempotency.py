"""`Idempotency-Key` for POST, PUT and PATCH (docs/api.md, "Idempotency").

The first request with a key takes it atomically in Redis (`SET NX`, expiring after
`IDEMPOTENCY_LOCK_SECONDS` in case its process dies) and runs; its answer (status, a few
headers, body) is kept for `IDEMPOTENCY_TTL_SECONDS` unless it is a 5xx. Later requests
with the same key and caller:

- same method, path and body, completed: the stored answer, with `Idempotent-Replayed: true`;
- still running: 409 `IDEMPOTENCY_KEY_IN_USE`;
- anything else: 422 `IDEMPOTENCY_KEY_MISMATCH`.

Keys are scoped to the caller: the user of the verified token, or the client address when
anonymous. If Redis is down the request is refused with 503 rather than risk running twice.

Routes whose answers carry credentials (`carries_credentials`: everything under
`/v1/auth`) take no part: a token is never stored, and a spent refresh token always meets
reuse detection. Streaming routes (uploads) take no part either: fingerprinting their body
would mean buffering it. What is stored (status, a few headers, body) is sealed with the
field-encryption key ring (AES-256-GCM), bound to its Redis key: Redis never holds the
personal data of a replayable answer in clear.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import redis.exceptions
from flask import Response, g, request

from myapp.core.bodies import parsed_json
from myapp.core.config import current_settings
from myapp.core.context import current_credentials
from myapp.core.crypto import CryptoError, crypto
from myapp.core.errors import AppError
from myapp.core.logging import get_logger
from myapp.core.pipeline import current_route_policy
from myapp.core.redis import redis_client, redis_key

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
METHODS = frozenset({"POST", "PUT", "PATCH"})
STORED_HEADERS = ("Content-Type", "Location", "ETag")
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII
#: OpenAPI description of the header, for routes that require it.
IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Retry-safe key: the same key and body replays the first answer for 24 h.",
}

log = get_logger(__name__)


def _caller_scope() -> str:
    """The verified token's user (checked by the earlier steps), else the client address."""
    credentials = current_credentials()
    return f"user:{credentials.user_id}" if credentials else f"ip:{request.remote_addr}"


def _fingerprint() -> str:
    parsed = parsed_json()  # parsed once by the body step; key order does not count
    if parsed is None:
        body = request.get_data(cache=True)
    else:
        body = json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    query = "&".join(sorted(request.query_string.decode(errors="replace").split("&")))
    digest = hashlib.sha256(f"{request.method} {request.path}?{query}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def _seal(answer: dict[str, Any], store_key: str) -> str:
    return crypto().ring.encrypt(json.dumps(answer), aad=store_key)


def _replay(record: dict[str, Any], store_key: str) -> Response:
    try:
        answer = json.loads(crypto().ring.decrypt(record["sealed"], aad=store_key))
    except CryptoError:  # its key left the ring within the retention: it cannot be replayed
        log.error("idempotency.unreadable_answer")
        raise AppError("SERVICE_UNAVAILABLE") from None
    response = Response(base64.b64decode(answer["body"]), status=answer["status"])
    for name, value in answer["headers"].items():
        response.headers[name] = value
    response.headers[REPLAYED_HEADER] = "true"
    return response


def begin() -> Response | None:
    """Step: take the key, replay a finished answer, or refuse."""
    settings, policy = current_settings(), current_route_policy()
    if (
        not settings.idempotency_enabled
        or request.method not in METHODS
        or policy.credentials
        or policy.streaming
    ):
        return None
    key = request.headers.get(HEADER)
    if key is None:
        if policy.idempotency_key:
            raise AppError("BAD_REQUEST", f"This request requires an {HEADER} header.")
        return None
    if not _VALID_KEY.fullmatch(key):
        raise AppError("BAD_REQUEST", f"{HEADER} must be 1..255 visible ASCII characters.")
    scope = hashlib.sha256(f"{_caller_scope()}\n{key}".encode()).hexdigest()
    store_key, fingerprint = redis_key("idem", scope), _fingerprint()
    running = json.dumps({"state": "running", "fp": fingerprint})
    client = redis_client()
    for _ in range(2):  # a key that expires between SET and GET gets one more try
        if client.set(store_key, running, nx=True, ex=settings.idempotency_lock_seconds):
            g.idempotency = (store_key, fingerprint)
            return None
        raw = client.get(store_key)
        if raw is None:
            continue
        record = json.loads(raw)
        if record["fp"] != fingerprint:
            raise AppError("IDEMPOTENCY_KEY_MISMATCH")
        if record["state"] == "running":
            raise AppError("IDEMPOTENCY_KEY_IN_USE")
        return _replay(record, store_key)
    raise AppError("IDEMPOTENCY_KEY_IN_USE")


def finish(response: Response) -> Response:
    """Finisher: keep the answer, except 5xx, 429 and streams: those release the key.

    A 429 means the request never ran (the limiter refused it after the key was taken), so
    the client's retry with the same key must run, not replay the refusal.
    """
    held = g.pop("idempotency", None)
    if held is None:
        return response
    store_key, fingerprint = held
    settings = current_settings()
    try:
        if response.status_code >= 500 or response.status_code == 429 or response.is_streamed:
            redis_client().delete(store_key)
            return response
        answer = {
            "status": response.status_code,
            "headers": {h: response.headers[h] for h in STORED_HEADERS if h in response.headers},
            "body": base64.b64encode(response.get_data()).decode(),
        }
        record = {"state": "done", "fp": fingerprint, "sealed": _seal(answer, store_key)}
        redis_client().set(store_key, json.dumps(record), ex=settings.idempotency_ttl_seconds)
    except redis.exceptions.RedisError:
        # The work is done and answered; only a replay is lost. Say so, do not fail it.
        log.warning("idempotency.store_failed")
    return response


def release(_: BaseException | None = None) -> None:
    """Cleanup: a request that died before its answer was kept must not keep its key."""
    held = g.pop("idempotency", None)
    if held is not None:
        try:
            redis_client().delete(held[0])
        except redis.exceptions.RedisError:
            log.warning("idempotency.release_failed")  # the key expires with its lock
