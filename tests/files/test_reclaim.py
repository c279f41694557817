"""Jobs whose worker died are run again: the reclaim sweep finds running jobs nobody holds.

First against the sweep itself (rows in the test transaction), then the failure it exists
for: a real worker SIGKILLed in the middle of a real export, on a broker that would give the
message back only an hour later.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from sqlalchemy import select

from myapp.core.db import unit_of_work
from myapp.core.locks import distributed_lock
from myapp.core.outbox import OutboxEvent
from myapp.extensions import db
from myapp.jobs import service as jobs
from myapp.jobs.models import Job, JobStatus
from myapp.users.service import EXPORT_KIND
from tests.conftest import PASSWORD, bearer, libpq_url, login
from tests.files.test_background import seed_users
from tests.support.servers import wait_until
from tests.support.workers import Worker


def running_job(app, owner_id: uuid.UUID, attempts: int) -> uuid.UUID:
    """A job as a worker leaves it when it dies mid-run."""
    with app.app_context(), unit_of_work():
        job = jobs.start_job(kind=EXPORT_KIND, owner_id=owner_id)
        job.status, job.attempts, job.progress = JobStatus.RUNNING, attempts, 40
        return job.id


def queued_events(job_id: uuid.UUID) -> int:
    return len(
        db.session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.name == jobs.JOB_QUEUED, OutboxEvent.aggregate_id == str(job_id)
            )
        ).all()
    )


def test_running_jobs_nobody_holds_are_queued_again_or_failed_and_held_ones_left(
    app, db_session, make_user
):
    owner = make_user().id
    abandoned = running_job(app, owner, attempts=1)
    held = running_job(app, owner, attempts=1)
    worn_out = running_job(app, owner, attempts=jobs.MAX_ATTEMPTS)
    with app.app_context():
        with distributed_lock(f"jobs.{held}", ttl=10):  # a live worker runs this one
            assert jobs.reclaim_abandoned() == 2
            again = db.session.get(Job, abandoned)
            assert (again.status, again.attempts, queued_events(abandoned)) == ("queued", 1, 2)
            assert db.session.get(Job, held).status == "running" and queued_events(held) == 1
            failed = db.session.get(Job, worn_out)
            assert (failed.status, failed.error_code) == ("failed", "INTERNAL_ERROR")
            assert queued_events(worn_out) == 1
            assert jobs.reclaim_abandoned() == 0  # nothing else runs unheld
        # Its worker gone (the lock no longer renewed), that one is queued again too.
        assert jobs.reclaim_abandoned() == 1 and db.session.get(Job, held).status == "queued"


@pytest.mark.slow
def test_an_export_whose_worker_is_killed_mid_run_is_run_again_to_the_end(
    own_database, password_hash, tmp_path
):
    seed_users(own_database.url, 30_000, password_hash)
    http = own_database.app.test_client()
    tokens = login(http, own_database.manager_email, PASSWORD)
    # The default visibility (back only in 1 h); a 5 s job lease instead of 30 s, so the
    # dead worker's lock lapses sooner (the same sweep, a shorter wait).
    env = {"APP_NAME": own_database.app_name, "JOB_LEASE_SECONDS": "5"}
    first = Worker(own_database.url, tmp_path / "first.log", name="doomed", **env).wait_ready()
    started = http.post("/v1/users/export", headers=bearer(tokens))
    assert started.status_code == 202
    job_id = started.get_json()["data"]["jobId"]

    def job() -> tuple[str, int, int]:
        with psycopg.connect(libpq_url(own_database.url)) as conn:
            return conn.execute(
                "SELECT status, progress, attempts FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()

    wait_until(lambda: job()[0] == "running" and job()[1] > 0, 60, "the export never ran")
    first.kill()  # SIGKILL mid-export: no warm shutdown, the message stays unacknowledged
    assert job()[0] == "running"
    with own_database.app.app_context():
        assert jobs.reclaim_abandoned() == 0  # the dead worker's lock has not lapsed yet
    second = Worker(own_database.url, tmp_path / "second.log", name="heir", **env).wait_ready()
    try:
        with own_database.app.app_context():
            deadline = time.monotonic() + 45
            while jobs.reclaim_abandoned() == 0:  # beat asks every minute; here every second
                assert time.monotonic() < deadline, "the lock never lapsed"
                time.sleep(1)
        wait_until(lambda: job()[0] in ("succeeded", "failed"), 120, "the export never ended")
        status, progress, attempts = job()
        assert (status, progress, attempts) == ("succeeded", 100, 2)
        assert f'"job_id": "{job_id}"' in second.output()
    finally:
        second.stop()
