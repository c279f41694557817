"""The Helm chart's rollout arithmetic and configuration, checked without helm or a cluster.

helm is not installed everywhere the suite runs, so these tests read `values.yaml` (alone,
and with `ci/ci-values.yaml` on top) and the template text where a template hardcodes
something. CI renders the chart and validates the manifests (`lint-deploy` in ci.yml).

Effective values follow the chart and the app: a role's `env` wins over `config`; a key left
empty is not rendered, so the app's profile default (APP_ENV) or field default applies.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from myapp.settings import PROFILE_DEFAULTS, Settings
from tests.conftest import PROD_SECRETS

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "myapp"
TEMPLATES = CHART / "templates"

HTTP_ROLES = ("web", "realtime")
ROLES = ("web", "realtime", "worker", "beat", "migrate")
VALUE_FILES = {
    "defaults": ("values.yaml",),
    "ci": ("values.yaml", "ci/ci-values.yaml"),
}

# Settings the chart deliberately does not carry in its ConfigMap or Secret. Keep it short:
# everything else must be a key of `config`, `secret.data` or a role's `env`.
NOT_IN_CHART = {
    # Baked into the image at build time (docker/Dockerfile: ENV APP_VERSION=${VERSION}).
    "APP_VERSION": "set by the image",
    # Local-disk backends (FILES_STORAGE=local, MAIL_BACKEND=file): pods have a read-only
    # root file system and no shared disk, so the chart uses s3 / log instead.
    "FILES_LOCAL_DIR": "local-disk file storage, not usable in pods",
    "MAIL_FILE_DIR": "local-disk mail backend, not usable in pods",
}


@pytest.fixture(autouse=True)
def _clear_test_redis() -> None:
    """These tests read files only: no app, database or Redis (replaces the suite's fixture)."""


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_values(files: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in files:
        values = _merge(values, yaml.safe_load((CHART / name).read_text()) or {})
    return values


@pytest.fixture(params=sorted(VALUE_FILES))
def values(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_values(VALUE_FILES[request.param])


def template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def settings_env() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def effective(values: dict[str, Any], role: str, name: str) -> Any:
    """The value the app in `role`'s pods reads for `name` (see the module docstring)."""
    env = values[role].get("env") or {}
    # A role's env wins over envFrom (the ConfigMap), even when it is empty.
    value = env[name] if name in env else (values.get("config") or {}).get(name)
    if value is not None and str(value) != "":
        return value
    if name != "APP_ENV":
        profile = PROFILE_DEFAULTS.get(str(effective(values, role, "APP_ENV")).lower(), {})
        if name.lower() in profile:
            return profile[name.lower()]
    return Settings.model_fields[name.lower()].get_default(call_default_factory=True)


def seconds(values: dict[str, Any], role: str, name: str) -> float:
    return float(effective(values, role, name))


def replicas(role: dict[str, Any]) -> int:
    autoscaling = role.get("autoscaling") or {}
    return int(autoscaling["minReplicas"] if autoscaling.get("enabled") else role["replicaCount"])


# --- Rollout --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", HTTP_ROLES)
def test_http_roles_roll_without_losing_capacity(values, role):
    strategy = values[role]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert "toYaml $role.strategy" in template("_deployment.tpl")


@pytest.mark.parametrize("role", HTTP_ROLES)
def test_http_roles_finish_shutting_down_within_the_grace_period(values, role):
    pre_stop = values[role]["preStopSleepSeconds"]
    drain = seconds(values, role, "SHUTDOWN_DRAIN_SECONDS")
    graceful = seconds(values, role, "GUNICORN_GRACEFUL_TIMEOUT")
    grace_period = values[role]["terminationGracePeriodSeconds"]
    # The graceful timeout is counted from SIGTERM and covers the drain.
    assert graceful > drain
    assert pre_stop + drain + graceful < grace_period, (
        f"{role}: {pre_stop} + {drain} + {graceful} >= {grace_period}"
    )
    # The preStop hook sleeps exactly preStopSleepSeconds before SIGTERM.
    assert 'command: ["sleep", "{{ $role.preStopSleepSeconds }}"]' in template("_deployment.tpl")


def test_worker_finishes_its_tasks_within_the_grace_period(values):
    # SIGTERM starts Celery's warm shutdown: running tasks finish, bounded by the hard time
    # limit. No soft-shutdown timeout is configured, so that limit is the whole budget.
    worker = values["worker"]
    pre_stop = worker.get("preStopSleepSeconds", 0)  # the chart gives only HTTP roles one
    hard_limit = seconds(values, "worker", "CELERY_TASK_TIME_LIMIT")
    assert seconds(values, "worker", "CELERY_TASK_SOFT_TIME_LIMIT") < hard_limit
    assert pre_stop + hard_limit < worker["terminationGracePeriodSeconds"], (
        f"worker: {pre_stop} + {hard_limit} >= {worker['terminationGracePeriodSeconds']}"
    )


def test_beat_is_a_singleton_that_is_recreated():
    text = template("_deployment.tpl")
    beat_branch = re.search(
        r'\{\{- if eq \$component "beat" \}\}(.*?)\{\{- else \}\}', text, flags=re.DOTALL
    )
    assert beat_branch, "_deployment.tpl: no beat branch"
    spec = yaml.safe_load(beat_branch.group(1))
    assert spec == {"replicas": 1, "strategy": {"type": "Recreate"}}
    # No HPA and no PDB may scale or protect it.
    assert '"beat"' not in template("hpa.yaml")
    assert '"beat"' not in template("pdb.yaml")


# --- Probes and disruption budgets ----------------------------------------------------------


@pytest.mark.parametrize("role", HTTP_ROLES)
def test_readiness_differs_from_liveness(values, role):
    readiness = values[role]["readinessProbe"]["httpGet"]["path"]
    liveness = values[role]["livenessProbe"]["httpGet"]["path"]
    assert (readiness, liveness) == ("/health/ready", "/health/live")
    text = template("_deployment.tpl")
    assert "readinessProbe:\n            {{- toYaml $role.readinessProbe" in text
    assert "livenessProbe:\n            {{- toYaml $role.livenessProbe" in text


@pytest.mark.parametrize("role", HTTP_ROLES)
def test_disruption_budget_keeps_a_pod_available(values, role):
    pdb = values[role]["pdb"]
    assert values[role]["enabled"] and pdb["enabled"]
    if pdb.get("minAvailable"):
        min_available = int(pdb["minAvailable"])
    else:
        # The template falls back to maxUnavailable; Kubernetes rounds a percentage up.
        count = replicas(values[role])
        unavailable = str(pdb["maxUnavailable"])
        if unavailable.endswith("%"):
            unavailable = math.ceil(count * int(unavailable[:-1]) / 100)
        min_available = count - int(unavailable)
    assert min_available >= 1
    text = template("pdb.yaml")
    assert 'range $component := list "web" "realtime"' in text
    assert '{{- with get $role.pdb "minAvailable" }}\n  minAvailable: {{ . }}' in text
    assert "maxUnavailable: {{ $role.pdb.maxUnavailable }}" in text


# --- Configuration --------------------------------------------------------------------------


def chart_keys(values: dict[str, Any]) -> set[str]:
    keys = set(values["config"]) | set(values["secret"]["data"])
    for role in ROLES:
        keys |= set(values[role].get("env") or {})
    return keys


def test_chart_keys_are_settings_and_secrets_stay_in_the_secret(values):
    assert chart_keys(values) <= settings_env()
    assert set(NOT_IN_CHART) <= settings_env()
    secret_fields = {
        name.upper()
        for name, field in Settings.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    }
    assert secret_fields <= set(values["secret"]["data"])
    assert not secret_fields & set(values["config"])
    assert set(values["secret"]["required"]) <= set(values["secret"]["data"])


def test_every_setting_is_in_the_chart():
    values = load_values(VALUE_FILES["defaults"])
    missing = settings_env() - chart_keys(values) - set(NOT_IN_CHART)
    assert not missing, f"not in the chart's ConfigMap/Secret: {sorted(missing)}"


def test_the_chart_requires_every_secret_the_app_requires(monkeypatch):
    for name in settings_env():
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, app_env="prod")
    required_by_app = {str(error["loc"][0]).upper() for error in caught.value.errors()}
    required_by_chart = set(load_values(VALUE_FILES["defaults"])["secret"]["required"])
    assert required_by_app - required_by_chart == set()


@pytest.mark.parametrize("role", ROLES)
def test_chart_configuration_is_valid_for_the_app(values, role, monkeypatch):
    # What the role's pods get, plus what a deployer must supply (secrets, the bucket).
    for name in settings_env():
        monkeypatch.delenv(name, raising=False)
    env = {
        key: str(value)
        for key, value in (values["config"] | (values[role].get("env") or {})).items()
        if str(value) != ""
    }
    env.setdefault("S3_BUCKET", "deployer-sets-this")
    supplied = {key.lower(): value for key, value in env.items()}
    settings = Settings(_env_file=None, **(PROD_SECRETS | supplied))
    assert settings.app_env == values["config"]["APP_ENV"]
    assert settings.shutdown_drain_seconds == seconds(values, role, "SHUTDOWN_DRAIN_SECONDS")
    assert settings.gunicorn_graceful_timeout == seconds(values, role, "GUNICORN_GRACEFUL_TIMEOUT")
    assert settings.celery_task_time_limit == seconds(values, role, "CELERY_TASK_TIME_LIMIT")
