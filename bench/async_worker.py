"""Celery entry point of `bench/async.py`: the real worker app plus the bench tasks."""

from bench._async_tasks import BENCH_SUBSCRIPTIONS
from celery_worker import app, celery  # noqa: F401 - `celery -A bench.async_worker.celery`
from myapp.core.outbox import init_outbox

init_outbox(app, BENCH_SUBSCRIPTIONS)
