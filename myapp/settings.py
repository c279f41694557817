"""Application settings: one validated class, read from the environment (and `.env`).

`APP_ENV` selects a profile (local, dev, stage, prod, test) that supplies defaults for
variables left unset. Invalid configuration stops every entry point (app factory, CLI,
gunicorn, Celery) before it serves anything, naming each bad variable without its value.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic import model_validator as _model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from myapp import defaults

AppEnv = Literal["local", "dev", "stage", "prod", "test"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DATABASE_URL = defaults.DATABASE_URL
DEFAULT_REDIS_URL = defaults.REDIS_URL
#: Encryption key ids (`ENCRYPTION_KEYS="kid:base64key,..."`).
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
KEY_BYTES = 32
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")

#: File types an upload may have (their content is sniffed: see myapp/files/sniff.py).
KNOWN_FILE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "webp", "pdf", "txt", "csv"})

#: Environments where developer conveniences (demo users, the old published keys) are allowed.
DEV_ENVS = frozenset({"local", "dev", "test"})
MIN_SECRET_LENGTH = 32
_PLACEHOLDER_MARKERS = ("change-me", "changeme", "insecure", "placeholder", "dev-only", "example")
_REQUIRED_HINT = (
    "is required: set it, or run `make dev`, which writes random local ones to .env.local"
)
#: The key ring and blind-index key earlier versions shipped (public): refused outside dev.
_DEV_ENCRYPTION_KEYS = "dev1:ZGV2LW9ubHktZW5jcnlwdGlvbi1rZXktMzJieXRlcyE="
_DEV_BLIND_INDEX_KEY = "ZGV2LW9ubHktYmxpbmQtaW5kZXgta2V5LTMyYnl0ZSE="  # noqa: S105

#: Defaults that depend on the profile; anything set explicitly wins.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {
        "log_format": "console",
        "admin_email": "admin@example.com",
        "admin_password": "dev-only-admin-password",
        "api_docs_enabled": True,
        "cors_origins": "http://localhost:3000,http://localhost:5173",
        "shutdown_drain_seconds": 0,
    },
    # Tests change logins from one process and ask another at once: no caller cache
    # (the tests of the cache turn it on).
    "test": {
        "log_format": "json",
        "api_docs_enabled": True,
        "cors_origins": "",
        "auth_caller_cache_seconds": 0,
    },
    "dev": {
        "log_format": "json",
        "api_docs_enabled": True,
        "cors_origins": "",
        "admin_email": "admin@example.com",
        "admin_password": "dev-only-admin-password",
    },
    # Request-id comments make every statement unique: no prepared statements, a plan
    # per execution. Off where throughput matters; the slow-query log keeps the id.
    "stage": {
        "log_format": "json",
        "api_docs_enabled": False,
        "cors_origins": "",
        "db_sql_comments": False,
    },
    "prod": {
        "log_format": "json",
        "api_docs_enabled": False,
        "cors_origins": "",
        "db_sql_comments": False,
    },
}


def _split_csv(value: Any) -> Any:
    """Accept `a,b,c` strings for list settings (lists pass through)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _uses_dev_key(keys: SecretStr) -> bool:
    dev_secret = _DEV_ENCRYPTION_KEYS.split(":", 1)[1]
    return any(
        item.split(":", 1)[-1].strip() == dev_secret for item in keys.get_secret_value().split(",")
    )


def _is_placeholder(secret: str) -> bool:
    lowered = secret.lower()
    return any(marker in lowered for marker in _PLACEHOLDER_MARKERS)


def decode_key(encoded: str) -> bytes:
    """Base64 (standard or URL-safe) of exactly 32 bytes."""
    try:
        raw = base64.b64decode(encoded.strip() + "=" * (-len(encoded.strip()) % 4), altchars=b"-_")
    except (binascii.Error, ValueError):
        raise ValueError("a key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a key must be {KEY_BYTES} bytes (base64 of 32 random bytes)")
    return raw


def parse_key_ring(value: str) -> dict[str, bytes]:
    """`kid:base64,kid:base64` -> ordered {kid: key}; errors never include key material."""
    ring: dict[str, bytes] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        kid, sep, encoded = item.partition(":")
        if not sep or not KEY_ID_PATTERN.fullmatch(kid):
            raise ValueError("each entry must be kid:base64key with kid in [A-Za-z0-9_-]")
        if kid in ring:
            raise ValueError(f"key id {kid!r} appears twice")
        ring[kid] = decode_key(encoded)
    if not ring:
        raise ValueError("at least one key is required")
    return ring


