"""Every error path answers the envelope of docs/api.md: right code, status and request id."""

from __future__ import annotations

import pytest

from myapp.core.errors import CATALOG


def assert_envelope(response, status: int, code: str) -> dict:
    body = response.get_json()
    assert response.status_code == status
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["requestId"] == response.headers["X-Request-ID"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    assert "/work/" not in text and "site-packages" not in text
    return body


def test_unknown_route_is_enveloped_404(client):
    assert_envelope(client.get("/v1/does-not-exist"), 404, "NOT_FOUND")


def test_wrong_method_is_405_with_allow_header(client):
    response = client.delete("/health/live")
    assert_envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers["Allow"]


def test_malformed_json_is_400(client):
    response = client.post(
        "/_test/echo", data="{not json", headers={"Content-Type": "application/json"}
    )
    body = assert_envelope(response, 400, "BAD_REQUEST")
    assert "JSON" in body["error"]["message"]


def test_schema_errors_are_422_with_field_details(client):
    response = client.post("/_test/echo", json={"email": "nope", "displayName": "", "extra": 1})
    body = assert_envelope(response, 422, "VALIDATION_FAILED")
    fields = {detail["field"]: detail["message"] for detail in body["error"]["details"]}
    assert fields == {
        "email": "Not a valid email address.",
        "displayName": "Length must be between 1 and 20.",
        "extra": "Unknown field.",
    }


def test_query_validation_is_422(client):
    body = assert_envelope(client.get("/_test/cursor?limit=500"), 422, "VALIDATION_FAILED")
    assert body["error"]["details"][0]["field"] == "limit"


def test_valid_body_gets_success_envelope_in_camel_case(client):
    response = client.post("/_test/echo", json={"email": "a@example.com", "displayName": "A"})
    assert response.status_code == 201
    assert response.get_json() == {
        "success": True,
        "data": {"email": "a@example.com", "displayName": "A"},
    }


def test_oversize_body_is_413(make_app):
    app = make_app(max_content_length=1024)
    from tests.support.routes import register_test_routes

    register_test_routes(app)
    response = app.test_client().post("/_test/echo", json={"email": "x" * 5000})
    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")


def test_unsupported_media_type_is_415(client):
    response = client.post("/_test/echo", data="email=a", headers={"Content-Type": "text/plain"})
    assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_unhandled_exception_is_500_and_logged_once_with_traceback(client, logs):
    response = client.get("/_test/boom", headers={"X-Request-ID": "boom-req-1"})
    body = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "kaboom" not in response.get_data(as_text=True)
    assert body["requestId"] == "boom-req-1"

    with_traceback = [r for r in logs.records() if "RuntimeError: kaboom" in r.get("exception", "")]
    assert len(with_traceback) == 1
    record = with_traceback[0]
    assert record["request_id"] == "boom-req-1"
    assert "Traceback (most recent call last)" in record["exception"]
    assert "hunter2" not in logs.text


def test_database_down_is_503_service_unavailable(make_app):
    app = make_app(database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    from tests.support.routes import register_test_routes

    register_test_routes(app)
    response = app.test_client().get("/_test/sql")
    body = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert "127.0.0.1" not in body["error"]["message"]


def test_error_code_catalog_is_served(client):
    response = client.get("/v1/meta/error-codes")
    assert response.status_code == 200
    served = {item["code"]: item["status"] for item in response.get_json()["data"]}
    assert served == {code: entry.status for code, entry in CATALOG.items()}
    assert served["RATE_LIMITED"] == 429 and served["IDEMPOTENCY_KEY_MISMATCH"] == 422


@pytest.mark.parametrize("code", sorted(CATALOG))
def test_every_catalog_code_renders_its_status(app, code):
    from myapp.core.errors import AppError, error_response

    with app.test_request_context("/"):
        response = error_response(AppError(code))
    assert response.status_code == CATALOG[code].status
    assert response.get_json()["error"]["code"] == code


def test_the_api_guide_documents_every_code_with_its_status():
    from pathlib import Path

    from myapp.core.errors import CATALOG

    guide = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for entry in CATALOG.values():
        assert f"| `{entry.code}` | {entry.status} |" in guide, entry.code
