"""Celery entry point for tests: the real worker app plus a task that reports its context."""

from celery_worker import app, celery  # noqa: F401 - `celery -A tests.support.celery_app.celery`
from tests.support import tasks  # noqa: F401 - registers the test task
