"""The gevent pitfall of docs/architecture.md, on purpose: psycopg imported before gevent patches.

Same app and routes as `tests.support.wsgi_app`; only the import order differs. Loaded
with gunicorn's preload option by `bench.gevent_io` as its baseline: the master imports
psycopg unpatched (it picks its C wait function then) and every forked worker inherits it.
Without preload the gevent worker patches before importing the app, and the order here
would not matter.
"""

import psycopg  # noqa: F401 - imported first on purpose: it picks a blocking wait function
from gevent import monkey

monkey.patch_all()

from tests.support.wsgi_app import app  # noqa: E402,F401
