"""The findings of a black-box security probe, each replayed against the fixed stack.

1. an idempotent replay must not bypass refresh-token reuse detection, nor keep tokens;
2./4. hostile input is a fast 4xx in the envelope, never a 5xx or a stalled worker;
3. a database error on a row holding a password hash logs no hash, token or password;
5. gunicorn's own refusals answer the envelope (tests/core: /docs renders offline);
6. no-store on authenticated and token-bearing answers, Vary: Origin where echoed;
8. roles come from the database: a re-signed token claiming admin gets nothing more.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid

import jwt
import pytest

from myapp.auth.models import AuthSession
from myapp.core.redis import redis_key
from tests.conftest import (
    bearer,
    idempotency_key,
    login,
    redis_of,
    server_env,
    settings_of,
)
from tests.support.routes import register_test_routes
from tests.support.servers import gunicorn

ORIGIN = "https://app.example.com"


def code_of(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def redis_values(app) -> list[str]:
    client, prefix = redis_of(app), settings_of(app).redis_prefix
    return [
        str(client.get(key))
        for key in client.scan_iter(match=f"{prefix}*")
        if client.type(key) == "string"
    ]


# 1. idempotency and credentials ------------------------------------------------------------


def test_a_replayed_refresh_is_reuse_and_revokes_the_login(app, client, make_user, db_session):
    make_user(email="replay@example.com")
    first = login(client, "replay@example.com")
    key = {"Idempotency-Key": "refresh-once"}
    body = {"refreshToken": first["refreshToken"]}
    rotated = client.post("/v1/auth/refresh", json=body, headers=key)
    assert rotated.status_code == 200 and "Idempotent-Replayed" not in rotated.headers
    again = client.post("/v1/auth/refresh", json=body, headers=key)
    assert code_of(again) == (401, "AUTH_TOKEN_REUSED")
    assert "Idempotent-Replayed" not in again.headers
    new_access = rotated.get_json()["data"]["accessToken"]
    dead = client.get("/v1/users/me", headers={"Authorization": f"Bearer {new_access}"})
    assert code_of(dead) == (401, "AUTH_TOKEN_REVOKED")  # the whole family is revoked
    session_id = jwt.decode(new_access, options={"verify_signature": False})["fam"]
    assert db_session.get(AuthSession, uuid.UUID(session_id)).revoked_at is not None
    stored = "\n".join(redis_values(app))
    assert "eyJ" not in stored
    assert first["refreshToken"] not in stored and new_access not in stored


def test_stored_answers_are_sealed(app, client, make_user, db_session):
    headers = {**bearer(login(client, make_user(roles=("admin",)).email)), **idempotency_key()}
    body = {"email": "sealed.person@example.com", "password": "a-good-password", "name": "Sealed"}
    assert client.post("/v1/users", json=body, headers=headers).status_code == 201
    replay = client.post("/v1/users", json=body, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["data"]["email"] == "sealed.person@example.com"
    with app.app_context():
        records = [v for v in redis_values(app) if '"fp"' in v]
    assert records and all("sealed.person" not in v and '"sealed": "v1.' in v for v in records)


def test_auth_answers_and_authenticated_answers_are_not_cacheable(client, make_user, db_session):
    make_user(email="cache@example.com")
    login_answer = client.post(
        "/v1/auth/login",
        json={"email": "cache@example.com", "password": "correct-horse-battery-staple"},
    )
    assert login_answer.headers["Cache-Control"] == "no-store"
    tokens = login_answer.get_json()["data"]
    assert client.get("/v1/users/me", headers=bearer(tokens)).headers["Cache-Control"] == "no-store"
    refused = client.get("/v1/users/me", headers={"Authorization": "Bearer nope"})
    assert refused.headers["Cache-Control"] == "no-store"
    assert "Cache-Control" not in client.get("/v1/meta/error-codes").headers


@pytest.mark.parametrize("origins", [ORIGIN, f"{ORIGIN},https://other.example.com"])
def test_an_echoed_origin_always_comes_with_vary_origin(make_app, db_session, origins):
    client = make_app(cors_origins=origins).test_client()
    plain = client.get("/v1/meta/error-codes", headers={"Origin": ORIGIN})
    preflight = client.options(
        "/v1/users", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    for response in (plain, preflight):
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Origin" in response.headers.get("Vary", "")


# 2./4. hostile input -----------------------------------------------------------------------

REGISTER = "/v1/auth/register"
LOGIN = "/v1/auth/login"


def post_raw(client, path: str, raw: str | bytes, **kwargs):
    return client.post(path, data=raw, content_type="application/json", **kwargs)


@pytest.mark.parametrize(
    ("path", "raw", "expected"),
    [
        (
            REGISTER,
            '{"email":"a@example.com","password":"a-good-password","name":"a\\u0000b"}',
            422,
        ),
        (REGISTER, '{"email":"a@example.com","password":"a-good-password","name":"\\ud800"}', 422),
        (LOGIN, '{"email":"a@example.com","password":"x\\ud800y"}', 422),
        (LOGIN, '{"email":"a@example.com","password":"x","extra":' + "9" * 5000 + "}", 400),
        (REGISTER, '{"email":"a@example.com","password":"p","name":' + "1" * 5000 + "}", 400),
        (REGISTER, "[" * 10_000 + "]" * 10_000, 400),
        (LOGIN, '{"email":' + "[" * 10_000 + "]" * 10_000 + "}", 400),
        (LOGIN, '{"email":' + "[" * 40 + "1" + "]" * 40 + "}", 400),
        (LOGIN, '{"email":"a@example.com","password":NaN}', 400),
    ],
)
def test_hostile_bodies_are_4xx_in_the_envelope(client, db_session, path, raw, expected):
    response = post_raw(client, path, raw)
    assert response.status_code == expected, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["success"] is False and body["requestId"]
    assert response.headers["X-Request-ID"] == body["requestId"]


def test_a_deep_body_still_spends_the_rate_limit(make_app, db_session):
    client = make_app(ratelimit_default="2/minute").test_client()
    deep = "[" * 10_000 + "]" * 10_000
    statuses = [post_raw(client, LOGIN, deep).status_code for _ in range(3)]
    assert statuses == [400, 400, 429]


@pytest.mark.parametrize(
    "query",
    [
        "q=a%00b",
        "cursor=abc%00",
        "page=9223372036854775808",
        "perPage=1000",
        "sort=-createdAt%00",
    ],
)
def test_hostile_query_strings_are_4xx(client, make_user, db_session, query):
    headers = bearer(login(client, make_user(roles=("admin",)).email))
    response = client.get(f"/v1/users?{query}", headers=headers)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:300]
    assert response.get_json()["success"] is False


def test_a_cursor_smuggling_nul_is_400(client, make_user, db_session):
    headers = bearer(login(client, make_user(roles=("admin",)).email))
    cursor = base64.urlsafe_b64encode(json.dumps(["a\x00", str(uuid.uuid4())]).encode()).decode()
    response = client.get(f"/v1/users?cursor={cursor.rstrip('=')}&sort=email", headers=headers)
    assert code_of(response) == (400, "BAD_REQUEST")


def test_a_huge_body_is_refused_before_it_is_read(client, db_session):
    huge = "{" + ",".join(f'"k{n}":1' for n in range(800_000)) + "}"
    assert len(huge) > 9_000_000
    response = post_raw(client, REGISTER, huge)
    assert code_of(response) == (413, "PAYLOAD_TOO_LARGE")
    assert len(response.get_data()) < 1000


def test_validation_details_are_capped_with_a_count(client, db_session):
    body = {f"unknown{n}": 1 for n in range(3000)} | {"email": "a@example.com", "password": "x"}
    response = client.post(LOGIN, json=body)
    error = response.get_json()["error"]
    assert response.status_code == 422
    assert len(error["details"]) == 50 and "3000 problems" in error["message"]
    assert len(response.get_data()) < 10_000


def sign(app, claims: dict) -> str:
    secret = settings_of(app).jwt_secret_key.get_secret_value()
    return jwt.encode(claims, secret, algorithm="HS256")


def test_malformed_claims_are_401_invalid_never_500(app, client, make_user, db_session):
    user = make_user()
    now = int(time.time())
    base = {
        "sub": str(user.id),
        "type": "access",
        "jti": str(uuid.uuid4()),
        "fam": str(uuid.uuid4()),
        "ver": 0,
        "iat": now,
        "exp": now + 600,
        "roles": [],
    }
    broken = [
        {k: v for k, v in base.items() if k != "jti"},
        {k: v for k, v in base.items() if k != "fam"},
        {**base, "sub": "not-a-uuid"},
        {**base, "fam": "nope"},
        {**base, "ver": "zero"},
        {**base, "type": "refresh"},
    ]
    for claims in broken:
        response = client.get(
            "/v1/users/me", headers={"Authorization": f"Bearer {sign(app, claims)}"}
        )
        assert code_of(response) == (401, "AUTH_TOKEN_INVALID"), claims


# 3. secrets never reach the log ------------------------------------------------------------


def test_a_database_error_on_a_row_with_a_password_hash_logs_none_of_it(make_app, db_session, logs):
    app = make_app()
    register_test_routes(app)
    password = "hunter2-very-secret-password"
    response = app.test_client().post(
        "/_test/db-error",
        json={"password": password},
        headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"},
    )
    assert code_of(response) == (500, "INTERNAL_ERROR")
    text = logs.text
    assert "IntegrityError" in text or "CheckViolation" in text  # the error was logged
    for secret in ("$argon2", "eyJ", password):
        assert secret not in text, secret


# 5. gunicorn's refusals --------------------------------------------------------------------


@pytest.mark.slow
def test_gunicorn_refusals_answer_the_json_envelope(database_url):
    env = server_env(database_url)
    requests = [
        b"GET /v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + b"a" * 9000
        + b"\r\n\r\n",
        b"GET /v1/users/me HTTP/1.1\r\nHost: x\r\nX-Evil: a\x01b\r\n\r\n",
        b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    with gunicorn("wsgi:app", workers=1, env=env) as (_, base):
        port = int(base.rsplit(":", 1)[1])
        for raw in requests:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(raw)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), head
            assert b"X-Request-ID: " in head and b"X-Content-Type-Options: nosniff" in head
            envelope = json.loads(body)
            assert envelope["success"] is False and envelope["error"]["code"] == "BAD_REQUEST"
            assert b"aaaa" not in body  # nothing the client sent is echoed


# 8. roles from the database ----------------------------------------------------------------


def test_a_token_re_signed_with_admin_roles_gets_no_admin_rights(
    app, client, make_user, db_session
):
    make_user(email="mallory@example.com")
    tokens = login(client, "mallory@example.com")
    claims = jwt.decode(tokens["accessToken"], options={"verify_signature": False})
    forged = sign(app, {**claims, "roles": ["admin"]})
    response = client.get("/v1/audit-logs", headers={"Authorization": f"Bearer {forged}"})
    assert code_of(response) == (403, "FORBIDDEN")
    assert client.get("/v1/users/me", headers={"Authorization": f"Bearer {forged}"}).get_json()[
        "data"
    ]["roles"] == ["user"]


def test_the_guards_key_space_holds_no_token(app, client, make_user, db_session):
    make_user(email="keys@example.com")
    tokens = login(client, "keys@example.com")
    client.get("/v1/users/me", headers=bearer(tokens))
    with app.app_context():
        keys = list(redis_of(app).scan_iter(match=redis_key("*")))
    assert keys and not any("eyJ" in key for key in keys)
