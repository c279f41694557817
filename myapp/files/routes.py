"""`/v1/files`: upload (multipart, streamed), metadata, ranged download, delete."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from flask import Response, request
from flask.views import MethodView

from myapp.core.api import Blueprint
from myapp.core.config import current_settings
from myapp.core.context import current_actor
from myapp.core.errors import AppError
from myapp.core.pipeline import feature_required, streaming
from myapp.core.ratelimit import setting
from myapp.extensions import limiter
from myapp.files import service
from myapp.files.schemas import UPLOAD_BODY, FileSchema
from myapp.files.upload import FRAMING_ALLOWANCE

blp = Blueprint("files", __name__, url_prefix="/v1/files", description="Files")

_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_CONTENT_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "Strong: the SHA-256 of the bytes"},
    "Content-Disposition": {"schema": {"type": "string"}, "description": "attachment"},
    "Accept-Ranges": {"schema": {"type": "string", "example": "bytes"}},
}
CONTENT_DOC: dict[str, Any] = {
    "parameters": [
        {
            "in": "header",
            "name": "Range",
            "schema": {"type": "string"},
            "description": "One byte range, e.g. `bytes=0-1023`",
        },
        {
            "in": "header",
            "name": "If-Range",
            "schema": {"type": "string"},
            "description": "Serve the range only if the ETag (or date) still matches",
        },
        {
            "in": "header",
            "name": "If-None-Match",
            "schema": {"type": "string"},
            "description": "304 when the ETag matches",
        },
    ],
    "responses": {
        "200": {"description": "The whole file", "content": _BINARY, "headers": _CONTENT_HEADERS},
        "206": {
            "description": "The requested range",
            "content": _BINARY,
            "headers": {**_CONTENT_HEADERS, "Content-Range": {"schema": {"type": "string"}}},
        },
        "304": {"description": "Not modified (If-None-Match matched)"},
    },
}


def _upload_key() -> str:
    return f"user:{current_actor().id}"


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact one as RFC 6266 `filename*`."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\;' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _requested_range(row: Any) -> service.ByteRange | None:
    """The single satisfiable range asked for, None for the whole file; 416 otherwise."""
    if "Range" not in request.headers:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None:
        wanted = request.if_range
        modified = row.created_at.replace(microsecond=0)
        if wanted.etag != row.etag and (wanted.date is None or wanted.date != modified):
            return None  # changed since the client's copy: send it whole
    parsed = request.range
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return None  # malformed or several ranges: a full answer is always allowed
    bounds = parsed.range_for_length(row.size)
    if bounds is None:
        raise AppError(
            "RANGE_NOT_SATISFIABLE",
            f"The file has {row.size} bytes.",
            headers={"Content-Range": f"bytes */{row.size}"},
        )
    return service.ByteRange(bounds[0], bounds[1] - 1)


def content_response(row: Any) -> Response:
    """The file's bytes as an attachment, whole or one range, or 304."""
    headers = {
        "ETag": f'"{row.etag}"',
        "Accept-Ranges": "bytes",
        "Last-Modified": row.created_at,
        "Content-Disposition": content_disposition(row.filename),
        "X-Content-Type-Options": "nosniff",
    }
    if request.if_none_match.contains_weak(row.etag):
        return Response(status=304, headers=headers)
    byte_range = _requested_range(row)
    status, length = 200, row.size
    if byte_range is not None:
        status, length = 206, byte_range.length
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{row.size}"
    headers["Content-Length"] = str(length)
    body: Iterator[bytes] = (
        iter(()) if request.method == "HEAD" else service.read_content(row, byte_range)
    )
    response = Response(body, status=status, headers=headers, content_type=row.content_type)
    response.direct_passthrough = True  # stream the chunks as they are; never buffer
    return response


@blp.route("")
class Files(MethodView):
    """Uploads."""

    @streaming
    @limiter.limit(setting("ratelimit_upload"), key_func=_upload_key)
    @feature_required("files.upload")
    @blp.auth()
    @blp.doc(requestBody=UPLOAD_BODY)
    @blp.response(201, FileSchema)
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self) -> Any:
        """Upload one file (multipart field `file`), streamed to storage.

        Its extension must be allowed and its content must sniff as that type (415
        otherwise); over `FILES_MAX_BYTES` is 413. Uploads take no `Idempotency-Key`.
        """
        boundary = request.mimetype_params.get("boundary")
        if request.mimetype != "multipart/form-data" or not boundary:
            raise AppError(
                "UNSUPPORTED_MEDIA_TYPE", "Send the file as multipart/form-data, field `file`."
            )
        # The file limit (not the JSON one) bounds this body; it is checked while streaming.
        request.max_content_length = current_settings().files_max_bytes + FRAMING_ALLOWANCE
        return service.upload(
            stream=request.stream,
            boundary=boundary.encode("latin-1"),
            content_length=request.content_length,
            actor=current_actor(),
        )


@blp.route("/<uuid:file_id>")
class FileItem(MethodView):
    """One file's metadata."""

    @blp.auth()
    @blp.response(200, FileSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, file_id: uuid.UUID) -> Any:
        """Metadata: the owner's or, for admins, anybody's file (404 otherwise)."""
        return service.get_file(file_id=file_id, actor=current_actor())

    @blp.auth()
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, file_id: uuid.UUID) -> None:
        """Delete: gone at once; a worker removes the stored bytes."""
        service.delete_file(file_id=file_id, actor=current_actor())


@blp.route("/<uuid:file_id>/content")
class FileContent(MethodView):
    """One file's bytes."""

    @streaming
    @blp.auth()
    @blp.doc(**CONTENT_DOC)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(416, response="REQUESTED_RANGE_NOT_SATISFIABLE")
    def get(self, file_id: uuid.UUID) -> Response:
        """Download, streamed; `Range` (one range) -> 206, `If-None-Match` -> 304."""
        return content_response(service.get_file(file_id=file_id, actor=current_actor()))
