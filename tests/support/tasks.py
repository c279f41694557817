"""Tasks the tests run in real workers: context report, kill target, flaky, subscriber, tick."""

from __future__ import annotations

import json
import os
import time
import uuid

from celery import shared_task
from flask import current_app

from myapp.core.context import current_actor, current_request_id
from myapp.core.events import handle_once
from myapp.core.logging import get_logger
from myapp.core.redis import redis_client, redis_key
from myapp.core.tasks import TICK_HEADER, TransientError, message_header

log = get_logger("tests.support.tasks")


@shared_task(name="tests.report_context")
def report_context(token: str) -> None:
    """Store the context this task ran with under `test:task:<token>`."""
    log.info("test.task.ran", token=token)
    seen = {
        "request_id": current_request_id(),
        "actor": current_actor().type,
        "app": current_app.name,
    }
    redis_client().set(redis_key("test", "task", token), json.dumps(seen), ex=60)


@shared_task(name="tests.hold_then_effect")
def hold_then_effect(key: str, hold: float) -> None:
    """Note who started, hold (a worker may be killed here), then the effect, once per key."""
    redis_client().rpush(redis_key("test", "started", key), os.getpid())
    time.sleep(hold)
    with handle_once("tests.hold_then_effect", uuid.uuid5(uuid.NAMESPACE_URL, key)) as first:
        if first:
            redis_client().rpush(redis_key("test", "effect", key), os.getpid())


@shared_task(name="tests.flaky")
def flaky(key: str, note: str) -> None:
    """Fail with a transient error until `test:ok:<key>` exists; every attempt is noted."""
    redis_client().rpush(redis_key("test", "attempts", key), time.time())
    if not redis_client().exists(redis_key("test", "ok", key)):
        raise TransientError("the remote service answered 503")
    log.info("test.flaky.succeeded", key=key)


@shared_task(name="tests.record_event")
def record_event(event: dict) -> None:
    """A subscriber that notes the events it receives, in order."""
    redis_client().rpush(redis_key("test", "events"), json.dumps(event))


@shared_task(bind=True, name="tests.record_tick")
def record_tick(self) -> None:
    """Note which beat tick this run belongs to."""
    tick = message_header(self.request, TICK_HEADER)
    redis_client().rpush(redis_key("test", "ticks"), json.dumps([tick, time.time()]))
