"""Security headers, CORS allowlist, metrics allowlist and trusted proxies."""

from __future__ import annotations

import pytest

from tests.conftest import PROD_SECRETS

ROUTES = ["/health/live", "/v1/meta/error-codes", "/v1/nope", "/metrics", "/openapi.json"]


@pytest.mark.parametrize("path", ROUTES)
def test_every_response_carries_security_headers(client, path):
    headers = client.get(path).headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_a_cookie_session_is_written_only_when_used(app):
    client = app.test_client()  # a cookie jar of its own
    untouched = client.get("/v1/meta/error-codes")
    assert "Set-Cookie" not in untouched.headers and "Cookie" not in untouched.vary
    first = client.get("/_test/visits")
    assert first.get_json() == {"visits": 1} and "HttpOnly" in first.headers["Set-Cookie"]
    assert "Cookie" in first.vary
    assert client.get("/_test/visits").get_json() == {"visits": 2}  # signed cookie read back


def test_docs_page_loads_swagger_ui_from_the_app_itself(client):
    response = client.get("/docs")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline';" in csp and "http" not in csp  # no CDN at all
    assert "frame-ancestors 'none'" in csp
    page = response.get_data(as_text=True)
    assert "http" not in page.split("<body>")[0]  # no stylesheet from elsewhere
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        assert f'"/docs/assets/{asset}"' in page
        served = client.get(f"/docs/assets/{asset}")
        assert served.status_code == 200 and len(served.get_data()) > 10_000
    assert client.get("/docs/assets/index.html").status_code == 404  # only what the page needs


def test_hsts_only_in_prod_behind_https(make_app):
    prod = make_app(app_env="prod", **PROD_SECRETS)
    https = {"X-Forwarded-Proto": "https"}
    assert (
        "max-age=31536000"
        in prod.test_client()
        .get("/health/live", headers=https)
        .headers["Strict-Transport-Security"]
    )
    test_app = make_app()
    assert (
        "Strict-Transport-Security"
        not in test_app.test_client().get("/health/live", headers=https).headers
    )


def test_allowed_origin_gets_cors_headers_and_others_do_not(make_app):
    client = make_app(cors_origins="https://app.example").test_client()
    allowed = client.get("/v1/meta/error-codes", headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Request-ID" in allowed.headers["Access-Control-Expose-Headers"]
    other = client.get("/v1/meta/error-codes", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options(
        "/v1/meta/error-codes",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_metrics_from_allowed_address(client):
    client.get("/v1/meta/error-codes")
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert (
        'flask_http_request_duration_seconds_count{method="GET",route="/v1/meta/error-codes"'
        in text
    )


def test_metrics_refused_to_other_addresses_with_envelope(client):
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert response.status_code == 403
    body = response.get_json()
    assert body["error"]["code"] == "FORBIDDEN" and body["requestId"]


def test_forged_forwarded_for_does_not_unlock_metrics(make_app):
    # One trusted proxy: only the address that proxy appended counts, not what the client forged.
    client = make_app(trusted_proxy_hops=1, metrics_allowed_cidrs="10.0.0.0/8").test_client()
    forged = client.get(
        "/metrics",
        headers={"X-Forwarded-For": "10.0.0.5, 203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
    )
    assert forged.status_code == 403
    genuine = client.get(
        "/metrics",
        headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.5"},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
    )
    assert genuine.status_code == 200
    # Without trusted hops the header is ignored entirely.
    direct = make_app(metrics_allowed_cidrs="10.0.0.0/8").test_client()
    assert (
        direct.get(
            "/metrics",
            headers={"X-Forwarded-For": "10.0.0.5"},
            environ_base={"REMOTE_ADDR": "203.0.113.9"},
        ).status_code
        == 403
    )
