"""The app under real gunicorn with gevent workers: metrics, cooperative I/O, graceful drain."""

from __future__ import annotations

import json
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import server_env
from tests.support.servers import get, gunicorn

pytestmark = pytest.mark.slow
APP = "tests.support.wsgi_app:app"


@pytest.fixture
def gunicorn_env(database_url, tmp_path) -> dict[str, str]:
    return server_env(database_url, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"))


def metric_count(text: str, route: str) -> float:
    labels = rf'\{{[^}}]*route="{re.escape(route)}"[^}}]*\}}'
    pattern = rf"flask_http_request_duration_seconds_count{labels} (\S+)"
    return sum(float(value) for value in re.findall(pattern, text))


def test_metrics_aggregate_across_two_workers(gunicorn_env):
    with gunicorn(APP, workers=2, env=gunicorn_env) as (_, base):
        pids: set[int] = set()
        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(pids) < 2 and sent < 400:
                answers = list(pool.map(lambda _: get(f"{base}/_test/pid"), range(16)))
                sent += len(answers)
                pids.update(json.loads(body)["pid"] for _, body in answers)
        assert len(pids) == 2, "both workers must have served requests"
        # Whichever worker answers the scrape, it reports the requests of both.
        for _ in range(6):
            status, text = get(f"{base}/metrics")
            assert status == 200
            assert metric_count(text, "/_test/pid") == sent


def test_no_control_socket_is_opened(gunicorn_env, tmp_path):
    # gunicorn 25+ opens one under $HOME by default: a way to resize or stop the server that
    # nothing here uses, in a directory the image does not let the process write.
    home = tmp_path / "home"
    home.mkdir()
    with gunicorn(APP, workers=1, env={**gunicorn_env, "HOME": str(home)}) as (process, base):
        assert get(f"{base}/health/live")[0] == 200
    assert list(home.iterdir()) == []
    assert "gunicorn.ctl" not in process.stderr_text()


def test_ten_database_sleeps_overlap_on_one_gevent_worker(gunicorn_env):
    # Timing lives in bench/gevent_io.py; here the property itself: one process served all
    # ten at once, i.e. every sleep began before any of them ended.
    with gunicorn(APP, workers=1, env=gunicorn_env) as (_, base), ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: get(f"{base}/_test/sleep?seconds=0.5"), range(10)))
    assert all(status == 200 for status, _ in answers)
    spans = [json.loads(body) for _, body in answers]
    assert max(s["started"] for s in spans) < min(s["ended"] for s in spans)


def test_sigterm_fails_readiness_while_in_flight_requests_finish(gunicorn_env):
    with gunicorn(APP, workers=1, env=gunicorn_env, drain=2) as (process, base):
        assert get(f"{base}/health/ready")[0] == 200
        with ThreadPoolExecutor(max_workers=1) as pool:
            slow = pool.submit(get, f"{base}/_test/sleep?seconds=1.5")
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            status, body = get(f"{base}/health/ready")
            assert (status, json.loads(body)) == (503, {"status": "draining"})
            assert slow.result(timeout=10)[0] == 200
        process.wait(timeout=30)
        assert process.returncode == 0