CsvList = Annotated[list[str], NoDecode]
CidrList = Annotated[list[Network], NoDecode]


class Settings(BaseSettings):
    """Every setting the application reads. Field names map to upper-case env vars."""

    model_config = SettingsConfigDict(
        env_file=(".env", ".env.local"),  # .env.local (random local secrets) wins
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        validate_default=True,
    )

    # Order matters: validators of later fields read `app_env` from already-validated data.
    app_env: AppEnv = "local"
    app_name: str = Field("myapp", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    app_version: str = "0.1.0"

    # No defaults: a secret written in the code is a secret everybody knows.
    secret_key: SecretStr | None = None
    jwt_secret_key: SecretStr | None = None

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    celery_broker_url: str | None = None
    cache_redis_url: str | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    log_sql: bool = False
    # Tracing, optional (requirements-otel.txt): on when a collector's OTLP/HTTP base URL is set.
    otel_exporter_otlp_endpoint: str | None = Field(None, pattern=r"^https?://[^\s?#]+$")
    otel_service_name: str = ""  # empty: APP_NAME
    otel_traces_sampler_arg: float = Field(1.0, ge=0, le=1, description="share of traces kept")

    port: int = Field(8000, ge=1, le=65535)
    web_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    gunicorn_timeout: int = Field(30, ge=1)
    gunicorn_graceful_timeout: int = Field(30, ge=1)
    gunicorn_worker_connections: int = Field(1000, ge=1)
    shutdown_drain_seconds: float = Field(5.0, ge=0)
    web_max_in_flight: int = Field(10, ge=1)
    web_queue_timeout: float = Field(10.0, gt=0)
    prometheus_multiproc_dir: str = "/tmp/myapp-prometheus"  # noqa: S108 - emptyDir in k8s

    cors_origins: CsvList = []
    metrics_allowed_cidrs: CidrList = Field(
        default_factory=lambda: _split_csv("127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12")
    )
    api_docs_enabled: bool = False
    trusted_proxy_hops: int = Field(0, ge=0, le=5)
    max_content_length: int = Field(10 * 1024 * 1024, ge=1024)
    json_max_bytes: int = Field(64 * 1024, ge=1024)

    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    db_pool_timeout: float = Field(2.0, gt=0)
    db_pool_pre_ping: bool = False
    db_sql_comments: bool = True
    db_slow_query_ms: float = Field(250.0, ge=0)
    db_pool_recycle: int = Field(1800, ge=-1)
    db_connect_timeout: int = Field(5, ge=1)
    db_statement_timeout_ms: int = Field(30_000, ge=0)

    cache_enabled: bool = True
    redis_socket_timeout: float = Field(5.0, gt=0)
    redis_connect_timeout: float = Field(2.0, gt=0)
    redis_health_check_interval: int = Field(30, ge=0)
    redis_max_retries: int = Field(3, ge=0)
    redis_max_connections: int = Field(128, ge=4)

    celery_pool: Literal["gevent", "prefork", "solo", "threads"] = "gevent"
    celery_concurrency: int = Field(50, ge=1)
    celery_task_soft_time_limit: int = Field(300, ge=1, description="seconds")
    celery_task_time_limit: int = Field(360, ge=1, description="seconds")
    celery_max_retries: int = Field(5, ge=0)
    celery_retry_backoff: float = Field(2.0, gt=0, description="seconds, first retry")
    celery_retry_backoff_max: int = Field(600, ge=1, description="seconds")
    # After the two above: its validator compares with them.
    celery_visibility_timeout: int = Field(3600, ge=2, description="seconds (Redis broker)")
    celery_task_events: bool = False
    worker_metrics_port: int = Field(0, ge=0, le=65535)

    outbox_relay_in_worker: bool = True
    outbox_batch_size: int = Field(500, ge=1, le=10_000)
    outbox_poll_seconds: float = Field(1.0, gt=0)
    outbox_retention_days: int = Field(7, ge=1)
    event_receipts_retention_days: int = Field(30, ge=1)

    mail_backend: Literal["log", "file", "smtp"] = "log"
    mail_from: str = "no-reply@example.com"
    mail_file_dir: str = "var/mail"
    smtp_host: str = "localhost"
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_timeout: float = Field(10.0, gt=0)

    jwt_access_token_expires: int = Field(900, ge=60, description="seconds")
    jwt_refresh_token_expires: int = Field(7 * 24 * 3600, ge=300, description="seconds")
    # How long a process reuses what it read about a login (user, roles, session open)
    # while the user's generation is unchanged (`auth.recent_callers`); a change made
    # past the app (SQL by hand) counts after at most this long. 0: read every time.
    auth_caller_cache_seconds: float = Field(1.0, ge=0, le=10)

    encryption_keys: SecretStr | None = None
    blind_index_key: SecretStr | None = None
    # During a blind-index key change: the key being replaced, until `flask crypto reindex`
    # has recomputed every index (lookups match both meanwhile).
    blind_index_key_previous: SecretStr | None = None

    password_hash_threads: int = Field(1, ge=1, le=16)
    ratelimit_enabled: bool = True
    ratelimit_default: str = "300/minute"
    ratelimit_login_per_ip: str = "10/minute"
    ratelimit_login_per_account: str = "5/minute"
    ratelimit_refresh: str = "30/minute"
    ratelimit_register: str = "5/minute"

    idempotency_enabled: bool = True
    idempotency_ttl_seconds: int = Field(86_400, ge=1)
    idempotency_lock_seconds: int = Field(60, ge=1)
    admin_allowed_cidrs: CidrList = []
    auth_refresh_cookie: bool = False

    admin_email: str | None = None
    admin_password: SecretStr | None = None
    users_purge_after_days: int = Field(30, ge=1)

    files_storage: Literal["local", "s3"] = "local"
    files_local_dir: str = "var/files"
    files_max_bytes: int = Field(50 * 1024 * 1024, ge=1)
    files_allowed_extensions: CsvList = Field(
        default_factory=lambda: _split_csv("png,jpg,jpeg,gif,webp,pdf,txt,csv")
    )
    files_chunk_bytes: int = Field(64 * 1024, ge=4096, le=8 * 1024 * 1024)
    files_orphan_grace_seconds: int = Field(3600, ge=60)
    # A running job's lock lives this long unless its runner renews it (every third of it):
    # how long a job whose worker died waits before the reclaim sweep queues it again.
    job_lease_seconds: float = Field(30.0, ge=3, le=3600)
    ratelimit_upload: str = "20/minute"
    s3_bucket: str | None = None
    s3_prefix: str = "files/"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_sse: Literal["", "AES256", "aws:kms"] = ""
    s3_sse_kms_key_id: str | None = None
    s3_part_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, le=512 * 1024 * 1024)

    sse_heartbeat_seconds: float = Field(15.0, gt=0)
    sse_stream_maxlen: int = Field(1000, ge=10)
    sse_stream_ttl_seconds: int = Field(86_400, ge=60)
    sse_ticket_ttl_seconds: int = Field(60, ge=5, le=600)
    sse_retry_ms: int = Field(3000, ge=100)

    chat_send_limit: str = "20 per 10 seconds"
    chat_event_limit: str = "100 per 10 seconds"
    presence_ttl_seconds: int = Field(60, ge=2)
    realtime_login_check_seconds: float = Field(2.0, gt=0)
    realtime_shutdown_grace_seconds: float = Field(2.0, ge=0)
    realtime_max_message_bytes: int = Field(64 * 1024, ge=4096)

    @_model_validator(mode="before")
    @classmethod
    def _apply_profile_defaults(cls, data: Any) -> Any:
        """Fill unset variables from the `APP_ENV` profile."""
        if not isinstance(data, dict):
            return data
        env = str(data.get("app_env") or os.environ.get("APP_ENV") or "local").lower()
        for key, value in PROFILE_DEFAULTS.get(env, {}).items():
            data.setdefault(key, value)
        return data

    @field_validator(
        "cors_origins",
        "metrics_allowed_cidrs",
        "admin_allowed_cidrs",
        "files_allowed_extensions",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("secret_key", "jwt_secret_key", mode="after")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr:
        if value is None:
            raise ValueError(_REQUIRED_HINT)
        secret = value.get_secret_value()
        if len(secret) < MIN_SECRET_LENGTH or _is_placeholder(secret):
            raise ValueError(
                f"must be a real secret of at least {MIN_SECRET_LENGTH} characters "
                "(placeholders are refused in every environment)"
            )
        return value

    @field_validator("encryption_keys", "blind_index_key", mode="after")
    @classmethod
    def _required(cls, value: SecretStr | None) -> SecretStr:
        if value is None:
            raise ValueError(_REQUIRED_HINT)
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _key_ring(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        parse_key_ring(value.get_secret_value())  # ValueError names the problem, not the key
        if info.data.get("app_env", "local") not in DEV_ENVS and _uses_dev_key(value):
            raise ValueError("the development key ring is refused outside local/dev/test")
        return value

    @field_validator("blind_index_key_previous")
    @classmethod
    def _previous_blind_index_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key(value.get_secret_value())
        return value

    @field_validator("blind_index_key")
    @classmethod
    def _blind_index_key(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        decode_key(value.get_secret_value())
        dev_env = info.data.get("app_env", "local") in DEV_ENVS
        if not dev_env and value.get_secret_value() == _DEV_BLIND_INDEX_KEY:
            raise ValueError("the development key is refused outside local/dev/test")
        return value

    @field_validator("admin_password")
    @classmethod
    def _admin_password_outside_dev(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is None or info.data.get("app_env", "local") in DEV_ENVS:
            return value
        if len(value.get_secret_value()) < 12 or _is_placeholder(value.get_secret_value()):
            raise ValueError("must be at least 12 characters and not a placeholder")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("is not a valid database URL") from None
        if url.drivername != "postgresql+psycopg" or not url.database:
            raise ValueError("must look like postgresql+psycopg://user@host:5432/dbname")
        return value

    @field_validator("redis_url", "cache_redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("celery_broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith((*_REDIS_SCHEMES, *_AMQP_SCHEMES)):
            raise ValueError("must start with redis://, rediss://, unix://, amqp:// or amqps://")
        return value

    @field_validator("celery_visibility_timeout")
    @classmethod
    def _visibility_outlasts_tasks(cls, value: int, info: ValidationInfo) -> int:
        # On Redis a message comes back when it has been unacknowledged for this long: a
        # task still running then would run twice, and so would a longer retry countdown.
        longest = max(
            info.data.get("celery_task_time_limit", 0),
            info.data.get("celery_retry_backoff_max", 0),
        )
        if value <= longest:
            raise ValueError(
                "must be longer than CELERY_TASK_TIME_LIMIT and CELERY_RETRY_BACKOFF_MAX"
            )
        return value

    @field_validator("celery_task_time_limit")
    @classmethod
    def _hard_after_soft(cls, value: int, info: ValidationInfo) -> int:
        if value <= info.data.get("celery_task_soft_time_limit", 0):
            raise ValueError("must be longer than CELERY_TASK_SOFT_TIME_LIMIT")
        return value

    @field_validator("files_allowed_extensions")
    @classmethod
    def _known_extensions(cls, value: list[str]) -> list[str]:
        lowered = [item.lower().lstrip(".") for item in value]
        unknown = sorted(set(lowered) - KNOWN_FILE_EXTENSIONS)
        if unknown:
            known = ", ".join(sorted(KNOWN_FILE_EXTENSIONS))
            raise ValueError(f"unknown extensions {', '.join(unknown)} (known: {known})")
        return lowered

    @_model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.files_storage == "s3" and not self.s3_bucket:
            raise ValueError("FILES_STORAGE=s3 needs S3_BUCKET")
        return self

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard_outside_local(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if "*" in value and info.data.get("app_env") != "local":
            raise ValueError("'*' is only allowed when APP_ENV=local; list the origins")
        return value

    @property
    def is_dev(self) -> bool:
        """True in the environments where developer conveniences are allowed."""
        return self.app_env in DEV_ENVS

    @property
    def broker_url(self) -> str:
        """The Celery broker URL (defaults to `REDIS_URL`)."""
        return self.celery_broker_url or self.redis_url

    @property
    def broker_is_redis(self) -> bool:
        """True when the Celery broker is Redis (else RabbitMQ over AMQP)."""
        return self.broker_url.startswith(_REDIS_SCHEMES)

    @property
    def cache_url(self) -> str:
        """The cache Redis URL (defaults to `REDIS_URL`)."""
        return self.cache_redis_url or self.redis_url

    @property
    def redis_prefix(self) -> str:
        """Prefix of every Redis key this app writes: `{app}:{env}:`."""
        return f"{self.app_name}:{self.app_env}:"


class ConfigError(SystemExit):
    """Invalid configuration. Uncaught, it prints the message and exits with status 1."""


def describe_errors(error: ValidationError) -> str:
    """List every invalid variable by env name, with the reason but never the value."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        name = "_".join(str(part) for part in item["loc"][:1]).upper() or "SETTINGS"
        reason = item["msg"].removeprefix("Value error, ")
        lines.append(f"  - {name}: {reason}")
    return "Invalid configuration:\n" + "\n".join(sorted(set(lines)))


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment; raise `ConfigError` listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_errors(error)) from None
