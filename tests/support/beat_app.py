"""Celery entry point for the beat tests: the real app with one more job, every 2 s, and
the RedBeat lock timeout the test sets in `TEST_BEAT_LOCK_TIMEOUT` (the same takeover as
with the app's 30 s, a shorter wait)."""

import os

from myapp import schedule
from myapp.core.tasks import PeriodicJob

# Before the app is built: the factory reads the schedule when it is first imported.
schedule.PERIODIC_JOBS = (
    *schedule.PERIODIC_JOBS,
    PeriodicJob("test-tick", "tests.record_tick", 2.0, queue="default"),
)

from celery_worker import app, celery  # noqa: E402, F401 - `celery -A tests.support.beat_app.celery`

celery.conf.redbeat_lock_timeout = int(os.environ["TEST_BEAT_LOCK_TIMEOUT"])
