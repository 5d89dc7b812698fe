# Two commands on a fresh machine: `make run` (set up, train on the embedded dataset) and
# `make test` (set up, lint, run every test). Everything lives in .venv, pinned by requirements.lock.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-fast lint format ui lock bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev,jax]'
	touch $@

run: setup  ## train, evaluate and log one run with the default config
	$(PY) -m pipeline $(ARGS)

test: setup lint  ## every test, slow end-to-end ones included (what CI runs)
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

test-fast: setup  ## the quick unit tests only
	$(PY) -m pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

ui: setup  ## the MLflow UI on the local store, http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db

bench: setup  ## the benchmarks in bench/ (minutes; figures in docs/benchmarks.md)
	$(PY) bench/ingest.py
	$(PY) bench/overhead.py
	$(PY) bench/train.py --jax

lock: setup  ## re-pin every dependency after changing pyproject.toml
	$(PY) -m pip freeze --exclude-editable | grep -v '^notmnist-pipeline' > requirements.lock

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
