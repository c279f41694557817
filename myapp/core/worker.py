"""What a Celery worker process runs besides its tasks: the outbox relay, a metrics port,
and (Redis broker) the sweep that brings back messages of workers that died.

`celery_worker.py` calls `prepare_worker(app)`; the hooks fire in the worker's main process
only (never in beat): the loops start when the worker is ready to consume and stop when
its warm shutdown begins.

Why the sweep: on Redis a delivered message waits in an "unacked" set until its task
acknowledges it; if the worker is killed, kombu puts it back once it is older than the
visibility timeout, but only from its event loop. Workers on the gevent pool run without
that loop and never sweep (measured: a message of a SIGKILLed worker stayed lost), so
each worker sweeps itself every `min(10 s, visibility timeout / 4)`.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import signals
from flask import Flask

from myapp.core.config import current_settings
from myapp.core.logging import get_logger
from myapp.core.metrics import serve_worker_metrics
from myapp.core.outbox import Relay, start_relay_thread
from myapp.core.tasks import celery_app

log = get_logger(__name__)


def sweep_unacked(app: Flask, stopping: threading.Event, interval: float) -> None:
    """Every `interval` s, requeue messages unacknowledged for longer than the visibility
    timeout (their worker died). A Redis mutex lets one worker sweep at a time."""
    while not stopping.wait(interval):
        try:
            with app.app_context(), celery_app().connection_for_write() as connection:
                connection.default_channel.qos.restore_visible(num=1000, interval=1)
        except Exception as error:  # noqa: BLE001 - keep sweeping whatever happened
            log.warning("worker.sweep_failed", error_type=type(error).__name__)


def prepare_worker(app: Flask) -> None:
    """Connect the worker hooks for `app`."""
    relays: list[Relay] = []
    stopping = threading.Event()

    def on_ready(**_: Any) -> None:
        with app.app_context():
            settings = current_settings()
        if settings.worker_metrics_port:
            serve_worker_metrics(app, settings.worker_metrics_port)
            log.info("worker.metrics_serving", port=settings.worker_metrics_port)
        if settings.outbox_relay_in_worker:
            relays.append(start_relay_thread(app))
        if settings.broker_is_redis:
            interval = max(1.0, min(10.0, settings.celery_visibility_timeout / 4))
            threading.Thread(
                target=sweep_unacked, args=(app, stopping, interval), name="sweep", daemon=True
            ).start()

    def on_shutdown(**_: Any) -> None:
        stopping.set()
        for relay in relays:
            relay.stop()

    signals.worker_ready.connect(on_ready, weak=False, dispatch_uid="myapp-worker-ready")
    signals.worker_shutting_down.connect(on_shutdown, weak=False, dispatch_uid="myapp-worker-stop")
