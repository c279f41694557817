"""The OpenAPI document validates, declares bearer auth and shows the served envelopes."""

from __future__ import annotations

from openapi_spec_validator import validate

from tests.conftest import PROD_SECRETS


def test_spec_validates_and_declares_bearer_auth(make_app):
    spec = make_app().test_client().get("/openapi.json").get_json()
    validate(spec)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


def test_spec_shows_the_envelopes_as_served(make_app):
    app = make_app()
    spec = app.test_client().get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    op = spec["paths"]["/v1/meta/error-codes"]["get"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    envelope = schemas[ref.rsplit("/", 1)[1]]
    assert set(envelope["properties"]) == {"success", "data"}
    assert envelope["properties"]["data"]["type"] == "array"
    error = schemas["ErrorEnvelope"]
    assert set(error["properties"]) == {"success", "error", "requestId"}
    assert op["responses"]["default"]["$ref"] == "#/components/responses/DEFAULT_ERROR"
    # What the spec says is what a client gets.
    served = app.test_client().get("/v1/meta/error-codes").get_json()
    assert set(served) == {"success", "data"}
    assert set(served["data"][0]) == set(schemas["ErrorCode"]["properties"])


def test_docs_off_in_prod_unless_enabled(make_app):
    prod = make_app(app_env="prod", **PROD_SECRETS).test_client()
    assert prod.get("/docs").status_code == 404
    assert prod.get("/openapi.json").status_code == 404
    enabled = make_app(app_env="prod", api_docs_enabled=True, **PROD_SECRETS).test_client()
    assert enabled.get("/openapi.json").status_code == 200
