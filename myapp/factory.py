"""The application factory proper: `create_app` built from small `register_*` helpers.

Kept out of `myapp/__init__.py` so that importing `myapp.settings` (gunicorn's config file
does, in the master) does not import psycopg before the gevent workers patch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from redis import Redis

from myapp.audit.routes import blp as audit_blp
from myapp.auth import caller, tickets, tokens
from myapp.auth import service as auth_service
from myapp.auth.recent_callers import init_recent_callers
from myapp.auth.routes import blp as auth_blp
from myapp.chat.routes import blp as chat_blp
from myapp.chat.sockets import ChatNamespace, init_chat_metrics
from myapp.cli import register_cli, register_seeder
from myapp.core import (
    admission,
    bodies,
    context,
    guards,
    idempotency,
    pipeline,
    security,
    tracing,
)
from myapp.core import db as database
from myapp.core.api import SWAGGER_UI_URL, api, serve_swagger_ui_assets
from myapp.core.cache import init_cache
from myapp.core.config import install_settings
from myapp.core.crypto import init_crypto
from myapp.core.db import engine_options
from myapp.core.deadletters import init_dead_letters
from myapp.core.errors import register_error_handlers
from myapp.core.logging import configure_logging, log_access
from myapp.core.metrics import register_metrics
from myapp.core.outbox import init_outbox
from myapp.core.ratelimit import limiter_config, register_ratelimit
from myapp.core.realtime import init_realtime, realtime
from myapp.core.redis import create_redis, init_redis
from myapp.core.storage import init_storage
from myapp.core.streams import init_streams
from myapp.core.tasks import init_celery
from myapp.events.cli import events_cli
from myapp.events.routes import blp as events_blp
from myapp.extensions import cache, db, jwt, migrate, socketio
from myapp.files.routes import blp as files_blp
from myapp.flags import service as flags_service
from myapp.flags.cache import init_flag_cache
from myapp.flags.cli import flags_cli
from myapp.flags.routes import blp as flags_blp
from myapp.health.routes import blp as health_blp
from myapp.jobs import service as jobs_service
from myapp.jobs.routes import blp as jobs_blp
from myapp.meta.routes import blp as meta_blp
from myapp.schedule import PERIODIC_JOBS
from myapp.settings import Settings, load_settings
from myapp.subscriptions import SUBSCRIPTIONS, TASK_MODULES
from myapp.users import export as users_export
from myapp.users import seed as users_seed
from myapp.users import service as users_service
from myapp.users.cli import crypto_cli, users_cli
from myapp.users.routes import blp as users_blp
from myapp.users.routes import registration_blp

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BLUEPRINTS = (
    health_blp,
    meta_blp,
    auth_blp,
    registration_blp,
    users_blp,
    audit_blp,
    flags_blp,
    files_blp,
    jobs_blp,
    events_blp,
    chat_blp,
)
#: Job kind -> the function a worker runs for it (see myapp/jobs/service.py).
JOB_RUNNERS = {users_service.EXPORT_KIND: users_export.run_export}
SECURITY_SCHEMES = {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


def request_pipeline() -> pipeline.Pipeline:
    """Every request, in this order; each step runs once (docs/architecture.md)."""
    return pipeline.Pipeline(
        steps=(
            context.bind_request,  # 1. request id, client address
            pipeline.match_route,  # 2. 404/405 before any guard; never a redirect
            admission.admit,  # 2. in-flight limit per worker, others wait in arrival order
            database.read_safe_methods_in_autocommit,  # GET/HEAD: 1 round trip per read
            tokens.read_bearer_token,  # 3. caller, part one: the JWT verified, no I/O
            tickets.redeem_ticket,  # 3. or a single-use ticket, on routes that take one
            guards.check_guards,  # 4. one Redis round trip: budget + token denylist
            bodies.check_body,  # 4. media type, JSON size/depth/numbers, clean text
            security.enforce_admin_networks,  # 5. admin routes from allowed networks only
            caller.resolve_caller,  # 5. caller, part two: one SQL statement; RBAC
            pipeline.feature_gate(flags_service.is_enabled),  # 5. flags: in-process cache
            idempotency.begin,  # 6. Idempotency-Key: take, replay or refuse
        ),
        finishers=(
            idempotency.finish,  # keep the answer for replays
            guards.add_budget_headers,  # X-RateLimit-*
            security.forbid_caching_credentials,  # Cache-Control: no-store
            security.vary_on_origin,  # Vary: Origin where an origin is echoed
            context.echo_request_id,  # X-Request-ID
            log_access,  # one access line
        ),
        cleanups=(
            idempotency.release,
            admission.release,
            database.end_autocommit_reads,
            context.forget_request,
        ),
    )


class App(Flask):
    """Flask, asking less on every request whether a hook or view is a coroutine.

    Flask calls `ensure_sync` for every hook and the view of every request, and its
    `inspect.iscoroutinefunction` took 3% of a request's CPU. A plain function or method
    is answered from its code flags; anything else goes the usual way.
    """

    def ensure_sync(self, func: Callable) -> Callable:
        """`func` itself when it is a plain (not async) function or method."""
        code = getattr(func, "__code__", None)
        if (
            code is not None
            and not code.co_flags & inspect.CO_COROUTINE
            and not hasattr(func, "_is_coroutine_marker")  # inspect.markcoroutinefunction
        ):
            return func
        return super().ensure_sync(func)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app. Invalid configuration raises `ConfigError` (exit status 1)."""
    settings = settings or load_settings()
    tracing.init_tracing(settings)  # before any client exists; a no-op unless configured
    configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        sql=settings.log_sql,
        extra=tracing.log_processors(),
    )
    app = App("myapp", static_folder=None)  # an API: no static route
    tracing.instrument_app(app)  # the first request hook: its span covers all the others
    app.json.sort_keys = False  # keep `success` first, as clients read it
    app.url_map.merge_slashes = False  # `//` would be answered with a redirect
    app.config.from_mapping(flask_config(settings))
    install_settings(app, settings)
    admission.init_admission(app, settings.web_max_in_flight)
    metrics = register_metrics(app, settings)  # first, so it times every answer
    pipeline.install_pipeline(app, request_pipeline())
    redis = register_extensions(app, settings)
    register_domains(app, settings, redis)
    register_error_handlers(app)
    register_blueprints(app, settings)
    register_ratelimit(app, metrics.registry)
    register_cli(app)
    return app


