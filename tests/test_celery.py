"""A real Celery worker runs tasks inside the app context with the caller's request id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask import Flask

from myapp.core.redis import redis_key
from tests.conftest import TEST_APP_NAME, redis_of, redis_test_url
from tests.support.servers import stop_process
from tests.support.tasks import report_context

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def worker(database_url):
    env = {
        **os.environ,
        "APP_ENV": "test",
        "APP_NAME": TEST_APP_NAME,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_test_url(),
        "CELERY_POOL": "gevent",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "tests.support.celery_app.celery",
            "worker",
            "--pool",
            "gevent",
            "--concurrency",
            "4",
            "--queues",
            "default",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield process
    stop_process(process)


def wait_for_key(app: Flask, key: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = redis_of(app).get(key)
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(key)


def test_task_runs_in_app_context_with_the_request_id_of_its_caller(app, worker):
    with app.test_request_context("/v1/meta/error-codes", headers={"X-Request-ID": "task-req-7"}):
        app.preprocess_request()  # binds the request id as a real request would
        report_context.delay("t1")
        key = redis_key("test", "task", "t1")
    seen = json.loads(wait_for_key(app, key))
    assert seen == {"request_id": "task-req-7", "actor": "system", "app": "myapp"}

    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    ran = [json.loads(line) for line in output.splitlines() if '"test.task.ran"' in line]
    assert len(ran) == 1
    assert ran[0]["request_id"] == "task-req-7"
