"""Logs: JSON outside local, readable in local; secrets and personal data never reach them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from myapp.core.logging import get_logger, mask_value, scrub_text
from tests.conftest import PROD_SECRETS

PASSWORD = "Sup3r-Secret-Passw0rd"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlLXZhbHVl"
COOKIE = "session=abcdef0123456789deadbeef"


def run_app_in(env_name: str) -> subprocess.CompletedProcess:
    """Serve one 404 in a fresh process with APP_ENV=env_name; return its output."""
    code = "from myapp import create_app\napp = create_app()\napp.test_client().get('/nope')\n"
    env = {
        **os.environ,
        "APP_ENV": env_name,
        **{name.upper(): value for name, value in PROD_SECRETS.items()},
        "LOG_FORMAT": "",
    }
    env.pop("LOG_FORMAT")
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_prod_logs_are_json_lines():
    result = run_app_in("prod")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses
    assert any(r["event"] == "http.request" and r["status"] == 404 for r in records)


def test_local_logs_are_human_readable():
    result = run_app_in("local")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if "http.request" in line)
    assert not line.lstrip().startswith("{")
    assert "status=404" in line


def test_secrets_in_fields_and_messages_never_reach_the_output(app, logs):
    log = get_logger("tests.masking")
    log.info(
        "user.login",
        password=PASSWORD,
        refresh_token=JWT,
        headers={"Authorization": f"Bearer {JWT}", "Cookie": COOKIE, "Accept": "text/html"},
        email="jane.doe@example.com",
        phone="+1 555 123 5678",
    )
    log.info(f"retrying with Authorization: Bearer {JWT} and password={PASSWORD}")
    logging.getLogger("some.library").warning(
        "connect to postgresql://app:%s@db:5432/x failed; cookie=%s", PASSWORD, COOKIE
    )
    try:
        raise ValueError(f"token={JWT}")
    except ValueError:
        log.exception("failed")

    output = logs.text
    for secret in (PASSWORD, JWT, "abcdef0123456789deadbeef", "jane.doe", "555 123"):
        assert secret not in output
    records = logs.records()
    login = next(r for r in records if r["event"] == "user.login")
    assert login["headers"]["Accept"] == "text/html"
    assert login["email"] == "j***@example.com"
    assert login["phone"] == "***5678"
    assert len(records) == 4


def test_request_headers_never_logged(client, logs):
    client.get(
        "/v1/meta/error-codes",
        headers={"Authorization": f"Bearer {JWT}", "Cookie": COOKIE},
        query_string={"token": JWT},
    )
    assert JWT not in logs.text and "deadbeef" not in logs.text


def test_mask_helpers_keep_harmless_values():
    assert mask_value("status", "active") == "active"
    assert mask_value("count", 3) == 3
    assert scrub_text("nothing secret here") == "nothing secret here"
