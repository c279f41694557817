"""Job use cases: start one (inside the caller's unit of work), read it, run it in a worker.

`start_job` inserts the row and emits `job.queued` in the caller's transaction, so a job
exists if and only if the request that asked for it committed, and its task is sent by the
outbox relay even if the broker was down at the time. The worker's `run_job` looks up the
runner registered for the job's kind (`init_jobs`), holds a lock on the job so a duplicate
delivery does not run it twice at once, and reports:

- progress (0..100) in the row, through a short transaction of its own, and as
  `job.progress` on the owner's event stream whenever the percentage changes;
- the result in the same transaction as the runner's own writes (an export's file row),
  then `job.succeeded`; or the error code, then `job.failed`.

A worker killed mid-job is redelivered (acks late): the job runs again from the start and
its earlier partial work was never committed. A final job is never run again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select, update

from myapp.core import events, streams
from myapp.core.config import current_settings
from myapp.core.context import Actor
from myapp.core.db import separate_transaction, unit_of_work
from myapp.core.errors import AppError
from myapp.core.locks import LockNotAcquiredError, distributed_lock, is_held
from myapp.core.logging import get_logger
from myapp.extensions import db
from myapp.jobs.models import FINAL_STATUSES, Job, JobStatus

log = get_logger(__name__)
JOB_QUEUED = "job.queued"
_RUNNERS = "myapp.job_runners"
#: Runs a job may start (each cut short by a dead worker counts) before it is failed.
MAX_ATTEMPTS = 3


class AbandonedError(Exception):
    """The job's worker died in each of its `MAX_ATTEMPTS` runs."""


def _lock_name(job_id: uuid.UUID) -> str:
    return f"jobs.{job_id}"


@dataclass(frozen=True, slots=True)
class JobRun:
    """What a runner is told about the job it runs."""

    id: uuid.UUID
    owner_id: uuid.UUID
    kind: str
    params: Mapping[str, Any]


class Progress:
    """Report how far a runner got: `progress(done, total)`; cheap to call often."""

    def __init__(self, job: JobRun) -> None:
        self.job = job
        self.percent = 0

    def __call__(self, done: int, total: int) -> None:
        """`done` of `total` items are finished."""
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        if percent <= self.percent:
            return
        self.percent = percent
        with separate_transaction() as connection:
            connection.execute(update(Job).where(Job.id == self.job.id).values(progress=percent))
        _notify(self.job, "job.progress", progress=percent)


Runner = Callable[[JobRun, Progress], dict[str, Any]]


def init_jobs(app: Flask, runners: Mapping[str, Runner]) -> None:
    """The runner of each job kind (the composition root lists them)."""
    app.extensions[_RUNNERS] = dict(runners)


def job_runners() -> Mapping[str, Runner]:
    """The current app's runner of each job kind."""
    return current_app.extensions[_RUNNERS]


def _notify(job: JobRun, event_type: str, **data: Any) -> None:
    streams.publish(str(job.owner_id), event_type, {"jobId": str(job.id), "kind": job.kind, **data})


def start_job(*, kind: str, owner_id: uuid.UUID, params: Mapping[str, Any] | None = None) -> Job:
    """Queue a job of `kind` for `owner_id`, inside the caller's unit of work."""
    if kind not in job_runners():
        raise ValueError(f"no runner for job kind {kind!r}")
    job = Job(owner_id=owner_id, kind=kind, params=dict(params or {}), status=JobStatus.QUEUED)
    db.session.add(job)
    db.session.flush()
    _queue(job)
    return job


def _queue(job: Job) -> None:
    """The event that makes a worker run `job` (through the outbox, with its transaction)."""
    events.emit(JOB_QUEUED, aggregate_type="job", aggregate_id=job.id, payload={"kind": job.kind})


def get_job(*, job_id: uuid.UUID, actor: Actor) -> Job:
    """The caller's own job; 404 for anybody else's (whether it exists stays hidden)."""
    job = db.session.get(Job, job_id)
    if job is None or not actor.is_user or str(job.owner_id) != actor.id:
        raise AppError("NOT_FOUND", "No such job.")
    return job


