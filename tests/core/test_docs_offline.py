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

from tests.conftest import server_env
from tests.support.servers import gunicorn

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browse(url: str, profile, *action: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on `url`, unable to resolve any host but the loopback address."""
    return subprocess.run(
        [
            CHROMIUM,
            *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
            *("--disable-background-networking", "--disable-component-update"),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            *("--virtual-time-budget=15000", "--window-size=1280,2000"),
            *action,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_docs_page_renders_every_operation_offline(database_url, tmp_path):
    with gunicorn("wsgi:app", workers=1, env=server_env(database_url)) as (_, base):
        shot = browse(f"{base}/docs", tmp_path / "shot", f"--screenshot={tmp_path / 'docs.png'}")
        dom = browse(f"{base}/docs", tmp_path / "dom", "--dump-dom").stdout
    if keep := os.environ.get("KEEP_DOCS_SCREENSHOT"):
        shutil.copy(tmp_path / "docs.png", keep)
    assert (tmp_path / "docs.png").stat().st_size > 10_000, shot.stderr[-2000:]
    assert "swagger-ui" in dom
    operations = dom.count('class="opblock ')
    assert operations >= 20, dom[-3000:]
    for path in ("/v1/users/me", "/v1/auth/login", "/v1/audit-logs", "/v1/feature-flags"):
        assert f">{path}<" in dom.replace("\u200b", "") or path in dom, path
    assert "Authorize" in dom
