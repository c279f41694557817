"""gunicorn settings for the `web` and `realtime` roles (gevent workers, no preload).

Loaded by the master before any worker starts: it validates the configuration (so a bad
one stops gunicorn before it binds), prepares the Prometheus multiprocess directory, and
routes gunicorn's own logs through the app's masked structlog pipeline.
"""

import gc
import os
import resource
import shutil
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from myapp.settings import load_settings  # noqa: E402

_settings = load_settings()  # raises ConfigError (exit 1, every bad variable named)

# Set before any worker imports prometheus_client, which reads it at import time.
_metrics_dir = Path(
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _settings.prometheus_multiproc_dir)
)

# Every connection (a socket of the realtime role holds one for its whole life) is a file
# descriptor: allow as many as the hard limit does.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard != resource.RLIM_INFINITY and _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))

bind = [f"0.0.0.0:{_settings.port}"]  # noqa: S104 - inside a container/pod, behind the ingress
# gevent, answering gunicorn's own refusals (bad request line or header, headers over
# the limits below) in the API's JSON envelope instead of an HTML page.
worker_class = "myapp.core.web_worker.EnvelopeGeventWorker"
limit_request_line = 4094  # bytes of method + path + query
limit_request_fields = 100  # headers per request
limit_request_field_size = 8190  # bytes per header (a bearer token must fit)
workers = _settings.web_concurrency
worker_connections = _settings.gunicorn_worker_connections
timeout = _settings.gunicorn_timeout
graceful_timeout = _settings.gunicorn_graceful_timeout
keepalive = 5
preload_app = False  # preloading imports psycopg before workers patch (docs/architecture.md)
accesslog = None  # the app writes one masked access line per request
errorlog = "-"
loglevel = _settings.log_level.lower()
forwarded_allow_ips = "*" if _settings.trusted_proxy_hops else "127.0.0.1"
proc_name = _settings.app_name
# gunicorn's runtime control socket (gunicornc: resize, reload, stop) would be created under
# $HOME, which is read-only in the image and shared by every master on a host; nothing here
# uses it, and a control surface nobody needs is one to leave closed.
control_socket_disable = True


def on_starting(server):
    """Master start: wipe stale metric files and send gunicorn's logs through structlog."""
    from myapp.core.logging import configure_logging

    shutil.rmtree(_metrics_dir, ignore_errors=True)
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(level=_settings.log_level, fmt=_settings.log_format)


def post_worker_init(worker):
    """Replace gunicorn's SIGTERM handler with a drain: readiness 503 first, then stop.

    For `SHUTDOWN_DRAIN_SECONDS` the worker keeps serving (the load balancer notices the
    failing readiness probe and stops routing here), then it stops accepting and lets
    in-flight requests finish within `graceful_timeout`; event streams end at that point,
    and sockets are told `server:shutdown`, given a grace period, then disconnected.
    """
    import gevent

    from myapp.core.realtime import shutdown_realtime
    from myapp.core.streams import shutdown_streams
    from myapp.health.service import start_draining

    def stop():
        worker.alive = False  # stop accepting; in-flight requests get `graceful_timeout`
        shutdown_streams()  # event streams would never finish by themselves: end them
        shutdown_realtime()  # sockets: `server:shutdown`, a grace period, then disconnect

    def drain(signum, frame):
        start_draining()
        worker.log.info("Draining for %ss before shutdown", _settings.shutdown_drain_seconds)
        gevent.spawn_later(_settings.shutdown_drain_seconds, stop)

    signal.signal(signal.SIGTERM, drain)
    # Everything built so far (the app, its modules, compiled SQL) lives as long as the
    # worker: keep it out of the collector's full passes, which otherwise pause every
    # request of the worker for as long as they take to walk it.
    gc.freeze()


def child_exit(server, worker):
    """A dead worker's live gauges must not be summed any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
