"""What goes wrong around files: the S3 service down, blobs left behind, bad settings."""

from __future__ import annotations

import io
import os
import time

import psycopg
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from myapp.core.storage import storage
from myapp.files import service
from myapp.settings import describe_errors
from myapp.users import service as users_service
from tests.conftest import bearer, libpq_url, login, make_settings
from tests.files.conftest import PNG, s3_settings, stored_keys
from tests.support.servers import ThrowawayS3


def upload(http, tokens, payload: bytes = PNG, filename: str = "a.png"):
    return http.post(
        "/v1/files",
        data={"file": (io.BytesIO(payload), filename)},
        content_type="multipart/form-data",
        headers=bearer(tokens),
    )


def test_with_s3_down_uploads_and_downloads_are_503_and_nothing_is_recorded(
    make_app, db_session, make_user, tmp_path
):
    server = ThrowawayS3(tmp_path / "moto.log").start()
    try:
        app = make_app(**s3_settings(server, "outage"))
        with app.app_context():
            storage().ensure_bucket()
        http = app.test_client()
        tokens = login(http, make_user().email)
        kept = upload(http, tokens).get_json()["data"]
    finally:
        server.stop()
    refused = upload(http, tokens, PNG + os.urandom(6 * 1024 * 1024))
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    listed = http.get("/v1/files/" + kept["id"], headers=bearer(tokens))
    assert listed.status_code == 200  # metadata lives in PostgreSQL
    download = http.get(f"/v1/files/{kept['id']}/content", headers=bearer(tokens))
    assert download.status_code == 503
    assert download.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert db_session.scalar(text("SELECT count(*) FROM files")) == 1  # the one from before


@pytest.fixture
def committed_files(database_url):
    yield
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("DELETE FROM files")
        conn.execute("DELETE FROM audit_logs WHERE target_type = 'file'")
        conn.execute("DELETE FROM users WHERE email LIKE '%@sweep.test'")


def test_the_sweep_removes_old_blobs_no_row_names_and_nothing_else(
    make_app, tmp_path, committed_files, password_hash
):
    app = make_app(files_storage="local", files_local_dir=str(tmp_path / "blobs"))
    http = app.test_client()
    with app.app_context():
        users_service.create_user(
            email="owner@sweep.test",
            password="sweep-password-1",
            name="Owner",
            phone=None,
            roles=["user"],
        )
    tokens = login(http, "owner@sweep.test", "sweep-password-1")
    kept = upload(http, tokens).get_json()["data"]
    with app.app_context():
        store = storage()
        for key, age in (("aa/old-orphan", 7200), ("bb/new-orphan", 0)):
            writer = store.writer(key, content_type="image/png")
            writer.write(PNG)
            writer.commit()
            then = time.time() - age
            os.utime(store.root / key, (then, then))
        for key, age in (("cc/killed", 7200), ("dd/in-progress", 0)):  # a writer's .part file
            store.writer(key, content_type="image/png").write(PNG)
            then = time.time() - age
            os.utime(store.root / f"{key}.part", (then, then))
        assert len(stored_keys(app)) == 3  # unfinished writes are not blobs
        assert service.sweep(grace_seconds=3600) == {
            "orphanBlobs": 1,
            "deletedFiles": 0,
            "incompleteUploads": 1,
        }
        assert not (store.root / "cc/killed.part").exists()
        assert (store.root / "dd/in-progress.part").exists()
    after = stored_keys(app)
    assert "aa/old-orphan" not in after and "bb/new-orphan" in after
    download = http.get(f"/v1/files/{kept['id']}/content", headers=bearer(tokens))
    assert download.status_code == 200 and download.data == PNG


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"files_storage": "s3"}, "S3_BUCKET"),
        ({"files_allowed_extensions": "png,exe"}, "FILES_ALLOWED_EXTENSIONS"),
        ({"s3_part_bytes": 1024}, "S3_PART_BYTES"),
    ],
)
def test_file_settings_that_cannot_work_are_refused(overrides, variable):
    with pytest.raises(ValidationError) as refused:
        make_settings(**overrides)
    assert variable in describe_errors(refused.value)


def test_the_sweep_aborts_s3_multipart_uploads_a_killed_process_left(make_app, request):
    server = request.getfixturevalue("s3_server")
    app = make_app(**s3_settings(server, "sweep-multipart"))
    with app.app_context():
        store = storage()
        store.ensure_bucket()
        store.client.create_multipart_upload(Bucket=store.bucket, Key="files/ab/left-behind")
        assert service.sweep(grace_seconds=0)["incompleteUploads"] == 1
        uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    assert uploads == []
