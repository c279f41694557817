"""Jobs response bodies."""

from __future__ import annotations

import marshmallow as ma

from myapp.core.api import Schema
from myapp.jobs.models import JobStatus


class JobErrorSchema(Schema):
    """Why a job failed."""

    code = ma.fields.String(required=True)


class JobSchema(Schema):
    """A job and how far it got."""

    id = ma.fields.UUID(required=True)
    kind = ma.fields.String(required=True, metadata={"example": "users.export"})
    status = ma.fields.String(
        required=True, validate=ma.validate.OneOf([s.value for s in JobStatus])
    )
    progress = ma.fields.Integer(required=True, metadata={"description": "0..100"})
    result = ma.fields.Dict(
        allow_none=True, metadata={"description": "When succeeded, e.g. `{fileId}`"}
    )
    error = ma.fields.Nested(JobErrorSchema, allow_none=True)
    created_at = ma.fields.DateTime(required=True)
    updated_at = ma.fields.DateTime(required=True)
    finished_at = ma.fields.DateTime(allow_none=True)


def present_job(job: object) -> dict:
    """The job as its owner sees it."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "result": job.result,
        "error": {"code": job.error_code} if job.error_code else None,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "finished_at": job.finished_at,
    }