def flask_config(settings: Settings) -> dict[str, Any]:
    """Flask and extension config keys, all derived from `Settings`."""
    docs = settings.api_docs_enabled
    return {
        "SECRET_KEY": settings.secret_key.get_secret_value(),
        "JWT_SECRET_KEY": settings.jwt_secret_key.get_secret_value(),
        "SQLALCHEMY_DATABASE_URI": settings.database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(settings),
        "MAX_CONTENT_LENGTH": settings.max_content_length,
        "PROPAGATE_EXCEPTIONS": False,
        "API_TITLE": settings.app_name,
        "API_VERSION": settings.app_version,
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/" if docs else None,
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "/docs",
        "OPENAPI_SWAGGER_UI_URL": SWAGGER_UI_URL,
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": settings.cache_url,
        "CACHE_KEY_PREFIX": f"{settings.redis_prefix}cache:",
        "CACHE_DEFAULT_TIMEOUT": 300,
        **limiter_config(settings),
        **tokens.jwt_config(settings),
    }


def register_extensions(app: Flask, settings: Settings) -> Redis:
    """init_app every extension; create (not connect) the Redis clients and Celery.

    Returns the app's Redis client, for what the domains plug in.
    """
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=False)
    database.init_db(app, settings)
    api.init_app(app, spec_kwargs={"components": {"securitySchemes": SECURITY_SCHEMES}})
    cache.init_app(app)
    jwt.init_app(app)
    security.register_security(app, settings)
    redis = init_redis(app, settings)
    init_realtime(app, socketio, settings)
    celery = init_celery(app, settings, PERIODIC_JOBS)
    celery.conf.imports = TASK_MODULES
    init_dead_letters(app)
    init_outbox(app, SUBSCRIPTIONS)
    cache_client = create_redis(settings.cache_url, settings, retries=0, max_connections=32)
    init_cache(app, cache_client, settings.redis_prefix, enabled=settings.cache_enabled)
    init_storage(app, settings)
    init_streams(app, redis, settings)
    return redis


def register_domains(app: Flask, settings: Settings, redis: Redis) -> None:
    """What domains plug into the platform and into each other; their commands."""
    users_service.tokens_revoked.connect(auth_service.end_all_sessions)
    auth_service.init_auth_metrics(app)
    init_recent_callers(app, settings.auth_caller_cache_seconds)
    realtime(app).login_check = auth_service.open_logins
    socketio.on_namespace(ChatNamespace())
    init_chat_metrics(app)
    init_flag_cache(app, redis, settings.redis_prefix)
    init_crypto(app, settings)
    jobs_service.init_jobs(app, JOB_RUNNERS)
    register_seeder(app, users_seed.seed)
    register_seeder(app, flags_service.seed)
    app.cli.add_command(users_cli)
    app.cli.add_command(crypto_cli)
    app.cli.add_command(flags_cli)
    app.cli.add_command(events_cli)


def register_blueprints(app: Flask, settings: Settings) -> None:
    """Every domain's routes, documented in the OpenAPI spec."""
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    if settings.api_docs_enabled:
        serve_swagger_ui_assets(app)
        security.relax_csp_for_docs(app)
