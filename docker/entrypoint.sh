#!/bin/sh
# Container entrypoint: starts one process role, or runs any other command.
#
#   web       gunicorn (gevent workers, WEB_CONCURRENCY of them) serving wsgi:app
#   realtime  gunicorn with exactly one worker, for Socket.IO (sticky sessions)
#   worker    celery worker on the default, chat and low queues
#   beat      celery beat with the RedBeat scheduler (run exactly one)
#   migrate   flask db upgrade (run as a one-off job, never at app start)
#
# Extra arguments after a role are passed on to that role's command, e.g.
# `worker --concurrency 10`. Anything else is exec'd unchanged, e.g.
# `flask seed` or `bash`. Every role is exec'd so that it runs as PID 1 and
# receives SIGTERM directly from the container runtime.
set -eu

GUNICORN_CONF="${GUNICORN_CONF:-docker/gunicorn.conf.py}"
CELERY_APP="${CELERY_APP:-celery_worker.celery}"

# prometheus_client in multiprocess mode writes one file per process into
# PROMETHEUS_MULTIPROC_DIR and fails if the directory is missing. The gunicorn
# config empties it when the master starts; here we only make sure it exists.
ensure_metrics_dir() {
    if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
        mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    fi
}

if [ "$#" -eq 0 ]; then
    set -- web
fi

role="$1"
shift

case "$role" in
    web)
        ensure_metrics_dir
        exec gunicorn -c "$GUNICORN_CONF" "$@" wsgi:app
        ;;
    realtime)
        ensure_metrics_dir
        exec gunicorn -c "$GUNICORN_CONF" --workers 1 "$@" wsgi:app
        ;;
    worker)
        ensure_metrics_dir
        if [ -n "${CELERY_CONCURRENCY:-}" ]; then
            set -- --concurrency "$CELERY_CONCURRENCY" "$@"
        fi
        exec celery -A "$CELERY_APP" worker \
            --loglevel="${CELERY_LOG_LEVEL:-INFO}" \
            -Q "${CELERY_QUEUES:-default,chat,low}" \
            --pool "${CELERY_POOL:-gevent}" \
            "$@"
        ;;
    beat)
        ensure_metrics_dir
        exec celery -A "$CELERY_APP" beat \
            -S myapp.core.beat:Scheduler \
            --loglevel="${CELERY_LOG_LEVEL:-INFO}" \
            "$@"
        ;;
    migrate)
        FLASK_APP="${FLASK_APP:-wsgi:app}"
        export FLASK_APP
        exec flask db upgrade "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
