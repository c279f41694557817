"""The request pipeline: canonical routes, guards only after a match, CORS, the documented order."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from myapp.core.redis import redis_key
from myapp.factory import request_pipeline
from myapp.users.models import User
from tests.conftest import bearer, idempotency_key, login, redis_of

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "https://app.example.com"
SAMPLE_VALUES = {"uuid": str(uuid.uuid4()), "string": "some.key", "path": "x", "int": "1"}


def concrete(rule: str) -> str:
    """`/v1/users/<uuid:user_id>` -> `/v1/users/<a uuid>`."""
    return re.sub(
        r"<(?:(\w+)(?:\([^)]*\))?:)?\w+>", lambda m: SAMPLE_VALUES[m.group(1) or "string"], rule
    )


def api_routes(app) -> list[tuple[str, str]]:
    """(path, method) of every route under /v1, as a client would call it."""
    return [
        (concrete(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
    ]


def test_every_path_is_written_without_a_trailing_slash(app):
    rules = [rule.rule for rule in app.url_map.iter_rules()]
    assert rules and all(rule == "/" or not rule.endswith("/") for rule in rules)
    assert "/v1/users" in rules and "/v1/audit-logs" in rules and "/v1/feature-flags" in rules


def test_no_near_miss_is_ever_redirected(client, make_user, db_session):
    headers = bearer(login(client, make_user(roles=("admin",)).email))
    for path, method in api_routes(client.application):
        for variant in (path + "/", path.replace("/v1/", "/v1//", 1), path + "//"):
            response = client.open(variant, method=method, headers=headers, json={})
            assert response.status_code == 404, (method, variant, response.status_code)
            assert response.get_json()["error"]["code"] == "NOT_FOUND"
    for path, method in api_routes(client.application):
        status = client.open(path, method=method, headers=headers, json={}).status_code
        assert not 300 <= status < 400, (method, path, status)


def test_post_users_answers_directly_and_its_retry_is_replayed(client, make_user, db_session):
    headers = {**bearer(login(client, make_user(roles=("admin",)).email)), **idempotency_key()}
    body = {"email": "direct@example.com", "password": "a-good-password", "name": "Direct"}
    first = client.post("/v1/users", json=body, headers=headers)
    again = client.post("/v1/users", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    created = select(func.count()).select_from(User).where(User.email == "direct@example.com")
    assert db_session.execute(created).scalar_one() == 1


def test_audit_logs_answer_directly(client, make_user, db_session):
    response = client.get(
        "/v1/audit-logs", headers=bearer(login(client, make_user(roles=("admin",)).email))
    )
    assert response.status_code == 200
    assert response.get_json()["meta"]["page"] == 1


def test_guards_run_only_once_a_route_matched(app, client, db_session):
    headers = {"Authorization": "Bearer forged", "Idempotency-Key": "k-unmatched"}
    unknown = client.post("/v1/nowhere", json={}, headers=headers)
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "NOT_FOUND"
    wrong_method = client.delete("/v1/meta/error-codes", headers=headers)
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "X-RateLimit-Limit" not in unknown.headers  # no budget was spent
    with app.app_context():
        assert not redis_of(app).keys(redis_key("idem", "*"))
        assert not redis_of(app).keys(redis_key("ratelimit", "*"))


@pytest.fixture
def cors_app(make_app):
    return make_app(cors_origins=ORIGIN)


def test_a_cors_preflight_to_each_v1_route_answers_2xx_for_the_allowed_origin(cors_app, db_session):
    client = cors_app.test_client()
    routes = api_routes(cors_app)
    assert len(routes) >= 15
    for path, method in routes:
        response = client.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
        assert 200 <= response.status_code < 300, (method, path, response.status_code)
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN, (method, path)
        assert method in response.headers["Access-Control-Allow-Methods"], (method, path)
    other = client.options(
        "/v1/users",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "Access-Control-Allow-Origin" not in other.headers


def documented_steps() -> list[str]:
    """The step names in the request-flow list of docs/architecture.md, in order."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## A request, end to end", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`(\w+(?:\.\w+)*)\(\)`", section)


def test_the_architecture_doc_lists_the_steps_in_the_order_they_run():
    pipeline = request_pipeline()
    running = [
        f"{step.__module__.removeprefix('myapp.')}.{step.__qualname__.split('.')[0]}"
        for step in (*pipeline.steps, *pipeline.finishers)
    ]
    assert documented_steps() == running


def test_plain_hooks_and_views_are_served_as_they_are_and_coroutines_are_not(app):
    """The app answers Flask's `ensure_sync` from code flags for plain functions and
    methods; a coroutine function still goes Flask's way (which needs the async extra)."""

    def plain() -> None: ...

    async def coroutine() -> None: ...

    class View:
        def get(self) -> None: ...

    assert app.ensure_sync(plain) is plain
    bound = View().get
    assert app.ensure_sync(bound) is bound
    with pytest.raises(RuntimeError, match="async"):
        app.ensure_sync(coroutine)


def test_rest_requests_bypass_the_socket_middleware_and_sockets_still_reach_it(client):
    """Only `/socket.io/` goes through the Socket.IO middleware (an Engine.IO handshake
    answers there); every other path is the app's."""
    handshake = client.get("/socket.io/?EIO=4&transport=polling")
    assert handshake.status_code == 200 and handshake.get_data(as_text=True).startswith("0{")
    assert client.get("/socket.io-nope").status_code == 404
    assert client.get("/health/live").status_code == 200
