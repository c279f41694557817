"""Celery entry point of `bench/async.py`: the real worker app plus two bench tasks.

`bench.noop` does nothing (task throughput); `bench.probe` subscribes to `bench.ping`
events and notes when it received each (commit-to-subscriber latency).
"""

import time

from celery import shared_task

from celery_worker import app, celery  # noqa: F401 - `celery -A bench.async_worker.celery`
from myapp.core.outbox import init_outbox
from myapp.core.redis import redis_client, redis_key
from myapp.subscriptions import SUBSCRIPTIONS

PING = "bench.ping"


@shared_task(name="bench.noop")
def noop() -> None:
    """Nothing."""


@shared_task(name="bench.probe")
def probe(event: dict) -> None:
    """Note the arrival time of a `bench.ping` event."""
    redis_client().hset(redis_key("bench", "arrived"), event["id"], time.time())


init_outbox(app, {**SUBSCRIPTIONS, PING: ("bench.probe",)})
