"""Files request and response bodies."""

from __future__ import annotations

import marshmallow as ma

from myapp.core.api import Schema


class FileSchema(Schema):
    """A stored file's metadata."""

    id = ma.fields.UUID(required=True)
    filename = ma.fields.String(required=True)
    content_type = ma.fields.String(required=True, metadata={"example": "image/png"})
    size = ma.fields.Integer(required=True, metadata={"description": "bytes"})
    sha256 = ma.fields.String(required=True, metadata={"description": "hex digest"})
    created_at = ma.fields.DateTime(required=True)


#: OpenAPI: the upload body (streamed by the view, not loaded by a schema).
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    },
}
