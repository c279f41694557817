"""The Grafana dashboard of the chart (`charts/myapp/files/grafana-dashboard.json`): it has
the structure Grafana loads, and every PromQL expression in it names metrics (and labels)
the app really exports, checked against `/metrics` scraped after a workload.

The app's registry holds every metric family the app defines, the worker-side ones too
(tasks, dead letters, outbox), so the in-process `/metrics` lists them all: labelled
families without samples still show their HELP/TYPE lines.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from myapp.core.tasks import celery_app
from tests.support import tasks as support_tasks

CHART = Path(__file__).resolve().parent.parent / "charts" / "myapp"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
TEMPLATE = CHART / "templates" / "grafana-dashboard.yaml"

#: PromQL words that are not metric names.
PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan", "atan2"}
)
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*")
#: Sample names of each family type, as Prometheus stores them (the parser strips them).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
#: Label values the dashboard selects that this in-process workload cannot produce:
#: a retry needs a real worker (eager runs never retry), see `BaseTask._retry_or_give_up`.
UNREACHABLE_VALUES = {("outcome", "retried")}

VALID_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "text"}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return panels


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query."""
    return [
        (panel["title"], target["expr"])
        for panel in data_panels(dashboard)
        for target in panel["targets"]
    ]


# --- PromQL ----------------------------------------------------------------------------------


def _without_grafana_variables(expr: str) -> str:
    return re.sub(r"\$\{?\w+\}?", "1m", expr)


def _closing_brace(text: str, start: int) -> int:
    """Index of the "}" closing the "{" at `start` (braces inside strings do not count)."""
    position = start + 1
    while text[position] != "}":
        quoted = STRING.match(text, position)
        position = quoted.end() if quoted else position + 1
    return position


def parse_promql(expr: str) -> tuple[list[tuple[str, list[tuple[str, str, str]]]], set[str]]:
    """The selectors of `expr` as (metric name, [(label, operator, value)]), and the labels
    its `by`/`without`/`on`/`ignoring`/`group_*` clauses name.

    Enough PromQL for dashboards: no nested braces, metric names written out (not
    `{__name__=...}`)."""
    text = _without_grafana_variables(expr)
    grouping = {
        label.strip()
        for _, labels in GROUPING.findall(STRING.sub('""', text))
        for label in labels.split(",")
        if label.strip()
    }
    text = GROUPING.sub(" ", text)
    selectors: list[tuple[str, list[tuple[str, str, str]]]] = []
    # Walk the text: an identifier not followed by "(" and not a keyword is a metric name;
    # a "{...}" right after it holds its matchers; strings and "[...]" ranges are skipped.
    position = 0
    while position < len(text):
        char = text[position]
        if char in "\"'":
            position = STRING.match(text, position).end()
            continue
        if char == "[":
            position = text.index("]", position) + 1
            continue
        if char == "{":
            raise AssertionError(f"a selector without a metric name in {expr!r}")
        match = IDENTIFIER.match(text, position)
        if match is None:
            position += 1
            continue
        word, position = match.group(0), match.end()
        rest = text[position:].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        matchers: list[tuple[str, str, str]] = []
        if rest.startswith("{"):
            start = text.index("{", position)
            end = _closing_brace(text, start)
            body = text[start + 1 : end]
            matchers = [(label, op, value) for label, op, value in MATCHER.findall(body)]
            leftover = MATCHER.sub("", body).replace(",", "").strip()
            assert not leftover, f"unparsed matcher text {leftover!r} in {expr!r}"
            position = end + 1
        selectors.append((word, matchers))
    return selectors, grouping


@pytest.mark.parametrize(
    ("expr", "selectors", "grouping"),
    [
        (
            'histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{status=~"5..",a="}"}'
            "[$__rate_interval])))",
            [("x_bucket", [("status", "=~", "5.."), ("a", "=", "}")])],
            {"le", "route"},
        ),
        (
            "sum(rate(a_total[5m])) / on (job) group_left (x) sum(b) > bool 1e3",
            [("a_total", []), ("b", [])],
            {"job", "x"},
        ),
        ("max(outbox_backlog) offset 5m", [("outbox_backlog", [])], set()),
        ("sum(increase(c_total[$__range])) without (pod)", [("c_total", [])], {"pod"}),
    ],
)
def test_the_promql_reader_finds_metric_names_and_labels(expr, selectors, grouping):
    assert parse_promql(expr) == (selectors, grouping)


# --- Structure -------------------------------------------------------------------------------


