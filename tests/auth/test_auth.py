"""Login, refresh rotation and reuse, logout, revocation, token validation, login limits."""

from __future__ import annotations

import base64
import gc
import json
import statistics
import sys
import time
from datetime import timedelta

import pytest
from flask_jwt_extended import create_access_token
from sqlalchemy import func, or_, select

from myapp.audit.models import AuditLog
from myapp.auth.models import RefreshToken
from myapp.users.models import Role, User
from tests.conftest import PASSWORD, bearer, login


def audit_rows(db_session, action: str, user_id=None) -> list[AuditLog]:
    """Rows of `action` (about or by `user_id` when given: other tests commit theirs)."""
    statement = select(AuditLog).where(AuditLog.action == action)
    if user_id is not None:
        statement = statement.where(
            or_(AuditLog.actor_id == user_id, AuditLog.target_id == str(user_id))
        )
    return list(db_session.execute(statement).scalars())


def me(client, tokens) -> tuple[int, dict]:
    response = client.get("/v1/users/me", headers=bearer(tokens))
    return response.status_code, response.get_json()


# 1. seed -----------------------------------------------------------------------------------


def test_seed_twice_leaves_the_same_rows_and_the_admin_logs_in(make_app, db_session):
    app = make_app(admin_email="Root@Example.com", admin_password="an-admin-password-123")
    runner = app.test_cli_runner()

    def counts():
        return (
            db_session.execute(select(func.count()).select_from(User)).scalar_one(),
            db_session.execute(select(func.count()).select_from(Role)).scalar_one(),
        )

    with app.app_context():  # the CLI would otherwise reuse the session app's context
        assert runner.invoke(args=["seed"]).exit_code == 0
        after_first = counts()
        assert runner.invoke(args=["seed"]).exit_code == 0
        assert counts() == after_first
    admin = db_session.execute(select(User).where(User.email == "root@example.com")).scalar_one()
    assert admin.role_names == ["admin"]

    client = app.test_client()
    tokens = login(client, "root@example.com", "an-admin-password-123")
    status, body = me(client, tokens)
    assert status == 200 and body["data"]["roles"] == ["admin"]


# 2. login, refresh rotation, reuse ---------------------------------------------------------


def test_login_then_me(client, make_user):
    user = make_user(email="ann@example.com")
    tokens = login(client, "ANN@example.com")
    assert tokens["tokenType"] == "Bearer" and tokens["expiresIn"] == 900
    status, body = me(client, tokens)
    assert status == 200
    assert body["data"]["id"] == str(user.id) and body["data"]["email"] == "ann@example.com"


