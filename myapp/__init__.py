"""myapp: every process role (web, realtime, worker, beat, CLI) starts from `create_app`.

Importing this package imports nothing else: gunicorn's master reads `myapp.settings`
before forking gevent workers, and psycopg must not be imported until they have patched
(see docs/architecture.md, "gevent").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from myapp.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app. Invalid configuration raises `ConfigError` (exit status 1)."""
    from myapp.factory import create_app as build

    return build(settings)
