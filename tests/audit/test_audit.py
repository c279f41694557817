"""Audit rows: exactly one per change, in the same transaction, without secrets."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from myapp.audit.models import AuditLog
from myapp.core.db import unit_of_work
from myapp.users import service as users_service
from tests.conftest import bearer, idempotency_key, login


def rows(db_session, **where) -> list[AuditLog]:
    statement = select(AuditLog)
    for column, value in where.items():
        statement = statement.where(getattr(AuditLog, column) == value)
    return list(db_session.execute(statement).scalars())


def test_each_users_change_leaves_exactly_one_row_with_its_context(client, make_user, db_session):
    admin = make_user(roles=("admin",))
    headers = {**bearer(login(client, admin.email)), "User-Agent": "audit-test/1.0"}
    created = client.post(
        "/v1/users",
        json={
            "email": "a1@example.com",
            "password": "s3cret-password",
            "name": "A",
            "phone": "+15551230000",
        },
        headers={**headers, **idempotency_key(), "X-Request-ID": "audit-create-1"},
    )
    user_id = created.get_json()["data"]["id"]
    steps = [
        ("UPDATE", "PATCH", f"/v1/users/{user_id}", {"name": "B"}),
        ("ROLE_CHANGE", "PUT", f"/v1/users/{user_id}/roles", {"roles": ["manager"]}),
        ("DELETE", "DELETE", f"/v1/users/{user_id}", None),
        ("RESTORE", "POST", f"/v1/users/{user_id}/restore", None),
    ]
    for _, method, path, body in steps:
        assert client.open(path, method=method, json=body, headers=headers).status_code < 300

    for action in ["CREATE", *[step[0] for step in steps]]:
        (row,) = rows(db_session, action=action, target_id=user_id)
        assert row.actor_id == admin.id and row.actor_type == "user"
        assert row.target_type == "user"
        assert row.ip == "127.0.0.1" and row.user_agent == "audit-test/1.0"
        assert row.request_id and row.created_at
    (create,) = rows(db_session, action="CREATE", target_id=user_id)
    assert create.request_id == "audit-create-1"
    assert create.after["email"] == "a1@example.com" and create.after["phone"] == "***0000"
    (update,) = rows(db_session, action="UPDATE", target_id=user_id)
    assert (update.before["name"], update.after["name"]) == ("A", "B")
    (roles,) = rows(db_session, action="ROLE_CHANGE", target_id=user_id)
    assert (roles.before, roles.after) == ({"roles": ["user"]}, {"roles": ["manager"]})


def test_no_secret_ever_reaches_before_or_after(client, make_user, db_session):
    admin = make_user(roles=("admin",))
    tokens = login(client, admin.email)
    client.post(
        "/v1/users",
        json={"email": "s@example.com", "password": "a-password-123", "name": "S"},
        headers={**bearer(tokens), **idempotency_key()},
    )
    client.post("/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    client.post("/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]})  # reuse
    everything = rows(db_session)
    assert {r.action for r in everything} >= {"LOGIN", "CREATE", "TOKEN_REFRESH", "TOKEN_REUSE"}
    blob = json.dumps([[r.before, r.after] for r in everything]).lower()
    for forbidden in ("password", "passwordhash", "password_hash", "token", "argon2", "a-password"):
        assert forbidden not in blob


def test_a_change_that_rolls_back_leaves_no_audit_row(app, db_session):
    before = len(rows(db_session))
    with pytest.raises(RuntimeError), unit_of_work():
        users_service.create_user(email="ghost@example.com", password="pw-123456", name="G")
        raise RuntimeError("the use case fails after the change was audited")
    assert len(rows(db_session)) == before
    assert users_service.find_for_login(email="ghost@example.com") is None


def test_audit_log_api_filters(client, make_user):
    admin = make_user(roles=("admin",))
    headers = bearer(login(client, admin.email))
    target = make_user()
    client.patch(f"/v1/users/{target.id}", json={"name": "X"}, headers=headers)
    body = client.get(
        f"/v1/audit-logs?action=UPDATE&targetId={target.id}", headers=headers
    ).get_json()
    assert body["meta"]["total"] == 1
    entry = body["data"][0]
    assert entry["action"] == "UPDATE" and entry["actorId"] == str(admin.id)
    logins = client.get(f"/v1/audit-logs?actorId={admin.id}&action=LOGIN", headers=headers)
    assert logins.get_json()["meta"]["total"] == 1
    naive = client.get("/v1/audit-logs?from=2026-01-01T00:00:00", headers=headers)
    assert naive.status_code == 422  # timestamps must carry a timezone
