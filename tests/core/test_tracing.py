"""Tracing: off, nothing of OpenTelemetry is loaded; on, one request is one trace, across
the outbox and the Celery worker, with the request id on its span and its id in the logs.

The served processes export to an in-process OTLP/HTTP collector (`tests.support.otlp`).
They get a database and a Redis key prefix of their own, so that no other test's worker or
outbox relay takes the job (which would start a trace of its own).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanKind

from myapp.core.otel import StartWhereWorkStarts
from tests.conftest import (
    PASSWORD,
    server_env,
)
from tests.support.chat import ChatClient
from tests.support.otlp import Collector, Span
from tests.support.servers import gunicorn, wait_until
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
#: What tracing loads: the SDK's tracer, the exporter and the instrumentations.
TRACING_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
    "opentelemetry.instrumentation",
)

_UNTRACED_PROCESS = """
import sys
import traceback

BLOCK = sys.argv[1] == "block"
attempts = []


class Absent:
    \"\"\"An image built without the tracing extra: `opentelemetry` cannot be imported.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            files = [f.filename for f in traceback.extract_stack()[:-1]]
            attempts.append(next(f for f in reversed(files) if "importlib" not in f))
            raise ImportError(name)
        return None


if BLOCK:
    sys.meta_path.insert(0, Absent())

