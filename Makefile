# The two commands: `make dev` runs the stack, `make test` checks everything.
# Both install what they need into .venv and, when PostgreSQL/Redis do not answer at
# DATABASE_URL/REDIS_URL, start real embedded servers under .devdata/ (stopped on exit).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export FLASK_APP := myapp
SERVICES := $(BIN)/python -m myapp.devservices run --state-dir .devdata
LOCAL_SECRETS := .env.local

.PHONY: help install dev serve test lint format lint-deploy migrate seed clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-otel.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed ## Create .venv with runtime and dev dependencies

$(LOCAL_SECRETS): | $(VENV)/.installed
	$(BIN)/python -m myapp.devservices.secrets $@

dev: install $(LOCAL_SECRETS) ## Run web (REST + Socket.IO on :$(PORT)), Celery worker and beat
	$(SERVICES) --create-db -- $(MAKE) --no-print-directory serve

serve: # (inside `dev`, once PostgreSQL and Redis answer)
	$(BIN)/flask db upgrade
	$(BIN)/flask seed
	$(BIN)/honcho start --procfile Procfile --port $(PORT)

# Two pytest workers per core: the slow tests mostly wait on the servers and workers they
# start, so a core has room for a second one.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))

test: install lint ## Lint, then the whole test suite with coverage
	$(SERVICES) -- $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --cov --cov-report=term

lint: install ## ruff check + ruff format --check + import contracts (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=. $(BIN)/lint-imports --no-cache

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lint-deploy: ## Static checks of Dockerfile, compose, workflows and chart values
	bash .ci/lint-deploy.sh

migrate: install $(LOCAL_SECRETS) ## Apply migrations to DATABASE_URL
	$(SERVICES) --create-db -- $(BIN)/flask db upgrade

seed: install $(LOCAL_SECRETS) ## Seed reference data into DATABASE_URL
	$(SERVICES) --create-db -- $(BIN)/flask seed

clean: ## Remove .venv, embedded server data and caches
	rm -rf $(VENV) .devdata .coverage htmlcov
