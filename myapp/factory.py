"""The application factory proper: `create_app` built from small `register_*` helpers.

Kept out of `myapp/__init__.py` so that importing `myapp.settings` (gunicorn's config file
does, in the master) does not import psycopg before the gevent workers patch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from gevent import monkey

from myapp.audit.routes import blp as audit_blp
from myapp.auth import tokens
from myapp.auth.routes import blp as auth_blp
from myapp.cli import register_cli, register_seeder
from myapp.core.api import api
from myapp.core.context import register_request_context
from myapp.core.crypto import Crypto, KeyRing, decode_key
from myapp.core.db import engine_options, install_sql_comments
from myapp.core.errors import register_error_handlers
from myapp.core.idempotency import register_idempotency
from myapp.core.logging import configure_logging, register_access_log
from myapp.core.metrics import register_metrics
from myapp.core.ratelimit import exempt_from_defaults, register_ratelimit
from myapp.core.redis import create_redis
from myapp.core.security import (
    register_security,
    relax_csp_for_docs,
    set_authenticator,
    set_feature_evaluator,
)
from myapp.core.tasks import init_celery
from myapp.extensions import cache, db, jwt, migrate, socketio
from myapp.flags import service as flags_service
from myapp.flags.cache import FlagCache
from myapp.flags.cli import flags_cli
from myapp.flags.routes import blp as flags_blp
from myapp.health.routes import blp as health_blp
from myapp.meta.routes import blp as meta_blp
from myapp.settings import Settings, load_settings
from myapp.users import seed as users_seed
from myapp.users.cli import crypto_cli, users_cli
from myapp.users.routes import blp as users_blp

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BLUEPRINTS = (health_blp, meta_blp, auth_blp, users_blp, audit_blp, flags_blp)
SECURITY_SCHEMES = {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app. Invalid configuration raises `ConfigError` (exit status 1)."""
    settings = settings or load_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format, sql=settings.log_sql)
    app = Flask("myapp")
    app.json.sort_keys = False  # keep `success` first, as API.md shows it
    app.config.from_mapping(flask_config(settings))
    app.extensions["settings"] = settings
    register_request_hooks(app)
    register_extensions(app, settings)
    register_domains(app, settings)
    register_error_handlers(app)
    register_blueprints(app, settings)
    metrics = register_metrics(app, settings)
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
        "OPENAPI_SWAGGER_UI_URL": "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/",
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": settings.cache_url,
        "CACHE_KEY_PREFIX": f"{settings.redis_prefix}cache:",
        "CACHE_DEFAULT_TIMEOUT": 300,
        "RATELIMIT_STORAGE_URI": settings.redis_url,
        "RATELIMIT_STORAGE_OPTIONS": {
            # The limits library prefixes keys itself ("LIMITS:" by default): keep ours.
            "key_prefix": f"{settings.redis_prefix}ratelimit",
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_connect_timeout,
        },
        "RATELIMIT_STRATEGY": "fixed-window",
        "RATELIMIT_DEFAULTS_EXEMPT_WHEN": exempt_from_defaults,
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,  # fail open: an outage must not lock users out
        **tokens.jwt_config(settings),
    }


def register_request_hooks(app: Flask) -> None:
    """Request id first (everything after it logs with it), the access log, idempotency."""
    register_request_context(app)
    register_access_log(app)
    register_idempotency(app)


def register_extensions(app: Flask, settings: Settings) -> None:
    """init_app every extension; create (not connect) the Redis clients and Celery."""
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=False)
    install_sql_comments()
    api.init_app(app, spec_kwargs={"components": {"securitySchemes": SECURITY_SCHEMES}})
    cache.init_app(app)
    jwt.init_app(app)
    register_security(app, settings)
    redis = create_redis(settings.redis_url, settings)
    app.extensions["redis"] = redis
    same_server = settings.broker_url == settings.redis_url
    app.extensions["broker_redis"] = (
        redis if same_server else create_redis(settings.broker_url, settings)
    )
    socketio.init_app(
        app,
        message_queue=settings.redis_url,
        channel=f"{settings.redis_prefix}socketio",
        async_mode="gevent" if monkey.is_module_patched("socket") else "threading",
        cors_allowed_origins=settings.cors_origins,
        logger=False,
        engineio_logger=False,
    )
    init_celery(app, settings)


def register_domains(app: Flask, settings: Settings) -> None:
    """What domains plug into the platform: authentication, flags, encryption keys."""
    tokens.install_jwt_callbacks()
    set_authenticator(app, tokens.authenticate)
    app.extensions["flags"] = FlagCache(
        app.extensions["redis"], channel=f"{settings.redis_prefix}flags"
    )
    set_feature_evaluator(app, flags_service.is_enabled)
    app.extensions["crypto"] = Crypto(
        ring=KeyRing.from_setting(settings.encryption_keys.get_secret_value()),
        index_key=decode_key(settings.blind_index_key.get_secret_value()),
    )
    register_seeder(app, users_seed.seed)
    register_seeder(app, flags_service.seed)
    app.cli.add_command(users_cli)
    app.cli.add_command(crypto_cli)
    app.cli.add_command(flags_cli)


def register_blueprints(app: Flask, settings: Settings) -> None:
    """Every domain's routes, documented in the OpenAPI spec."""
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    if settings.api_docs_enabled:
        relax_csp_for_docs(app)
