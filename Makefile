# Sluice: `make demo` runs the main job, `make test` runs the whole suite. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell PYENV_VERSION=3.12 pyenv which python 2>/dev/null || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
PYTEST_ARGS ?=
# Three test workers on two CPUs: the slow end-to-end tests mostly wait (on servers, rollouts and dvc repro),
# so a third worker brings the whole suite from 21 to 12 minutes here; more CPUs can take more (make test WORKERS=8).
WORKERS ?= 3

.DEFAULT_GOAL := help
.PHONY: help setup lock demo test test-fast lint bench render clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The dev venv installs requirements/dev.lock (every pin and its hash: two clones a month apart get the same
# stack), then the project itself, editable and without dependencies.
$(STAMP): pyproject.toml requirements/dev.lock
	@bash scripts/check-python.sh "$(PYTHON)"
	@test -x $(BIN)/python || "$(PYTHON)" -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP) ## create .venv (Python 3.12) from requirements/dev.lock and install the project in it

lock: setup ## regenerate requirements/*.lock from pyproject.toml (resolves against the package index)
	UV=$(BIN)/uv bash scripts/lock.sh

demo: setup ## the main job: train, serve, promote by canary, roll back, all four strategies, drift -> retrain -> staging -> production; report in reports/demo
	$(BIN)/python -m sluice demo

test: setup ## the whole suite (starts what the tests need; slow end-to-end tests included)
	bash scripts/services.sh
	SLUICE_REQUIRE_SERVICES=1 $(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: setup ## the suite without tests marked slow
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

lint: setup ## ruff, mypy and the import layering contract
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sluice model serving rollout pipelines deployment dashboard demo monitor doctor
	$(BIN)/lint-imports

bench: setup ## side-by-side benchmarks; results in benchmarks/results/
	$(BIN)/python -m benchmarks

render: setup ## render the hera pipelines to pipelines/rendered/ and the monitoring to gitops/monitoring/
	$(BIN)/sluice pipelines render
	$(BIN)/python -m dashboard.monitoring

clean: ## remove pipeline outputs (keeps .venv)
	rm -rf artifacts data/raw data/prepared reports/metrics reports/plots reports/demo mlflow.db mlartifacts
