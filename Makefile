# The two commands that matter: `make dev` runs the whole pipeline, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test dev bench migrate clean-state

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest

dev: install
	$(VENV)/bin/metrics-pipeline dev

migrate: install
	$(VENV)/bin/metrics-pipeline migrate

bench: install
	$(PY) benchmarks/load.py
	$(PY) benchmarks/rollups.py
	$(PY) benchmarks/bi_queries.py

clean-state:
	-$(VENV)/bin/metrics-pipeline db stop
	rm -rf .metrics_pipeline
