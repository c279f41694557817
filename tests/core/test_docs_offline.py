"""`/docs` renders in a real browser with no network beyond the app itself.

Headless Chromium (Debian's `chromium`; `.ci/run` installs it) loads the Swagger UI page
from gunicorn while every host name but the loopback address fails to resolve, runs its
scripts, and the rendered DOM must list the API's operations and the Authorize button.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import TEST_APP_NAME, redis_test_url
from tests.support.servers import gunicorn

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_docs_page_renders_every_operation_offline(database_url, tmp_path):
    env = {
        "APP_ENV": "test",
        "APP_NAME": TEST_APP_NAME,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_test_url(),
        "LOG_LEVEL": "WARNING",
    }
    with gunicorn("wsgi:app", workers=1, env=env) as (_, base):
        result = subprocess.run(
            [
                CHROMIUM,
                *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
                *("--disable-background-networking", "--disable-component-update"),
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=15000",
                f"--screenshot={tmp_path / 'docs.png'}",
                "--window-size=1280,2000",
                f"{base}/docs",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        dom = subprocess.run(
            [
                CHROMIUM,
                *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
                *("--disable-background-networking", "--disable-component-update"),
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={tmp_path / 'profile2'}",
                "--virtual-time-budget=15000",
                "--dump-dom",
                f"{base}/docs",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
    if keep := os.environ.get("KEEP_DOCS_SCREENSHOT"):
        shutil.copy(tmp_path / "docs.png", keep)
    assert (tmp_path / "docs.png").stat().st_size > 10_000, result.stderr[-2000:]
    assert "swagger-ui" in dom
    operations = dom.count('class="opblock ')
    assert operations >= 20, dom[-3000:]
    for path in ("/v1/users/me", "/v1/auth/login", "/v1/audit-logs", "/v1/feature-flags"):
        assert f">{path}<" in dom.replace("\u200b", "") or path in dom, path
    assert "Authorize" in dom
