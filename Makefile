# Two commands on a fresh machine: `make run` (set up, train on the embedded dataset) and
# `make test` (set up, lint, run every test). Everything lives in .venv, installed by uv
# (pinned, bootstrapped into .tools/) at the versions and hashes of uv.lock.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 5000
UV_VERSION ?= 0.13.9
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
UV_STAMP := $(TOOLS)/.uv-$(UV_VERSION)
# the extras of the development environment (requirements.lock is exported from the same set)
EXTRAS := --extra dev --extra jax --extra postgres
# uv works with $(PYTHON) and the venv at $(VENV); it never downloads an interpreter
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# test processes in parallel (pytest-xdist; one per core of the 2-core machine)
WORKERS ?= 2
# Branch coverage of pipeline/ by the whole suite (subprocess runs included) must not fall
# below this floor, set from what was measured (docs/benchmarks.md has the history).
COVERAGE_FLOOR ?= 90

.PHONY: help setup run test test-fast lint format ui lock bench clean

help:  ## list the targets
	@awk 'BEGIN {FS = ":.*?## "} /^[a-z-]+:.*?## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP)  ## make .venv with the pinned dependencies and the package (editable)

$(UV_STAMP):
	rm -rf $(TOOLS)
	$(PYTHON) -m pip install --quiet --target $(TOOLS) uv==$(UV_VERSION)
	touch $@

# exactly uv.lock (--frozen: never re-resolve here), the project editable
$(STAMP): pyproject.toml uv.lock $(UV_STAMP)
	$(UV) sync --quiet --frozen --python $(PYTHON) $(EXTRAS)
	touch $@

run: setup  ## train, evaluate and log one run with the default config (ARGS="..." overrides)
	$(PY) -m pipeline $(ARGS)

# --dist loadfile: a file's tests share a worker (and its session fixtures, such as the
# trained champion); coverage combines every worker's and subprocess's data at the end.
test: setup lint  ## lint, then every test, slow end-to-end ones included, with coverage (CI)
	$(PY) -m pytest -m "slow or not slow" -n $(WORKERS) --dist loadfile --durations=25 \
		--cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR) $(ARGS)

test-fast: setup  ## the quick unit tests only
	$(PY) -m pytest $(ARGS)

lint: setup  ## ruff (lint and format check) and mypy (strict types)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup  ## fix what ruff can fix, and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

ui: setup  ## the MLflow UI on the local store at http://127.0.0.1:5000 (make ui PORT=5001)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --port $(PORT)

bench: setup  ## the benchmarks in bench/ (minutes; figures in docs/benchmarks.md)
	$(PY) bench/ingest.py
	$(PY) bench/overhead.py
	$(PY) bench/run_cost.py
	$(PY) bench/train.py --jax
	$(PY) bench/predict.py
	$(PY) bench/search.py
	$(PY) bench/serve.py

# uv lock keeps every version already in uv.lock that pyproject.toml still allows;
# requirements.lock is the same pins for pip (`pip install -c`, as docker/train.Dockerfile does).
lock: $(UV_STAMP)  ## re-pin after changing pyproject.toml (uv.lock, and requirements.lock from it)
	$(UV) lock --python $(PYTHON)
	$(UV) export --quiet --frozen --no-hashes --no-annotate --no-emit-project $(EXTRAS) \
		-o requirements.lock

clean:  ## remove run folders and tool caches (never mlruns/)
	rm -rf outputs multirun .pytest_cache .ruff_cache .mypy_cache .coverage .coverage.*
