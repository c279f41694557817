"""Uploads and downloads against real storage: local disk and an S3 API server (moto)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from myapp.core.storage import storage
from myapp.files.models import StoredFile
from myapp.flags import service as flags_service
from tests.conftest import bearer, login
from tests.files.conftest import PNG, ChunkStream, multipart, s3_client, stored_keys

MIB = 1024 * 1024


@pytest.fixture
def owner(make_user):
    return make_user()


@pytest.fixture
def http(files_app, db_session):
    return files_app.test_client()


def upload(http, tokens, payload: bytes, filename: str):
    return http.post(
        "/v1/files",
        data={"file": (io.BytesIO(payload), filename)},
        content_type="multipart/form-data",
        headers=bearer(tokens),
    )


def stream_upload(http, tokens, chunks: Iterator[bytes], filename: str):
    """An upload sent like a chunked request: no Content-Length, read until the end."""
    body, content_type = multipart(chunks, filename)
    return http.post(
        "/v1/files",
        headers=bearer(tokens),
        environ_overrides={
            "CONTENT_TYPE": content_type,  # as sent (the test client would make its own)
            "wsgi.input": ChunkStream(body()),
            "wsgi.input_terminated": True,  # what gunicorn says of a chunked body
            "HTTP_TRANSFER_ENCODING": "chunked",
        },
    )


def rows(db_session) -> int:
    return db_session.scalar(select(func.count()).select_from(StoredFile))


def sample(size: int) -> bytes:
    """A valid PNG of about `size` bytes (PNG signature, then noise)."""
    return PNG + os.urandom(max(size - len(PNG), 0))


def test_an_upload_is_described_and_downloaded_whole_in_ranges_and_conditionally(http, owner):
    tokens = login(http, owner.email)
    payload = sample(300_000)
    created = upload(http, tokens, payload, "holiday photo.png")
    assert created.status_code == 201, created.get_json()
    meta = created.get_json()["data"]
    assert meta["filename"] == "holiday photo.png"
    assert meta["contentType"] == "image/png"
    assert meta["size"] == len(payload)
    assert meta["sha256"] == hashlib.sha256(payload).hexdigest()
    assert set(meta) == {"id", "filename", "contentType", "size", "sha256", "createdAt"}

    assert http.get(f"/v1/files/{meta['id']}", headers=bearer(tokens)).get_json()["data"] == meta
    whole = http.get(f"/v1/files/{meta['id']}/content", headers=bearer(tokens))
    assert whole.status_code == 200
    assert whole.data == payload
    assert whole.headers["ETag"] == f'"{meta["sha256"]}"'
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["X-Content-Type-Options"] == "nosniff"
    assert whole.headers["Content-Type"] == "image/png"
    assert whole.headers["Content-Disposition"] == (
        "attachment; filename=\"holiday photo.png\"; filename*=UTF-8''holiday%20photo.png"
    )

    ranged = http.get(
        f"/v1/files/{meta['id']}/content", headers={**bearer(tokens), "Range": "bytes=10-19"}
    )
    assert ranged.status_code == 206
    assert ranged.data == payload[10:20]
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(payload)}"
    assert ranged.headers["Content-Length"] == "10"

    tail = http.get(
        f"/v1/files/{meta['id']}/content", headers={**bearer(tokens), "Range": "bytes=-5"}
    )
    assert (tail.status_code, tail.data) == (206, payload[-5:])

    beyond = http.get(
        f"/v1/files/{meta['id']}/content",
        headers={**bearer(tokens), "Range": f"bytes={len(payload)}-"},
    )
    assert beyond.status_code == 416
    assert beyond.get_json()["error"]["code"] == "RANGE_NOT_SATISFIABLE"
    assert beyond.headers["Content-Range"] == f"bytes */{len(payload)}"

    same = http.get(
        f"/v1/files/{meta['id']}/content",
        headers={**bearer(tokens), "If-None-Match": whole.headers["ETag"]},
    )
    assert (same.status_code, same.data) == (304, b"")
    assert same.headers["ETag"] == whole.headers["ETag"]


def test_if_range_serves_the_range_only_while_the_etag_matches(http, owner):
    tokens = login(http, owner.email)
    payload = sample(5000)
    file_id = upload(http, tokens, payload, "a.png").get_json()["data"]["id"]
    etag = f'"{hashlib.sha256(payload).hexdigest()}"'
    url = f"/v1/files/{file_id}/content"
    matching = http.get(url, headers={**bearer(tokens), "Range": "bytes=0-9", "If-Range": etag})
    assert (matching.status_code, matching.data) == (206, payload[:10])
    stale = http.get(url, headers={**bearer(tokens), "Range": "bytes=0-9", "If-Range": '"old"'})
    assert (stale.status_code, stale.data) == (200, payload)
    several = http.get(url, headers={**bearer(tokens), "Range": "bytes=0-1,5-6"})
    assert (several.status_code, several.data) == (200, payload)


def test_content_that_does_not_match_its_extension_is_refused_and_nothing_is_kept(
    http, owner, files_app, db_session
):
    tokens = login(http, owner.email)
    html = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"
    refusals = {
        "avatar.png": html,  # markup dressed as an image
        "notes.txt": html,  # markup as text
        "setup.pdf": b"MZ\x90\x00\x03" + bytes(2000),  # a Windows executable
        "run.txt": b"#!/bin/sh\nrm -rf /\n",  # a script
        "tool.exe": b"MZ\x90\x00",  # not an allowed extension at all
        "photo.png": b"%PDF-1.7\n" + bytes(100),  # another allowed type, wrong name
        "noext": b"hello",
    }
    for filename, payload in refusals.items():
        answer = upload(http, tokens, payload, filename)
        assert answer.status_code == 415, (filename, answer.get_json())
        assert answer.get_json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    executable = upload(http, tokens, b"MZ\x90\x00" + bytes(100), "x.png").get_json()
    assert "Executables" in executable["error"]["message"]
    assert rows(db_session) == 0
    assert stored_keys(files_app) == []

    accepted = {
        "data.csv": b"id,name\n1,Zo\xc3\xab\n",
        "readme.txt": b"plain words\n",
        "doc.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(200),
        "pic.gif": b"GIF89a" + bytes(100),
    }
    for filename, payload in accepted.items():
        assert upload(http, tokens, payload, filename).status_code == 201, filename


def test_an_upload_over_the_limit_is_413_and_leaves_no_blob_and_no_row(
    http, owner, files_app, db_session
):
    tokens = login(http, owner.email)
    sixty_mib = sample(60 * MIB)
    declared = upload(http, tokens, sixty_mib, "big.png")  # Content-Length says it all
    assert declared.status_code == 413
    assert declared.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    def chunks() -> Iterator[bytes]:  # unknown length: found out while streaming
        for offset in range(0, len(sixty_mib), MIB):
            yield sixty_mib[offset : offset + MIB]

    streamed = stream_upload(http, tokens, chunks(), "big.png")
    assert streamed.status_code == 413
    assert streamed.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert rows(db_session) == 0
    assert stored_keys(files_app) == []


def bucket_of(app) -> str:
    with app.app_context():
        return storage().bucket


def _is_s3(app) -> bool:
    with app.app_context():
        return storage().name == "s3"


def test_a_streamed_upload_of_several_parts_arrives_whole(http, owner, files_app, request):
    tokens = login(http, owner.email)
    payload = sample(12 * MIB + 123)  # three S3 parts of 5 MiB, the last one short

    def chunks() -> Iterator[bytes]:
        for offset in range(0, len(payload), 300_000):
            yield payload[offset : offset + 300_000]

    created = stream_upload(http, tokens, chunks(), "large.png")
    assert created.status_code == 201, created.get_json()
    meta = created.get_json()["data"]
    assert meta["size"] == len(payload)
    assert meta["sha256"] == hashlib.sha256(payload).hexdigest()
    download = http.get(f"/v1/files/{meta['id']}/content", headers=bearer(tokens))
    assert hashlib.sha256(download.data).hexdigest() == meta["sha256"]
    if _is_s3(files_app):
        client = s3_client(request.getfixturevalue("s3_server"))
        bucket = bucket_of(files_app)
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_aborted_s3_upload_leaves_no_multipart_upload_behind(http, owner, files_app, request):
    if not _is_s3(files_app):
        pytest.skip("S3 only: multipart uploads")
    tokens = login(http, owner.email)
    payload = sample(60 * MIB)

    def chunks() -> Iterator[bytes]:
        for offset in range(0, len(payload), MIB):
            yield payload[offset : offset + MIB]

    assert stream_upload(http, tokens, chunks(), "big.png").status_code == 413
    client = s3_client(request.getfixturevalue("s3_server"))
    bucket = bucket_of(files_app)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_only_the_owner_and_admins_see_a_file_and_others_get_404(http, owner, make_user):
    tokens = login(http, owner.email)
    file_id = upload(http, tokens, PNG, "mine.png").get_json()["data"]["id"]
    stranger = login(http, make_user().email)
    manager = login(http, make_user(roles=("manager",)).email)
    admin = login(http, make_user(roles=("admin",)).email)
    for other in (stranger, manager):
        for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
            answer = http.get(path, headers=bearer(other))
            assert answer.status_code == 404
            assert answer.get_json()["error"]["code"] == "NOT_FOUND"
        assert http.delete(f"/v1/files/{file_id}", headers=bearer(other)).status_code == 404
    assert http.get(f"/v1/files/{file_id}", headers=bearer(admin)).status_code == 200
    content = http.get(f"/v1/files/{file_id}/content", headers=bearer(admin))
    assert (content.status_code, content.data) == (200, PNG)
    assert http.get(f"/v1/files/{file_id}").status_code == 401


def test_a_deleted_file_is_gone_at_once_for_its_owner(http, owner, db_session):
    tokens = login(http, owner.email)
    file_id = upload(http, tokens, PNG, "gone.png").get_json()["data"]["id"]
    answer = http.delete(f"/v1/files/{file_id}", headers=bearer(tokens))
    assert (answer.status_code, answer.data) == (204, b"")
    assert http.get(f"/v1/files/{file_id}", headers=bearer(tokens)).status_code == 404
    assert http.get(f"/v1/files/{file_id}/content", headers=bearer(tokens)).status_code == 404
    assert http.delete(f"/v1/files/{file_id}", headers=bearer(tokens)).status_code == 404


def test_filenames_are_cleaned_and_kept_exactly_for_the_download(http, owner):
    tokens = login(http, owner.email)
    cases = {
        "../../etc/passwd.txt": "passwd.txt",
        "..hidden.txt": "hidden.txt",
        "naïve résumé.txt": "naïve résumé.txt",
        "tab\there.txt": "tabhere.txt",
    }
    for sent, kept in cases.items():
        created = upload(http, tokens, b"text\n", sent)
        assert created.status_code == 201, sent
        meta = created.get_json()["data"]
        assert meta["filename"] == kept
        disposition = http.get(f"/v1/files/{meta['id']}/content", headers=bearer(tokens)).headers[
            "Content-Disposition"
        ]
        assert disposition.endswith(f"filename*=UTF-8''{quote(kept, safe='')}")
        assert disposition.encode("latin-1")  # the header itself stays ASCII-safe


def test_malformed_uploads_get_clear_errors(http, owner):
    tokens = login(http, owner.email)
    as_json = http.post("/v1/files", json={"file": "x"}, headers=bearer(tokens))
    assert as_json.status_code == 415
    no_file = http.post(
        "/v1/files", data={"other": "x"}, content_type="multipart/form-data", headers=bearer(tokens)
    )
    assert no_file.status_code == 422
    assert no_file.get_json()["error"]["details"][0]["field"] == "other"
    empty = upload(http, tokens, b"", "empty.txt")
    assert empty.status_code == 422
    body, content_type = multipart(PNG, "cut.png")
    truncated = b"".join(body())[:-10]
    cut = http.post(
        "/v1/files", data=truncated, headers={**bearer(tokens), "Content-Type": content_type}
    )
    assert cut.status_code == 400
    assert cut.get_json()["error"]["code"] == "BAD_REQUEST"


def test_uploads_follow_their_feature_flag(http, owner, files_app):
    tokens = login(http, owner.email)
    with files_app.app_context():
        flags_service.set_flag(key="files.upload", enabled=False)
    try:
        answer = upload(http, tokens, PNG, "a.png")
        assert answer.status_code == 404
        assert answer.get_json()["error"]["code"] == "FEATURE_DISABLED"
    finally:
        with files_app.app_context():
            flags_service.set_flag(key="files.upload", enabled=True)


def test_uploads_have_a_budget_per_user(make_app, db_session, make_user):
    app = make_app(ratelimit_upload="2/minute")
    http = app.test_client()
    first, second = login(http, make_user().email), login(http, make_user().email)
    assert [upload(http, first, PNG, "a.png").status_code for _ in range(2)] == [201, 201]
    refused = upload(http, first, PNG, "a.png")
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "RATE_LIMITED"
    assert int(refused.headers["Retry-After"]) >= 1
    assert upload(http, second, PNG, "b.png").status_code == 201  # another user's own budget
