"""With a real worker: deleted files' blobs removed, and the users export as a job whose
progress reaches its owner's event stream (rows committed for real: workers read them)."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from myapp.core.db import unit_of_work
from myapp.core.storage import storage
from myapp.extensions import db
from myapp.users.models import Role, User
from tests.conftest import FILES_DIR, PASSWORD, bearer, libpq_url, login
from tests.files.conftest import PNG, s3_settings, stored_keys
from tests.support.servers import wait_until
from tests.support.sse import SSEReader
from tests.support.workers import Worker

pytestmark = pytest.mark.slow
DOMAIN = "jobs.test"
SEEDED = 2000


def sql(database_url: str, statement: str, *params) -> list[tuple]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        cursor = conn.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def committed(database_url) -> Iterator[None]:
    yield
    for statement in (
        "DELETE FROM files",
        "DELETE FROM jobs",
        "DELETE FROM event_receipts",
        "DELETE FROM outbox",
        "DELETE FROM audit_logs WHERE target_type IN ('file', 'auth_session') OR action = 'EXPORT'",
        f"DELETE FROM users WHERE email LIKE '%@{DOMAIN}'",  # noqa: S608
    ):
        sql(database_url, statement)


@dataclass
class Backend:
    name: str
    settings: dict
    worker: Worker


@pytest.fixture(scope="module", params=["local", "s3"])
def backend(request, database_url, tmp_path_factory) -> Iterator[Backend]:
    directory = tmp_path_factory.mktemp(f"worker-{request.param}")
    if request.param == "local":
        settings = {"files_storage": "local", "files_local_dir": FILES_DIR}
    else:
        settings = s3_settings(request.getfixturevalue("s3_server"), "background-tests")
    env = {key.upper(): str(value) for key, value in settings.items()}
    worker = Worker(database_url, directory / "worker.log", name=request.param, **env)
    try:
        yield Backend(request.param, settings, worker.wait_ready())
    finally:
        worker.stop()


@pytest.fixture
def bg_app(make_app, backend):
    # A heartbeat every second: a test's stream reader leaves at the stream's next write.
    app = make_app(sse_heartbeat_seconds=1.0, **backend.settings)
    if backend.name == "s3":
        with app.app_context():
            storage().ensure_bucket()
    return app


def add_user(app, password_hash: str, *, roles=("user",), phone: str | None = None) -> User:
    with app.app_context(), unit_of_work():
        user = User(
            email=f"u-{uuid.uuid4().hex[:10]}@{DOMAIN}",
            name="Job Tester",
            password_hash=password_hash,
        )
        user.roles = list(db.session.scalars(db.select(Role).where(Role.name.in_(roles))))
        if phone:
            user.phone = phone
        db.session.add(user)
        db.session.flush()
        db.session.expunge(user)
        return user


def seed_users(database_url: str, count: int, password_hash: str) -> None:
    sql(
        database_url,
        f"""
        INSERT INTO users (id, email, name, password_hash, status)
        SELECT gen_random_uuid(), 'seeded-' || n || '@{DOMAIN}', '=cmd|' || n, %s, 'active'
        FROM generate_series(1, %s) AS n
        """,  # noqa: S608 - constants only
        password_hash,
        count,
    )


def test_a_deleted_files_blob_and_row_are_removed_by_the_worker(
    bg_app, backend, database_url, password_hash, committed
):
    app = bg_app
    owner = add_user(app, password_hash)
    http = app.test_client()
    tokens = login(http, owner.email, PASSWORD)
    created = http.post(
        "/v1/files",
        data={"file": (io.BytesIO(PNG), "bye.png")},
        content_type="multipart/form-data",
        headers=bearer(tokens),
    )
    assert created.status_code == 201
    file_id = created.get_json()["data"]["id"]
    [(key,)] = sql(database_url, "SELECT storage_key FROM files WHERE id = %s", file_id)
    assert key in stored_keys(app)

    assert http.delete(f"/v1/files/{file_id}", headers=bearer(tokens)).status_code == 204
    assert http.get(f"/v1/files/{file_id}", headers=bearer(tokens)).status_code == 404
    wait_until(
        lambda: not sql(database_url, "SELECT 1 FROM files WHERE id = %s", file_id),
        30,
        "the worker to remove the row",
    )
    assert key not in stored_keys(app)


def read_csv(http, tokens, file_id: str) -> list[list[str]]:
    content = http.get(f"/v1/files/{file_id}/content", headers=bearer(tokens))
    assert content.status_code == 200
    assert content.headers["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(content.data.decode())))


def wait_for_job(http, tokens, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}", headers=bearer(tokens)).get_json()["data"]
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} still {job['status']}")


def test_the_users_export_runs_as_a_job_and_reports_progress_on_the_owners_stream(
    bg_app, backend, database_url, password_hash, committed
):
    app = bg_app
    if backend.name != "local":
        pytest.skip("one backend is enough for the job itself (storage is covered above)")
    seed_users(database_url, SEEDED, password_hash)
    manager = add_user(app, password_hash, roles=("manager",))
    admin = add_user(app, password_hash, roles=("admin",))
    add_user(app, password_hash, phone="+1 555 123 4567")
    plain = add_user(app, password_hash)
    http = app.test_client()
    tokens = login(http, manager.email, PASSWORD)
    visible = sql(database_url, "SELECT count(*) FROM users WHERE deleted_at IS NULL")[0][0]
    assert visible >= SEEDED + 4

    stream = http.get("/v1/events/stream", headers=bearer(tokens), buffered=False)
    reader = SSEReader(stream.response, stream.close)
    reader.next()  # connected

    plain_tokens = login(http, plain.email, PASSWORD)
    refused = http.post("/v1/users/export", headers=bearer(plain_tokens))
    assert refused.status_code == 403
    started = http.post("/v1/users/export", headers=bearer(tokens))
    assert started.status_code == 202
    job_id = started.get_json()["data"]["jobId"]
    assert http.get(f"/v1/jobs/{job_id}", headers=bearer(plain_tokens)).status_code == 404
    admin_tokens = login(http, admin.email, PASSWORD)
    assert http.get(f"/v1/jobs/{job_id}", headers=bearer(admin_tokens)).status_code == 404

    job = wait_for_job(http, tokens, job_id)
    assert job["status"] == "succeeded", job
    assert job["progress"] == 100
    file_id = job["result"]["fileId"]

    events = []
    while not events or events[-1].event != "job.succeeded":
        events.append(reader.next_event(timeout=30))
    reader.stop()
    assert all(e.data["jobId"] == job_id for e in events)
    progress = [e.data["progress"] for e in events if e.event == "job.progress"]
    assert progress[0] == 0 and progress == sorted(progress) and len(progress) >= 3
    assert events[-1].data["result"] == {"fileId": file_id}
    ids = [e.id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(
        ids
    )

    resumed = http.get(
        "/v1/events/stream", headers={**bearer(tokens), "Last-Event-ID": ids[1]}, buffered=False
    )
    again = SSEReader(resumed.response, resumed.close)
    assert [e.id for e in again.events(len(ids) - 2)] == ids[2:]
    again.stop()

    rows = read_csv(http, tokens, file_id)
    assert rows[0] == ["id", "email", "name", "phone", "roles", "status", "createdAt", "updatedAt"]
    assert len(rows) - 1 == visible
    assert len({row[0] for row in rows[1:]}) == visible
    seeded = [row for row in rows if row[1].startswith("seeded-")]
    assert all(row[2].startswith("'=cmd|") for row in seeded)  # no formula reaches a sheet
    phones = [row[3] for row in rows[1:] if row[3]]
    assert phones and all(phone.startswith("***-****-") for phone in phones)
    assert http.get(f"/v1/files/{file_id}/content", headers=bearer(plain_tokens)).status_code == 404


def test_logging_out_ends_the_logins_open_event_stream_through_the_worker(
    bg_app, backend, password_hash, committed
):
    if backend.name != "local":
        pytest.skip("storage plays no part here")
    user = add_user(bg_app, password_hash)
    http = bg_app.test_client()
    tokens = login(http, user.email, PASSWORD)
    stream = http.get("/v1/events/stream", headers=bearer(tokens), buffered=False)
    reader = SSEReader(stream.response, stream.close)
    reader.next()  # connected
    logged_out = time.monotonic()
    assert http.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
    assert reader.ended.wait(15), "the stream outlived the logout"
    assert time.monotonic() - logged_out < 15