def _claim(job_id: uuid.UUID) -> JobRun | None:
    """Mark the job running (one more attempt); None when it is final or unknown."""
    with unit_of_work():
        job = db.session.get(Job, job_id, with_for_update=True)
        if job is None or job.status in FINAL_STATUSES:
            return None
        job.status = JobStatus.RUNNING
        job.progress = 0
        job.attempts += 1
        job.started_at = datetime.now(UTC)
        return JobRun(id=job.id, owner_id=job.owner_id, kind=job.kind, params=dict(job.params))


def run_job(*, job_id: uuid.UUID) -> bool:
    """Worker: run a queued job to its end. False when there was nothing to run."""
    try:
        # Extended by this live runner every third of its lifetime: it outlives a dead one
        # by at most `JOB_LEASE_SECONDS`.
        lease = current_settings().job_lease_seconds
        with distributed_lock(_lock_name(job_id), ttl=lease, auto_extend=True):
            run = _claim(job_id)
            if run is None:
                return False
            progress = Progress(run)
            _notify(run, "job.progress", progress=0)
            with unit_of_work():
                result = job_runners()[run.kind](run, progress)
                db.session.execute(
                    update(Job)
                    .where(Job.id == run.id)
                    .values(
                        status=JobStatus.SUCCEEDED,
                        progress=100,
                        result=result,
                        finished_at=datetime.now(UTC),
                    )
                )
    except LockNotAcquiredError:
        log.info("jobs.already_running", job_id=str(job_id))
        return False
    _notify(run, "job.succeeded", progress=100, result=result)
    log.info("jobs.succeeded", job_id=str(job_id), kind=run.kind)
    return True


def reclaim_abandoned() -> int:
    """Queue again the running jobs no worker holds; how many (beat, every minute).

    A job is `running` only while its runner holds the job's lock, which a live runner
    keeps extending: a running job whose lock is gone lost its worker (killed, out of
    memory, node gone). The broker gives such a message back in time (Redis after its
    visibility timeout, RabbitMQ when the connection drops), but not always usefully: one
    that comes back before the dead runner's lock expired is acknowledged as a duplicate,
    and a broker that lost it never gives it back. A new `job.queued` event runs it again
    (a duplicate delivery finds it running or final and does nothing); after
    `MAX_ATTEMPTS` starts it is failed instead.
    """
    running = db.session.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING)).all()
    reclaimed = 0
    for job_id in running:
        if is_held(_lock_name(job_id)):
            continue
        with unit_of_work():
            job = db.session.get(Job, job_id, with_for_update=True)
            if job is None or job.status != JobStatus.RUNNING:
                continue
            attempts = job.attempts
            if attempts < MAX_ATTEMPTS:
                job.status = JobStatus.QUEUED
                _queue(job)
        if attempts >= MAX_ATTEMPTS:
            fail_job(job_id=job_id, error=AbandonedError(str(job_id)))
        else:
            log.warning("jobs.reclaimed", job_id=str(job_id), attempts=attempts)
        reclaimed += 1
    return reclaimed


def fail_job(*, job_id: uuid.UUID, error: BaseException) -> None:
    """Worker: the job failed for good (not retryable, or out of retries)."""
    code = error.code if isinstance(error, AppError) else "INTERNAL_ERROR"
    with unit_of_work():
        job = db.session.get(Job, job_id, with_for_update=True)
        if job is None or job.status in FINAL_STATUSES:
            return
        job.status = JobStatus.FAILED
        job.error_code = code
        job.finished_at = datetime.now(UTC)
        run = JobRun(id=job.id, owner_id=job.owner_id, kind=job.kind, params=dict(job.params))
    _notify(run, "job.failed", error={"code": code})
    log.warning("jobs.failed", job_id=str(job_id), kind=run.kind, code=code)
