"""A task that records what a handler sees: request id, actor, app context, its own log."""

from __future__ import annotations

import json

from celery import shared_task
from flask import current_app

from myapp.core.context import current_actor, current_request_id
from myapp.core.logging import get_logger
from myapp.core.redis import redis_client, redis_key

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
