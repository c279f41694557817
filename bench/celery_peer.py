"""The peer of `bench/async.py`'s task throughput: bare Celery, no Flask, no base task.

Same broker, same reliability settings (late acknowledgement, prefetch 1 per slot, gevent
pool of the same size); a no-op task. What our worker costs beyond it is ours.

    celery -A bench.celery_peer.peer worker --pool gevent ...
"""

import os

from gevent import monkey

monkey.patch_all()

from celery import Celery  # noqa: E402 - after patching, as in celery_worker.py

PREFIX = "bench-peer:"  # bench/async.py reads its queues under this prefix
peer = Celery("peer", broker=os.environ["PEER_BROKER_URL"])
peer.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX, "visibility_timeout": 3600},
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    result_backend=None,
    worker_hijack_root_logger=False,
)


@peer.task(name="peer.noop")
def noop() -> None:
    """Nothing."""
