"""`/v1/jobs`: how a job its caller started is doing."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from myapp.core.api import Blueprint
from myapp.core.context import current_actor
from myapp.jobs import service
from myapp.jobs.schemas import JobSchema, present_job

blp = Blueprint("jobs", __name__, url_prefix="/v1/jobs", description="Background jobs")


@blp.route("/<uuid:job_id>")
class JobItem(MethodView):
    """One job."""

    @blp.auth()
    @blp.response(200, JobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, job_id: uuid.UUID) -> dict:
        """Status and progress of a job you started (404 for anybody else's)."""
        return present_job(service.get_job(job_id=job_id, actor=current_actor()))
