"""Configuration: profiles, and invalid settings stop every entry point naming each variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from myapp.settings import ConfigError, load_settings
from tests.conftest import PROD_SECRETS
from tests.support.servers import uncovered_environ

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET_MARK = "change-me-ZZ-do-not-print-ZZ"


def bad_prod_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "JWT_", "SECRET"))}
    env.update(
        APP_ENV="prod",
        SECRET_KEY="s" * 48 + "-real-secret",
        JWT_SECRET_KEY=SECRET_MARK,
        DATABASE_URL="mysql://root:pw-ZZ@db/x",
        PORT="18765",
        PROMETHEUS_MULTIPROC_DIR=str(ROOT / ".devdata" / "test-prom-bad-config"),
    )
    return env


ENTRY_POINTS = {
    "flask cli": [str(BIN / "flask"), "--app", "myapp", "routes"],
    "gunicorn": [str(BIN / "gunicorn"), "-c", "docker/gunicorn.conf.py", "wsgi:app"],
    "celery": [str(BIN / "celery"), "-A", "celery_worker.celery", "worker", "--pool=solo"],
    "wsgi import": [sys.executable, "-c", "import wsgi"],
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_invalid_config_stops_entry_point_and_names_every_variable(name):
    result = subprocess.run(
        ENTRY_POINTS[name],
        cwd=ROOT,
        env=bad_prod_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "JWT_SECRET_KEY" in output and "DATABASE_URL" in output
    assert SECRET_MARK not in output and "pw-ZZ" not in output
    assert "Listening at" not in output and "ready" not in output.lower()


def test_every_problem_is_listed_at_once(monkeypatch):
    monkeypatch.setenv("APP_ENV", "stage")
    monkeypatch.setenv("SECRET_KEY", "short")
    monkeypatch.setenv("JWT_SECRET_KEY", "x" * 40 + "placeholder")
    monkeypatch.setenv("REDIS_URL", "http://nope")
    monkeypatch.setenv("CORS_ORIGINS", "*")
    monkeypatch.setenv("DB_POOL_SIZE", "zero")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    for name in ("SECRET_KEY", "JWT_SECRET_KEY", "REDIS_URL", "CORS_ORIGINS", "DB_POOL_SIZE"):
        assert f"- {name}:" in message
    assert "short" not in message and "http://nope" not in message


def test_broker_limits_must_fit_inside_the_visibility_timeout(monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest:guest@rabbit:5672/app")
    assert load_settings(_env_file=None).broker_is_redis is False  # RabbitMQ is accepted
    monkeypatch.setenv("CELERY_TASK_TIME_LIMIT", "900")
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "600")  # a task would run twice
    monkeypatch.setenv("CELERY_TASK_SOFT_TIME_LIMIT", "1000")
    monkeypatch.setenv("CELERY_BROKER_URL", "http://nope")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    for name in ("CELERY_VISIBILITY_TIMEOUT", "CELERY_TASK_TIME_LIMIT", "CELERY_BROKER_URL"):
        assert f"- {name}:" in message


def test_dev_profiles_accept_the_built_in_dev_secret(monkeypatch):
    for env in ("local", "dev", "test"):
        monkeypatch.setenv("APP_ENV", env)
        assert load_settings(_env_file=None).app_env == env


def test_profile_defaults_and_explicit_values(monkeypatch):
    monkeypatch.setenv("APP_ENV", "prod")
    for name, value in PROD_SECRETS.items():
        monkeypatch.setenv(name.upper(), value)
    prod = load_settings(_env_file=None)
    assert (prod.log_format, prod.api_docs_enabled, prod.cors_origins) == ("json", False, [])
    monkeypatch.setenv("API_DOCS_ENABLED", "true")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    explicit = load_settings(_env_file=None)
    assert explicit.api_docs_enabled is True
    assert explicit.cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("APP_ENV", "local")
    monkeypatch.delenv("API_DOCS_ENABLED")
    local = load_settings(_env_file=None)
    assert (local.log_format, local.api_docs_enabled) == ("console", True)
    assert local.redis_prefix == "myapp:local:"


def test_reading_settings_does_not_import_the_database_driver():
    # gunicorn's master imports myapp.settings before forking gevent workers: if that
    # dragged psycopg in, psycopg would pick a blocking wait function in every worker.
    code = (
        "import sys, myapp.settings, myapp.core.logging\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
        "assert 'gevent' not in sys.modules, 'gevent imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=uncovered_environ(),
    )
    assert result.returncode == 0, result.stderr


def documented_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_env_example_documents_exactly_the_settings():
    from myapp.settings import Settings

    fields = {name.upper() for name in Settings.model_fields}
    assert documented_variables() == fields


def test_env_example_with_generated_local_secrets_is_a_valid_local_configuration(
    tmp_path, monkeypatch
):
    for name in documented_variables():
        monkeypatch.delenv(name, raising=False)
    from myapp.devservices.secrets import write_once
    from myapp.settings import Settings

    with pytest.raises(ValidationError) as caught:  # .env.example holds no secret at all
        Settings(_env_file=ROOT / ".env.example")
    assert {"secret_key", "jwt_secret_key"} <= {e["loc"][0] for e in caught.value.errors()}
    local = tmp_path / ".env.local"
    assert write_once(local) and not write_once(local)  # written once, then kept
    assert local.stat().st_mode & 0o777 == 0o600
    settings = Settings(_env_file=(ROOT / ".env.example", local))
    assert settings.app_env == "local"
    assert settings.log_format == "console"
    assert len(settings.jwt_secret_key.get_secret_value()) >= 48


def test_two_checkouts_get_different_local_secrets(tmp_path):
    from myapp.devservices.secrets import write_once

    first, second = tmp_path / "a", tmp_path / "b"
    write_once(first)
    write_once(second)
    assert first.read_text() != second.read_text()


def test_dev_keys_and_weak_admin_password_are_refused_in_prod(monkeypatch):
    monkeypatch.setenv("APP_ENV", "prod")
    for name, value in PROD_SECRETS.items():
        monkeypatch.setenv(name.upper(), value)
    monkeypatch.setenv("ENCRYPTION_KEYS", "dev1:ZGV2LW9ubHktZW5jcnlwdGlvbi1rZXktMzJieXRlcyE=")
    monkeypatch.setenv("BLIND_INDEX_KEY", "ZGV2LW9ubHktYmxpbmQtaW5kZXgta2V5LTMyYnl0ZSE=")
    monkeypatch.setenv("ADMIN_PASSWORD", "dev-only-admin-password")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    for name in ("ENCRYPTION_KEYS", "BLIND_INDEX_KEY", "ADMIN_PASSWORD"):
        assert f"- {name}:" in message
    assert "ZGV2" not in message


def test_malformed_key_ring_is_named_without_its_value(monkeypatch):
    monkeypatch.setenv("ENCRYPTION_KEYS", "k1:dG9vLXNob3J0")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert "- ENCRYPTION_KEYS: a key must be 32 bytes" in str(caught.value)
    assert "dG9vLXNob3J0" not in str(caught.value)


def flask_routes(multiproc_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APP_ENV": "test", "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    return subprocess.run(
        [str(BIN / "flask"), "--app", "myapp", "routes"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_flask_cli_creates_a_missing_prometheus_multiproc_dir(tmp_path):
    missing = tmp_path / "not" / "there" / "yet"
    result = flask_routes(missing)
    assert result.returncode == 0, result.stderr
    assert "/v1/users/me" in result.stdout
    assert missing.is_dir()


def test_flask_cli_names_a_prometheus_multiproc_dir_it_cannot_create(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = flask_routes(blocker / "metrics")
    assert result.returncode == 1
    assert "PROMETHEUS_MULTIPROC_DIR" in result.stderr
    assert "Traceback" not in result.stderr