def test_the_dashboard_has_the_structure_grafana_loads():
    dashboard = load_dashboard()
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard.get("id") is None  # provisioned dashboards get their id from Grafana
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")

    ids = [panel["id"] for panel in dashboard["panels"]]
    ids += [child["id"] for panel in dashboard["panels"] for child in panel.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    refs_seen = set()
    for panel in dashboard["panels"]:
        assert isinstance(panel["id"], int) and panel["id"] > 0
        assert panel["type"] in VALID_TYPES, panel
        assert isinstance(panel["title"], str) and panel["title"]
        grid = panel["gridPos"]
        assert set(grid) >= {"h", "w", "x", "y"} and all(isinstance(v, int) for v in grid.values())
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the grid"
    for panel in data_panels(dashboard):
        assert panel["type"] != "row"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["fieldConfig"]["defaults"]["unit"], f"{panel['title']} has no unit"
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']} repeats a refId"
        for target in panel["targets"]:
            assert isinstance(target["expr"], str) and target["expr"].strip()
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            refs_seen.add((panel["id"], target["refId"]))
    assert refs_seen


def test_no_two_panels_overlap():
    cells: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_chart_ships_the_dashboard_as_a_sidecar_configmap_off_by_default():
    template = TEMPLATE.read_text(encoding="utf-8")
    assert "(.Values.grafanaDashboard | default dict).enabled" in template
    assert '.Files.Get "files/grafana-dashboard.json"' in template
    assert '(dict "grafana_dashboard" "1")' in template
    assert "myapp.json:" in template
    assert template.count("{{") == template.count("}}")
    values = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert not re.search(r"(?m)^grafanaDashboard:\n(?:  .*\n)*  enabled: true", values)


# --- Against the app's /metrics --------------------------------------------------------------


def run_workload(client, app) -> None:
    """Requests (one route answered, one failed login, the login limit reached) and task
    runs (one success, one failure that becomes a dead letter)."""
    assert client.get("/health/live").status_code == 200
    statuses = []
    while 429 not in statuses and len(statuses) < 15:  # wrong passwords until limited
        answer = client.post(
            "/v1/auth/login", json={"email": "nobody@dashboard.test", "password": "wrong-1234"}
        )
        statuses.append(answer.status_code)
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    tasks = celery_app(app).tasks
    assert tasks[support_tasks.record_event.name].apply(args=[{"kind": "dashboard"}]).successful()
    assert tasks[support_tasks.flaky.name].apply(args=["dashboard", "note"]).failed()


def scrape(client) -> tuple[dict[str, set[str]], dict[str, set[tuple[str, str]]]]:
    """Every sample name /metrics can hold, with the labels and label values seen on it."""
    response = client.get("/metrics")
    assert response.status_code == 200
    labels: dict[str, set[str]] = {}
    values: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for suffix in SUFFIXES.get(family.type, ("",)):
            labels.setdefault(family.name + suffix, set())
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            values[sample.name].update(sample.labels.items())
    return labels, values


def test_every_expression_names_metrics_and_labels_the_app_exports(client, app):
    run_workload(client, app)
    exported, seen_values = scrape(client)
    problems = []
    checked_labels = 0
    for title, expr in expressions(load_dashboard()):
        selectors, grouping = parse_promql(expr)
        assert selectors, f"{title}: no metric in {expr!r}"
        for name, matchers in selectors:
            if name not in exported:
                problems.append(f"{title}: {name} is not exported")
                continue
            if not exported[name]:
                continue  # a labelled family without samples yet: its labels are unknown
            for label, operator, value in matchers:
                checked_labels += 1
                if label not in exported[name]:
                    problems.append(f"{title}: {name} has no label {label}")
                elif (
                    operator == "="
                    and (label, value) not in seen_values[name]
                    and (label, value) not in UNREACHABLE_VALUES
                ):
                    problems.append(f"{title}: no {name}{{{label}={value!r}}} after the workload")
        known = [exported.get(name, set()) for name, _ in selectors]
        if all(known):
            for label in grouping:
                checked_labels += 1
                if not any(label in labels for labels in known):
                    problems.append(f"{title}: no metric of {expr!r} has the label {label}")
    assert not problems, "\n".join(problems)
    assert checked_labels > 20  # the workload gave the HTTP and task families samples


def test_the_dashboard_covers_the_operations_metrics():
    used = {name for _, expr in expressions(load_dashboard()) for name, _ in parse_promql(expr)[0]}
    assert used >= {
        "flask_http_request_duration_seconds_count",
        "flask_http_request_duration_seconds_bucket",
        "ratelimit_storage_errors_total",
        "cache_errors_total",
        "sse_publish_errors_total",
        "outbox_backlog",
        "outbox_oldest_age_seconds",
        "celery_dead_letters_total",
        "celery_tasks_total",
        "celery_task_runtime_seconds_bucket",
        "socketio_connected_clients",
        "sse_open_streams",
    }
