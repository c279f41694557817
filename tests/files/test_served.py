"""Files and the event stream under real gunicorn (gevent worker), over real sockets."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import time

import psycopg
import pytest

from myapp.users import service as users_service
from tests.conftest import libpq_url, server_env
from tests.files.conftest import PNG, multipart
from tests.support.servers import gunicorn

pytestmark = pytest.mark.slow
APP = "tests.support.wsgi_app:app"
EMAIL, PASSWORD = "served@served.test", "served-password-1"


@pytest.fixture
def account(make_app, database_url):
    app = make_app()
    with app.app_context():
        users_service.create_user(
            email=EMAIL, password=PASSWORD, name="Served", phone=None, roles=["user"]
        )
    yield
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("DELETE FROM files")
        conn.execute("DELETE FROM audit_logs WHERE target_type IN ('file', 'user')")
        conn.execute("DELETE FROM users WHERE email LIKE '%@served.test'")


def connect(base: str) -> http.client.HTTPConnection:
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def token(base: str) -> str:
    conn = connect(base)
    conn.request(
        "POST",
        "/v1/auth/login",
        json.dumps({"email": EMAIL, "password": PASSWORD}),
        {"Content-Type": "application/json"},
    )
    return json.loads(conn.getresponse().read())["data"]["accessToken"]


def test_a_chunked_upload_and_ranged_download_over_a_real_socket(database_url, tmp_path, account):
    env = server_env(database_url, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    payload = PNG + os.urandom(3 * 1024 * 1024)
    with gunicorn(APP, workers=1, env=env) as (_, base):
        auth = {"Authorization": f"Bearer {token(base)}"}
        body, content_type = multipart(payload, "sent.png")
        conn = connect(base)
        conn.request(  # a generator body: http.client sends it chunked, length unknown
            "POST",
            "/v1/files",
            body=(chunk for part in body() for chunk in _pieces(part)),
            headers={**auth, "Content-Type": content_type},
            encode_chunked=True,
        )
        answer = conn.getresponse()
        created = json.loads(answer.read())
        assert answer.status == 201, created
        meta = created["data"]
        assert meta["sha256"] == hashlib.sha256(payload).hexdigest()

        conn.request(
            "GET", f"/v1/files/{meta['id']}/content", headers={**auth, "Range": "bytes=100-"}
        )
        ranged = conn.getresponse()
        assert ranged.status == 206
        assert ranged.read() == payload[100:]
        assert ranged.getheader("Content-Range") == f"bytes 100-{len(payload) - 1}/{len(payload)}"


def _pieces(data: bytes, size: int = 256 * 1024):
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def test_sigterm_ends_open_event_streams_cleanly_after_the_drain(database_url, tmp_path, account):
    env = server_env(database_url, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    with gunicorn(APP, workers=1, env=env, drain=1) as (process, base):
        conn = connect(base)
        conn.request("GET", "/v1/events/stream", headers={"Authorization": f"Bearer {token(base)}"})
        stream = conn.getresponse()
        assert stream.status == 200
        assert stream.read1(64).startswith(b"retry: ")
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        rest = stream.read()  # returns only when the server ends the chunked body properly
        ended_after = time.monotonic() - signalled
        process.wait(timeout=30)
    assert b"event:" not in rest
    # The drain first, then the stream ends (the worker's timer counts from its event loop's
    # cached clock, which may lag real time by a few ms: hence 0.9, not 1.0).
    assert 0.9 <= ended_after < 6, ended_after
    assert process.returncode == 0


def test_a_slow_upload_holds_no_database_connection(database_url, tmp_path, account):
    env = server_env(
        database_url,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
        DB_POOL_SIZE="1",  # one connection per worker: an upload holding it would starve all
        DB_MAX_OVERFLOW="0",
    )
    with gunicorn(APP, workers=1, env=env) as (_, base):
        auth = {"Authorization": f"Bearer {token(base)}"}
        body, content_type = multipart(PNG + os.urandom(200_000), "slow.png")
        parts = list(body())
        upload = connect(base)
        upload.putrequest("POST", "/v1/files")
        for name, value in {**auth, "Content-Type": content_type}.items():
            upload.putheader(name, value)
        upload.putheader("Transfer-Encoding", "chunked")
        upload.endheaders()
        upload.send(b"%x\r\n%s\r\n" % (len(parts[0]), parts[0]))  # the headers of the part
        upload.send(b"%x\r\n%s\r\n" % (100_000, parts[1][:100_000]))  # then half the file
        time.sleep(0.5)  # the upload is in the view now, waiting for the rest

        other = connect(base)
        other.request("GET", "/v1/users/me", headers=auth)
        answer = other.getresponse()
        assert answer.status == 200, answer.read()  # the one connection was free
        answer.read()

        rest = parts[1][100_000:] + b"".join(parts[2:])
        upload.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        finished = upload.getresponse()
        assert finished.status == 201, finished.read()