def test_refresh_rotates_and_reuse_revokes_the_family(client, make_user, db_session):
    make_user(email="rot@example.com")
    first = login(client, "rot@example.com")

    second = client.post("/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert second.status_code == 200
    second = second.get_json()["data"]
    assert second["refreshToken"] != first["refreshToken"]
    assert me(client, second)[0] == 200

    reused = client.post("/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert reused.status_code == 401
    assert reused.get_json()["error"]["code"] == "AUTH_TOKEN_REUSED"

    newest = client.post("/v1/auth/refresh", json={"refreshToken": second["refreshToken"]})
    assert newest.status_code == 401
    assert newest.get_json()["error"]["code"] == "AUTH_TOKEN_REVOKED"
    status, body = me(client, second)  # the access token of that login is dead too
    assert (status, body["error"]["code"]) == (401, "AUTH_TOKEN_REVOKED")

    (reuse,) = audit_rows(db_session, "TOKEN_REUSE")
    assert reuse.target_type == "auth_session"
    rows = db_session.execute(select(RefreshToken)).scalars().all()
    assert rows and all(row.revoked_at is not None for row in rows)


# 3. logout, password change, role change ---------------------------------------------------


def test_logout_refuses_the_same_access_token_at_once(client, make_user):
    make_user(email="out@example.com")
    tokens = login(client, "out@example.com")
    assert client.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
    status, body = me(client, tokens)
    assert (status, body["error"]["code"]) == (401, "AUTH_TOKEN_REVOKED")
    refresh = client.post("/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refresh.status_code == 401


def test_password_change_invalidates_earlier_tokens(client, make_user):
    make_user(email="pw@example.com")
    old = login(client, "pw@example.com")
    other_login = login(client, "pw@example.com")
    response = client.post(
        "/v1/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "a-brand-new-password"},
        headers=bearer(old),
    )
    assert response.status_code == 204
    for tokens in (old, other_login):
        status, body = me(client, tokens)
        assert (status, body["error"]["code"]) == (401, "AUTH_TOKEN_REVOKED")
    assert me(client, login(client, "pw@example.com", "a-brand-new-password"))[0] == 200


def test_role_change_invalidates_earlier_tokens(client, make_user):
    make_user(email="boss@example.com", roles=("admin",))
    target = make_user(email="promoted@example.com")
    admin_tokens = login(client, "boss@example.com")
    before = login(client, "promoted@example.com")
    response = client.put(
        f"/v1/users/{target.id}/roles", json={"roles": ["manager"]}, headers=bearer(admin_tokens)
    )
    assert response.status_code == 200 and response.get_json()["data"] == {"roles": ["manager"]}
    status, body = me(client, before)
    assert (status, body["error"]["code"]) == (401, "AUTH_TOKEN_REVOKED")
    after = login(client, "promoted@example.com")
    assert me(client, after)[1]["data"]["roles"] == ["manager"]


def test_sessions_are_listed_and_can_be_ended(client, make_user):
    make_user(email="sess@example.com")
    phone = login(client, "sess@example.com")
    laptop = login(client, "sess@example.com")
    listed = client.get("/v1/auth/sessions", headers=bearer(laptop)).get_json()["data"]
    assert len(listed) == 2
    current = [s for s in listed if s["current"]]
    other = [s for s in listed if not s["current"]]
    assert len(current) == 1 and current[0]["ip"] == "127.0.0.1"
    ended = client.delete(f"/v1/auth/sessions/{other[0]['id']}", headers=bearer(laptop))
    assert ended.status_code == 204
    assert me(client, phone)[0] == 401
    assert me(client, laptop)[0] == 200


# 4. malformed tokens -----------------------------------------------------------------------


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def forge(tokens: dict, header: dict | None = None, payload_change: dict | None = None) -> str:
    head, payload, signature = tokens["accessToken"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims.update(payload_change or {})
    return ".".join([b64(header) if header else head, b64(claims), "" if header else signature])


def code_for(client, token: str) -> tuple[int, str]:
    response = client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.get_json()["error"]["code"]


def test_bad_tokens_get_the_matching_code(app, client, make_user):
    user = make_user(email="tok@example.com")
    tokens = login(client, "tok@example.com")
    assert code_for(client, forge(tokens, header={"alg": "none", "typ": "JWT"})) == (
        401,
        "AUTH_TOKEN_INVALID",
    )
    assert code_for(client, forge(tokens, payload_change={"roles": ["admin"]})) == (
        401,
        "AUTH_TOKEN_INVALID",
    )
    assert code_for(client, tokens["refreshToken"]) == (401, "AUTH_TOKEN_INVALID")
    with app.test_request_context():
        expired = create_access_token(
            identity=str(user.id),
            additional_claims={"roles": [], "ver": 0, "fam": "x"},
            expires_delta=timedelta(seconds=-5),
        )
    assert code_for(client, expired) == (401, "AUTH_TOKEN_EXPIRED")
    assert code_for(client, "not-a-jwt") == (401, "AUTH_TOKEN_INVALID")
    missing = client.get("/v1/users/me")
    assert (missing.status_code, missing.get_json()["error"]["code"]) == (401, "AUTH_REQUIRED")


def test_expired_refresh_token(app, client, make_user):
    from flask_jwt_extended import create_refresh_token

    user = make_user(email="exp@example.com")
    with app.test_request_context():
        token = create_refresh_token(identity=str(user.id), expires_delta=timedelta(seconds=-1))
    response = client.post("/v1/auth/refresh", json={"refreshToken": token})
    assert (response.status_code, response.get_json()["error"]["code"]) == (
        401,
        "AUTH_TOKEN_EXPIRED",
    )


# 5. credentials: same answer, same time; per-account limit ---------------------------------


def test_unknown_email_and_wrong_password_answer_identically(client, make_user):
    make_user(email="known@example.com")
    unknown = client.post(
        "/v1/auth/login", json={"email": "nobody@example.com", "password": "x" * 9}
    )
    wrong = client.post("/v1/auth/login", json={"email": "known@example.com", "password": "x" * 9})
    assert unknown.status_code == wrong.status_code == 401

    def without_id(response):
        body = response.get_json()
        body.pop("requestId")
        return body

    assert without_id(unknown) == without_id(wrong)
    assert without_id(wrong)["error"]["code"] == "AUTH_INVALID_CREDENTIALS"


@pytest.mark.slow
def test_unknown_email_and_wrong_password_take_about_the_same_time(make_app, make_user, db_session):
    app = make_app(ratelimit_login_per_ip="1000/minute", ratelimit_login_per_account="1000/minute")
    client = app.test_client()
    make_user(email="timing@example.com")
    attempts = {"unknown": [], "wrong": []}
    bodies = {
        "unknown": {"email": "ghost@example.com", "password": "wrong-password"},
        "wrong": {"email": "timing@example.com", "password": "wrong-password"},
    }
    client.post("/v1/auth/login", json=bodies["unknown"])  # warm up both paths
    client.post("/v1/auth/login", json=bodies["wrong"])
    gc.collect()
    gc.disable()  # a collector pause lands on one side at random and skews its mean
    try:
        measure(client, bodies, attempts)
    finally:
        gc.enable()
    unknown, wrong = statistics.mean(attempts["unknown"]), statistics.mean(attempts["wrong"])
    sys.stderr.write(f"login means: unknown {unknown * 1000:.1f} ms, wrong {wrong * 1000:.1f} ms\n")
    assert abs(unknown - wrong) / max(unknown, wrong) < 0.25, (unknown, wrong)


def measure(client, bodies, attempts) -> None:
    for _ in range(20):
        for kind in ("unknown", "wrong"):  # interleaved: noise hits both alike
            started = time.perf_counter()
            assert client.post("/v1/auth/login", json=bodies[kind]).status_code == 401
            attempts[kind].append(time.perf_counter() - started)


def test_sixth_failed_login_for_an_account_is_rate_limited(client, make_user):
    make_user(email="locked@example.com")
    body = {"email": "locked@example.com", "password": "wrong-password"}
    codes = [client.post("/v1/auth/login", json=body).status_code for _ in range(5)]
    assert codes == [401] * 5
    limited = client.post("/v1/auth/login", json=body)
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "RATE_LIMITED"
    assert int(limited.headers["Retry-After"]) > 0
    assert "X-RateLimit-Limit" in limited.headers
    # Another account from the same address still has its own budget.
    make_user(email="fine@example.com")
    assert (
        client.post("/v1/auth/login", json={**body, "email": "fine@example.com"}).status_code == 401
    )


def test_successful_logins_do_not_spend_the_account_budget(client, make_user):
    make_user(email="busy@example.com")
    for _ in range(6):
        login(client, "busy@example.com")


def test_failed_logins_are_counted_by_reason_and_answered_alike(client, make_user):
    make_user(email="counted@example.com")
    make_user(email="away@example.com", status="suspended")
    tries = {
        "unknown_user": ("nobody-here@example.com", PASSWORD),
        "wrong_password": ("counted@example.com", "not-the-password"),
        "inactive": ("away@example.com", PASSWORD),
    }
    before = login_failures(client)
    answers = {
        reason: client.post("/v1/auth/login", json={"email": email, "password": password})
        for reason, (email, password) in tries.items()
    }
    after = login_failures(client)
    assert {
        reason: after.get(reason, 0) - before.get(reason, 0) for reason in tries
    } == dict.fromkeys(tries, 1)
    bodies = {reason: (a.status_code, a.get_json()["error"]) for reason, a in answers.items()}
    assert len(set(map(json.dumps, bodies.values()))) == 1  # the client cannot tell them apart
    login(client, "counted@example.com")
    assert login_failures(client) == after


def login_failures(client) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    prefix = 'auth_login_failures_total{reason="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def test_login_audit_rows(client, make_user, db_session):
    user = make_user(email="aud@example.com")
    client.post("/v1/auth/login", json={"email": "aud@example.com", "password": "wrong-password"})
    tokens = login(client, "aud@example.com")
    client.post("/v1/auth/logout", headers=bearer(tokens))
    (failed,) = audit_rows(db_session, "LOGIN_FAILED", user.id)
    (ok,) = audit_rows(db_session, "LOGIN", user.id)
    (out,) = audit_rows(db_session, "LOGOUT", user.id)
    assert failed.target_id == str(user.id) and failed.actor_type == "anonymous"
    assert ok.actor_id == user.id and ok.ip == "127.0.0.1" and ok.request_id
    assert out.actor_id == user.id and out.target_type == "auth_session"
