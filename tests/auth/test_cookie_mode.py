"""AUTH_REFRESH_COOKIE=true: refresh token in an HttpOnly cookie, double-submit CSRF."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, bearer, login

HTTPS = "https://localhost"  # the cookies are Secure


@pytest.fixture
def cookie_client(make_app):
    return make_app(auth_refresh_cookie=True).test_client()


def cookie_login(client, email):
    response = client.post(
        "/v1/auth/login", json={"email": email, "password": PASSWORD}, base_url=HTTPS
    )
    assert response.status_code == 200
    return response


def test_login_sets_httponly_secure_samesite_cookies(cookie_client, make_user):
    response = cookie_login(cookie_client, make_user().email)
    data = response.get_json()["data"]
    assert data["refreshToken"] is None and data["accessToken"]
    cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
    refresh, csrf = cookies["refresh_token"], cookies["csrf_token"]
    for attribute in ("Secure", "SameSite=Strict", "Path=/v1/auth"):
        assert attribute in refresh and attribute in csrf
    assert "HttpOnly" in refresh and "HttpOnly" not in csrf


def test_refresh_needs_the_csrf_token(cookie_client, make_user):
    cookie_login(cookie_client, make_user().email)
    without = cookie_client.post("/v1/auth/refresh", json={}, base_url=HTTPS)
    assert without.status_code == 403 and without.get_json()["error"]["code"] == "FORBIDDEN"
    wrong = cookie_client.post(
        "/v1/auth/refresh", json={}, base_url=HTTPS, headers={"X-CSRF-Token": "guess"}
    )
    assert wrong.status_code == 403
    csrf = cookie_client.get_cookie("csrf_token", domain="localhost", path="/v1/auth").value
    ok = cookie_client.post(
        "/v1/auth/refresh", json={}, base_url=HTTPS, headers={"X-CSRF-Token": csrf}
    )
    assert ok.status_code == 200 and ok.get_json()["data"]["accessToken"]
    new_csrf = cookie_client.get_cookie("csrf_token", domain="localhost", path="/v1/auth").value
    assert new_csrf != csrf  # rotated with the refresh token


def test_logout_needs_the_csrf_token_and_clears_the_cookies(cookie_client, make_user):
    access = cookie_login(cookie_client, make_user().email).get_json()["data"]
    headers = {"Authorization": f"Bearer {access['accessToken']}"}
    refused = cookie_client.post("/v1/auth/logout", headers=headers, base_url=HTTPS)
    assert refused.status_code == 403
    csrf = cookie_client.get_cookie("csrf_token", domain="localhost", path="/v1/auth").value
    done = cookie_client.post(
        "/v1/auth/logout", headers={**headers, "X-CSRF-Token": csrf}, base_url=HTTPS
    )
    assert done.status_code == 204
    assert cookie_client.get_cookie("refresh_token", domain="localhost", path="/v1/auth") is None


def test_bearer_mode_is_unaffected(client, make_user):
    tokens = login(client, make_user().email)
    assert tokens["refreshToken"]
    refreshed = client.post("/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refreshed.status_code == 200 and "Set-Cookie" not in refreshed.headers
    assert (
        client.post("/v1/auth/logout", headers=bearer(refreshed.get_json()["data"])).status_code
        == 204
    )
    missing = client.post("/v1/auth/refresh", json={})
    assert missing.status_code == 422
