"""The chart's Prometheus alerting rules (`charts/myapp/files/prometheus-rules.yaml`).

promtool (Debian's `prometheus` package; `.ci/run` installs it) checks the rules and runs
their unit tests (`prometheus-rules.test.yaml`); those two tests skip where it is missing.
The rest needs no promtool: every alert the operations issue asks for exists, each has
the labels and annotations the runbook needs, each has at least one unit-test case where
it fires and one where it stays silent, and every metric the rules read is one the app
exports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "myapp"
RULES = CHART / "files" / "prometheus-rules.yaml"
RULE_TESTS = CHART / "files" / "prometheus-rules.test.yaml"
TEMPLATE = CHART / "templates" / "prometheusrule.yaml"
VALUES = CHART / "values.yaml"

#: What the operations issue asks to alert on, and the rule that does it.
REQUIRED_ALERTS = {
    "error ratio": "MyappHighErrorRatio",
    "p99 latency": "MyappHighLatencyP99",
    "readiness flapping": "MyappReadinessFlapping",
    "outbox backlog age": "MyappOutboxBacklogOld",
    "dead letters growing": "MyappDeadLettersGrowing",
    "beat not running": "MyappBeatNotRunning",
    "workers absent": "MyappWorkersAbsent",
    "sockets dropping": "MyappSocketsDropping",
}
SEVERITIES = {"warning", "critical"}
RUNBOOK = re.compile(r"^docs/operations\.md#alert-[a-z0-9-]+$")
#: Series Prometheus makes itself, not the app.
PROMETHEUS_SERIES = {"up"}

PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan", "atan2"}
)
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*(\()?")
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def unit_cases() -> dict[str, dict[str, int]]:
    """For each alert name: how many evaluations expect it firing, how many silent."""
    cases: dict[str, dict[str, int]] = {}
    for test in load(RULE_TESTS)["tests"]:
        for check in test.get("alert_rule_test", []):
            kind = "firing" if check.get("exp_alerts") else "silent"
            counts = cases.setdefault(check["alertname"], {"firing": 0, "silent": 0})
            counts[kind] += 1
    return cases


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords and label names left out)."""
    text = GROUPING.sub(" ", STRING.sub('""', expr))
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    return {
        name
        for name, call in IDENTIFIER.findall(text)
        if not call and name.lower() not in PROMQL_WORDS
    }


def exported_series(app: Flask) -> set[str]:
    """Every sample name the app's /metrics can hold (also families with no sample yet)."""
    registry = app.extensions["myapp.metrics_registry"]
    names = set()
    for family in registry.collect():
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus); CI installs it")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


# --- promtool -------------------------------------------------------------------------------


def test_promtool_accepts_the_rules():
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


# --- Without promtool -----------------------------------------------------------------------


def test_the_metric_name_reader():
    expr = (
        'sum by (namespace, le) (rate(flask_http_request_duration_seconds_bucket{route!~"/h.*"}'
        '[5m])) > bool 0 or on () absent(up{job="x"} == 1) unless x_total offset 10m'
    )
    assert metric_names(expr) == {"flask_http_request_duration_seconds_bucket", "up", "x_total"}


def test_every_alert_the_issue_asks_for_exists():
    names = [rule.get("alert") for rule in alerting_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    missing = {topic: name for topic, name in REQUIRED_ALERTS.items() if name not in names}
    assert not missing


def test_every_rule_is_an_alert_with_severity_duration_and_runbook():
    for rule in alerting_rules():
        name = rule.get("alert")
        assert name, f"recording rules are not expected here: {rule}"
        assert rule.get("for"), f"{name}: no `for`"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert {"summary", "description", "runbook"} <= annotations.keys(), name
        assert RUNBOOK.match(annotations["runbook"]), f"{name}: {annotations['runbook']}"
        anchor = annotations["runbook"].partition("#")[2]
        assert anchor in runbook_anchors(), f"{name}: docs/operations.md has no #{anchor}"


def runbook_anchors() -> set[str]:
    """The anchors GitHub gives the headings of docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    assert load(RULE_TESTS)["rule_files"] == [RULES.name]
    cases = unit_cases()
    alerts = {rule["alert"] for rule in alerting_rules()}
    assert set(cases) <= alerts, f"tests for unknown alerts: {set(cases) - alerts}"
    lacking = {
        name: cases.get(name, {"firing": 0, "silent": 0})
        for name in sorted(alerts)
        if not (cases.get(name, {}).get("firing") and cases.get(name, {}).get("silent"))
    }
    assert not lacking, f"alerts without a firing and a silent case: {lacking}"


def test_every_metric_the_rules_read_is_exported_by_the_app(app):
    exported = exported_series(app) | PROMETHEUS_SERIES
    for rule in alerting_rules():
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in its expression"
        assert used <= exported, f"{rule['alert']}: not exported: {sorted(used - exported)}"


def test_the_chart_renders_the_rules_as_a_prometheusrule_off_by_default():
    template = TEMPLATE.read_text(encoding="utf-8")
    assert "kind: PrometheusRule" in template
    assert '.Files.Get "files/prometheus-rules.yaml"' in template
    assert "(.Values.prometheusRule | default dict).enabled" in template
    settings = load(VALUES)["prometheusRule"]
    assert settings["enabled"] is False
    assert isinstance(settings["labels"], dict)
