"""The one task that runs every job kind (`job.queued` -> `jobs.run`)."""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task

from myapp.core.events import Event
from myapp.core.logging import get_logger
from myapp.core.tasks import BaseTask
from myapp.jobs import service

log = get_logger(__name__)


class JobTask(BaseTask):
    """A job that fails for good (not retryable, or out of retries) is marked failed."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Mark the job failed (its owner sees `job.failed`), then dead-letter the task."""
        event = (kwargs or {}).get("event") or (args[0] if args else None)
        if event is not None:
            job_id = Event.from_message(event).aggregate_id
            try:
                with self.app.flask_app.app_context():
                    service.fail_job(job_id=uuid.UUID(job_id), error=exc)
            except Exception as error:  # noqa: BLE001 - the database may be what failed
                log.error("jobs.failure_unrecorded", job_id=job_id, error_type=type(error).__name__)
        super().on_failure(exc, task_id, args, kwargs, einfo)


@shared_task(base=JobTask, name="jobs.run")
def run(event: dict[str, Any]) -> bool:
    """Run the job named by a `job.queued` event (a final job is not run again)."""
    return service.run_job(job_id=uuid.UUID(Event.from_message(event).aggregate_id))


@shared_task(base=BaseTask, name="jobs.reclaim_abandoned")
def reclaim_abandoned() -> int:
    """Beat: queue again the running jobs whose worker died (see the service)."""
    return service.reclaim_abandoned()
