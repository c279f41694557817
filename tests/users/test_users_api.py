"""Users API: permission matrix, paging (with a query count), soft delete and restore."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, event

from tests.conftest import bearer, idempotency_key, login

NEW_USER = {"email": "new@example.com", "password": "a-good-password", "name": "New"}

# (method, path template, body) -> expected status for user, manager, admin.
# {self}: the caller; {other}: a plain user; {admin}: another admin; {gone}: soft-deleted.
MATRIX = [
    ("GET", "/v1/users/me", None, (200, 200, 200)),
    ("PATCH", "/v1/users/me", {"name": "Me Again"}, (200, 200, 200)),
    ("GET", "/v1/users", None, (403, 200, 200)),
    ("POST", "/v1/users", NEW_USER, (403, 201, 201)),
    ("GET", "/v1/users/{self}", None, (200, 200, 200)),
    ("GET", "/v1/users/{other}", None, (404, 200, 200)),
    ("GET", "/v1/users/{gone}", None, (404, 404, 200)),
    ("PATCH", "/v1/users/{self}", {"name": "Renamed"}, (200, 200, 200)),
    ("PATCH", "/v1/users/{self}", {"email": "x@example.com"}, (403, 200, 200)),
    ("PATCH", "/v1/users/{other}", {"name": "Renamed"}, (404, 200, 200)),
    ("PATCH", "/v1/users/{other}", {"status": "suspended"}, (404, 200, 200)),
    ("PATCH", "/v1/users/{admin}", {"name": "Renamed"}, (404, 403, 200)),
    ("DELETE", "/v1/users/{other}", None, (403, 403, 204)),
    ("POST", "/v1/users/{gone}/restore", None, (403, 403, 200)),
    ("PUT", "/v1/users/{other}/roles", {"roles": ["manager"]}, (403, 403, 200)),
    ("GET", "/v1/audit-logs", None, (403, 200, 200)),
]
ROLES = ("user", "manager", "admin")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "template", "body", "expected"), MATRIX)
def test_permission_matrix(client, make_user, role, method, template, body, expected):
    caller = make_user(roles=(role,))
    other = make_user()
    admin = make_user(roles=("admin",))
    gone = make_user()
    gone.soft_delete()
    tokens = login(client, caller.email)
    path = template.format(self=caller.id, other=other.id, admin=admin.id, gone=gone.id)
    headers = {**bearer(tokens), **idempotency_key()}
    response = client.open(path, method=method, json=body, headers=headers)
    assert response.status_code == expected[ROLES.index(role)], response.get_json()
    if response.status_code >= 400:
        assert response.get_json()["error"]["code"] in {"FORBIDDEN", "NOT_FOUND"}


def test_offset_paging_meta(client, make_user):
    admin = make_user(roles=("admin",))
    for _ in range(44):
        make_user()
    tokens = login(client, admin.email)
    body = client.get("/v1/users?page=3&perPage=20", headers=bearer(tokens)).get_json()
    assert body["meta"] == {"page": 3, "perPage": 20, "total": 45, "totalPages": 3}
    assert len(body["data"]) == 5
    too_big = client.get("/v1/users?perPage=101", headers=bearer(tokens))
    assert too_big.status_code == 422


def test_unknown_sort_is_422(client, make_user):
    tokens = login(client, make_user(roles=("admin",)).email)
    response = client.get("/v1/users?sort=passwordHash", headers=bearer(tokens))
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "sort"


def test_cursor_paging_returns_every_row_once_while_rows_are_inserted(client, make_user):
    admin = make_user(roles=("admin",))
    existing = {str(admin.id)} | {str(make_user().id) for _ in range(24)}
    tokens = login(client, admin.email)
    seen: list[str] = []
    url = "/v1/users?limit=7&sort=createdAt"
    for _ in range(20):
        body = client.get(url, headers=bearer(tokens)).get_json()
        seen.extend(user["id"] for user in body["data"])
        make_user()  # a row arrives between two page requests
        if not body["meta"]["hasMore"]:
            break
        url = f"/v1/users?limit=7&sort=createdAt&cursor={body['meta']['nextCursor']}"
    assert len(seen) == len(set(seen))
    assert existing <= set(seen)


def count_queries(client, db_session, url, headers) -> int:
    """Statements one request runs through SQLAlchemy, from an empty session as in
    production."""
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        if not statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):  # test harness only
            statements.append(statement)

    db_session.commit()
    db_session.expire_all()
    event.listen(Engine, "before_cursor_execute", record)
    try:
        assert client.get(url, headers=headers).status_code == 200
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    return len(statements)


def test_listing_20_or_100_users_with_roles_takes_the_same_few_queries(
    client, make_user, db_session
):
    admin = make_user(roles=("admin",))
    for n in range(110):
        make_user(roles=("manager",) if n % 3 else ("user",))
    headers = bearer(login(client, admin.email))
    small = count_queries(client, db_session, "/v1/users?perPage=20", headers)
    large = count_queries(client, db_session, "/v1/users?perPage=100", headers)
    # Count, page, roles of the page. (The caller's statement goes past SQLAlchemy, so
    # these events do not see it; tests/core/test_hot_path.py counts it on the wire.)
    assert small == large == 3


def test_filters(client, make_user):
    admin = make_user(roles=("admin",), name="Alice Admin")
    make_user(roles=("manager",), name="Bob Boss", email="bob@corp.example")
    make_user(name="Carol 100%", status="suspended")
    headers = bearer(login(client, admin.email))

    def emails(query):
        body = client.get(f"/v1/users?{query}", headers=headers).get_json()
        return sorted(u["email"] for u in body["data"])

    assert emails("role=manager") == ["bob@corp.example"]
    assert len(emails("status=suspended")) == 1
    assert emails("q=CORP") == ["bob@corp.example"]
    assert len(emails("q=100%25")) == 1  # % is a literal, not a wildcard
    assert emails("q=zzz") == []


def test_soft_deleted_user_cannot_log_in_and_is_hidden_until_restored(client, make_user):
    admin = make_user(roles=("admin",))
    victim = make_user(email="victim@example.com")
    victim_tokens = login(client, "victim@example.com")
    headers = bearer(login(client, admin.email))

    assert client.delete(f"/v1/users/{victim.id}", headers=headers).status_code == 204
    assert client.get("/v1/users/me", headers=bearer(victim_tokens)).status_code == 401
    failed = client.post(
        "/v1/auth/login", json={"email": "victim@example.com", "password": "whatever-123"}
    )
    assert failed.get_json()["error"]["code"] == "AUTH_INVALID_CREDENTIALS"

    def listed(query=""):
        body = client.get(f"/v1/users?perPage=100{query}", headers=headers).get_json()
        return {u["id"]: u for u in body["data"]}

    assert str(victim.id) not in listed()
    shown = listed("&includeDeleted=true")[str(victim.id)]
    assert shown["deletedAt"] is not None

    restored = client.post(f"/v1/users/{victim.id}/restore", headers=headers)
    assert restored.status_code == 200 and restored.get_json()["data"]["deletedAt"] is None
    assert str(victim.id) in listed()
    login(client, "victim@example.com")


def test_include_deleted_is_refused_to_non_admins(client, make_user):
    headers = bearer(login(client, make_user(roles=("manager",)).email))
    response = client.get("/v1/users?includeDeleted=true", headers=headers)
    assert response.status_code == 403


def test_duplicate_email_is_conflict_case_insensitively(client, make_user):
    make_user(email="dup@example.com")
    headers = bearer(login(client, make_user(roles=("admin",)).email))
    response = client.post(
        "/v1/users",
        json={**NEW_USER, "email": "DUP@example.com"},
        headers={**headers, **idempotency_key()},
    )
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "CONFLICT"


def test_register_creates_a_plain_user(client):
    response = client.post(
        "/v1/auth/register",
        json={"email": "Self@Example.com", "password": "long-enough-pw", "name": "Self"},
    )
    assert response.status_code == 201
    data = response.get_json()["data"]
    assert (data["email"], data["roles"]) == ("self@example.com", ["user"])
    short = client.post(
        "/v1/auth/register", json={"email": "s2@example.com", "password": "short", "name": "S"}
    )
    assert short.status_code == 422