from gevent import monkey
monkey.patch_all()
from myapp import create_app
app = create_app()
client = app.test_client()
assert client.get("/health/live").status_code == 200
assert client.get("/v1/users/me").status_code == 401
import celery_worker  # the worker's app and Celery, as `celery -A celery_worker` loads them
loaded = [name for name in sys.modules if "opentelemetry" in name or name == "myapp.core.otel"]
print(json.dumps({"attempts": sorted(set(attempts)), "loaded": sorted(loaded)}))
""".replace("print(", "import json; print(", 1)


def _python(code: str, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with `env` over ours (minus any OTEL_* variable)."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        env={**inherited, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _run_untraced(database_url: str, mode: str) -> dict:
    done = _python(_UNTRACED_PROCESS, server_env(database_url), mode)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_an_endpoint_the_app_never_imports_opentelemetry(database_url):
    # Without the extra (the default image): the web app and the worker start and serve,
    # and no module of ours asks for OpenTelemetry. redis-py itself tries, for its own
    # optional metrics, and carries on without.
    absent = _run_untraced(database_url, "block")
    assert absent["loaded"] == []
    assert absent["attempts"] and all("/redis/" in path for path in absent["attempts"])
    # With the extra installed but no endpoint: no tracing module is loaded (what redis-py
    # loads for its metrics stays idle), and neither is ours.
    present = _run_untraced(database_url, "installed")["loaded"]
    assert "myapp.core.otel" not in present
    assert not [name for name in present if name.startswith(TRACING_MODULES)]


def test_an_endpoint_without_the_packages_is_a_clear_configuration_error(tmp_path, database_url):
    # A package directory that shadows `opentelemetry` with nothing importable in it.
    (tmp_path / "opentelemetry").mkdir()
    (tmp_path / "opentelemetry" / "__init__.py").write_text("raise ImportError('absent')\n")
    env = server_env(database_url, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    env["PYTHONPATH"] = f"{tmp_path}:{ROOT}"
    done = _python("from myapp import create_app; create_app()", env)
    assert done.returncode == 1
    assert "pip install -r requirements-otel.txt" in done.stderr


def _descends_from(span: Span, ancestor: Span, by_id: dict[str, Span]) -> bool:
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        if span.span_id == ancestor.span_id:
            return True
    return False


@pytest.mark.slow
def test_one_export_request_is_one_trace_through_the_outbox_and_the_worker(own_database, tmp_path):
    url, email = own_database.url, own_database.manager_email
    with Collector() as collector:
        tracing_env = {
            "APP_NAME": own_database.app_name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # read by the SDK: export every 100 ms
            "LOG_LEVEL": "INFO",
        }
        worker = Worker(
            url, tmp_path / "worker.log", name="tracing", OTEL_SERVICE_NAME="worker", **tracing_env
        ).wait_ready()
        try:
            web_env = server_env(url, OTEL_SERVICE_NAME="web", **tracing_env)
            with gunicorn("wsgi:app", workers=1, env=web_env, log_file=tmp_path / "web.log") as (
                web,
                base,
            ):
                login = requests.post(
                    f"{base}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=10
                )
                assert login.status_code == 200, login.text
                headers = {"Authorization": f"Bearer {login.json()['data']['accessToken']}"}
                request_id = f"trace-{secrets.token_hex(6)}"
                started = requests.post(
                    f"{base}/v1/users/export",
                    headers={**headers, "X-Request-ID": request_id},
                    timeout=10,
                )
                assert started.status_code == 202, started.text
                job_url = f"{base}/v1/jobs/{started.json()['data']['jobId']}"

                def finished() -> bool:
                    status = requests.get(job_url, headers=headers, timeout=10).json()["data"]
                    return status["status"] in ("succeeded", "failed")

                wait_until(finished, 60, "the export job did not finish")
                assert (
                    requests.get(job_url, headers=headers, timeout=10).json()["data"]["status"]
                    == "succeeded"
                )

                def request_span() -> Span | None:
                    found = [
                        s
                        for s in collector.spans
                        if s.kind == "server" and s.attributes.get("request_id") == request_id
                    ]
                    return found[0] if found else None

                wait_until(lambda: request_span() is not None, 15, "no span for the request")
                root = request_span()

                def complete() -> bool:
                    spans = collector.trace(root.trace_id)
                    run = [s for s in spans if s.kind == "consumer" and "jobs.run" in s.name]
                    by_id = {s.span_id: s for s in spans}
                    return bool(run) and any(
                        _descends_from(s, run[0], by_id)
                        for s in spans
                        if s.attributes.get("db.system") == "postgresql"
                    )

                wait_until(complete, 30, "the task's part of the trace did not arrive")

                # Socket.IO: each event is a server span, its Redis and SQL work inside it.
                chat = ChatClient(base, login.json()["data"]["accessToken"]).connect()
                assert chat.call("presence:heartbeat") == {"ok": True}
                chat.close()

                def event_spans() -> dict[str, Span]:
                    return {s.name: s for s in collector.spans if s.name.startswith("socket.io ")}

                wait_until(
                    lambda: (
                        {"socket.io connect", "socket.io presence:heartbeat"}
                        <= event_spans().keys()
                    ),
                    15,
                    "no span for the socket's events",
                )
                web_log = (tmp_path / "web.log").read_text()
        finally:
            worker.stop()

        spans = collector.trace(root.trace_id)
        by_id = {s.span_id: s for s in spans}

        # HTTP: one server span, named by route, with the request id and no query string.
        assert [s for s in spans if s.kind == "server"] == [root]
        assert root.service == "web" and root.parent_id == ""
        assert "/v1/users/export" in root.name
        # SQL and Redis of the request itself (guards, caller, the job and its outbox row).
        web_sql = [s for s in spans if s.service == "web" and s.attributes.get("db.system")]
        assert {s.attributes["db.system"] for s in web_sql} == {"postgresql", "redis"}
        assert all(_descends_from(s, root, by_id) for s in web_sql)
        assert any("INSERT INTO outbox" in s.attributes.get("db.statement", "") for s in web_sql)
        assert not any(email in json.dumps(s.attributes) for s in spans)  # no values, only text
        # Celery: the relay's publish continues the request's trace, the run continues it.
        publish = [s for s in spans if s.kind == "producer" and "jobs.run" in s.name]
        run = [s for s in spans if s.kind == "consumer" and "jobs.run" in s.name]
        assert len(publish) == 1 and len(run) == 1, sorted(s.name for s in spans)
        assert publish[0].service == run[0].service == "worker"
        assert run[0].parent_id == publish[0].span_id
        assert _descends_from(publish[0], root, by_id)
        assert run[0].attributes.get("request_id") == request_id
        task_sql = [s for s in spans if _descends_from(s, run[0], by_id)]
        assert any(s.attributes.get("db.system") == "postgresql" for s in task_sql)
        # One tree: every span's parent is in the trace, but the request's.
        assert all(s.parent_id in by_id for s in spans if s is not root)

        events = event_spans()
        connect = events["socket.io connect"]
        assert connect.kind == "server" and connect.parent_id == ""
        inside = [s for s in collector.trace(connect.trace_id) if s.parent_id == connect.span_id]
        assert {s.attributes.get("db.system") for s in inside} >= {"postgresql", "redis"}
        beat = events["socket.io presence:heartbeat"]
        assert beat.trace_id != connect.trace_id  # one trace per event
        assert any(s.parent_id == beat.span_id for s in collector.trace(beat.trace_id))

        # Logs: the request's access line and the task's lines carry the trace id.
        assert _logged_with(web_log, "http.request", root.trace_id)
        assert _logged_with(worker.output(), None, root.trace_id)


def _logged_with(log: str, event: str | None, trace_id: str) -> bool:
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("trace_id") == trace_id and (event is None or record.get("event") == event):
            return True
    return False


def test_traces_start_only_where_work_starts():
    # In-process, without turning tracing on: the sampler alone.
    def decision(kind: SpanKind, parent=None, ratio: float = 1.0) -> Decision:
        return StartWhereWorkStarts(ratio).should_sample(parent, 0xABC, "x", kind).decision

    for starts_work in (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER):
        assert decision(starts_work) == Decision.RECORD_AND_SAMPLE
        assert decision(starts_work, ratio=0.0) == Decision.DROP  # OTEL_TRACES_SAMPLER_ARG
    for lone in (SpanKind.CLIENT, SpanKind.INTERNAL):  # a relay's poll, a gauge's read
        assert decision(lone) == Decision.DROP
    parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=trace.TraceFlags(1))
        )
    )
    assert decision(SpanKind.CLIENT, parent) == Decision.RECORD_AND_SAMPLE  # inside a trace
