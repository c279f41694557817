"""WSGI entry point for gunicorn: `gunicorn -c docker/gunicorn.conf.py wsgi:app`.

gevent must patch the standard library before anything else is imported: psycopg picks
its wait function at import time, and an unpatched one blocks the whole worker.
"""

from gevent import monkey

monkey.patch_all()

from myapp import create_app  # noqa: E402 - must come after patching

app = create_app()
