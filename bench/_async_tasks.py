"""The tasks of `bench/async.py` and who subscribes to its events (no Celery app here).

`bench.noop` does nothing (task throughput); `bench.probe` subscribes to `bench.ping`
events and notes when it received each (commit-to-subscriber latency).
"""

from __future__ import annotations

import time

from celery import shared_task

from myapp.core.redis import redis_client, redis_key
from myapp.subscriptions import SUBSCRIPTIONS

PING = "bench.ping"
BENCH_SUBSCRIPTIONS = {**SUBSCRIPTIONS, PING: ("bench.probe",)}


@shared_task(name="bench.noop")
def noop() -> None:
    """Nothing."""


@shared_task(name="bench.probe")
def probe(event: dict) -> None:
    """Note the arrival time of a `bench.ping` event."""
    redis_client().hset(redis_key("bench", "arrived"), event["id"], time.time())
