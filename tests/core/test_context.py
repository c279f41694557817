"""The request id: echoed or replaced, and carried by every log line and SQL statement."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine, event

ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_valid_request_id_is_echoed(client):
    response = client.get("/health/live", headers={"X-Request-ID": "abc.DEF_123-x"})
    assert response.headers["X-Request-ID"] == "abc.DEF_123-x"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "a*/b", ""])
def test_invalid_request_id_is_replaced(client, bad):
    response = client.get("/health/live", headers={"X-Request-ID": bad})
    assert ULID_RE.match(response.headers["X-Request-ID"])


def test_missing_request_id_is_generated_per_request(client):
    first = client.get("/health/live").headers["X-Request-ID"]
    second = client.get("/health/live").headers["X-Request-ID"]
    assert ULID_RE.match(first) and ULID_RE.match(second) and first != second


def test_every_log_line_and_sql_statement_of_a_request_carries_its_id(client, logs):
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(Engine, "after_cursor_execute", record)
    try:
        response = client.get("/_test/sql", headers={"X-Request-ID": "req-sql-42"})
    finally:
        event.remove(Engine, "after_cursor_execute", record)

    assert response.status_code == 200
    # What PostgreSQL itself received carries the id.
    for query in response.get_json()["queries"]:
        assert query.endswith("/* request_id=req-sql-42 */")
    assert statements and all("/* request_id=req-sql-42 */" in s for s in statements)

    lines = [r for r in logs.records() if r.get("event") in {"test.sql.start", "test.sql.end"}]
    access = [r for r in logs.records() if r.get("event") == "http.request"]
    assert len(lines) == 2 and len(access) == 1
    assert all(r["request_id"] == "req-sql-42" for r in lines + access)


def test_access_log_has_route_status_duration_and_ip(client, logs):
    client.get("/v1/meta/error-codes", headers={"X-Request-ID": "acc-1"})
    (line,) = [r for r in logs.records() if r.get("event") == "http.request"]
    assert line["route"] == "/v1/meta/error-codes"
    assert line["method"] == "GET" and line["status"] == 200
    assert line["duration_ms"] >= 0 and line["ip"] == "127.0.0.1"
    assert line["request_id"] == "acc-1" and "user_id" in line


def test_context_does_not_leak_into_the_next_request(client, logs):
    client.get("/v1/meta/error-codes", headers={"X-Request-ID": "first-req"})
    client.get("/v1/meta/error-codes")
    ids = [r["request_id"] for r in logs.records() if r.get("event") == "http.request"]
    assert ids[0] == "first-req" and ids[1] != "first-req"
