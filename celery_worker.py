"""Celery entry point: `celery -A celery_worker.celery worker|beat`.

With the (default) gevent pool, a worker patches the standard library before anything else
is imported, for the same reason as in `wsgi.py`. Workers also run an outbox relay (unless
`OUTBOX_RELAY_IN_WORKER=false`) and, with `WORKER_METRICS_PORT`, a metrics endpoint.
"""

import os
import sys

# Workers on the gevent pool need the patch before anything else is imported; beat does
# not (it only sleeps and sends), and under gevent it failed its shutdown on SIGTERM.
if os.environ.get("CELERY_POOL", "gevent") == "gevent" and "beat" not in sys.argv[1:]:
    from gevent import monkey

    monkey.patch_all()

from myapp import create_app  # noqa: E402 - must come after patching
from myapp.core.tasks import celery_app  # noqa: E402
from myapp.core.worker import prepare_worker  # noqa: E402

app = create_app()
celery = celery_app(app)
prepare_worker(app)
