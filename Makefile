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

# The alert tests talk to a real Alertmanager: Debian's prometheus-alertmanager (apt-get, as root
# or through sudo). Elsewhere install Alertmanager yourself; its tests skip without apt-get.
ALERTMANAGER_STAMP := $(VENV)/.alertmanager-stamp
$(ALERTMANAGER_STAMP): | $(STAMP)
	@if command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus-alertmanager; \
	else echo "no apt-get: install Alertmanager to run the alert delivery tests"; fi
	@touch $@

test: install $(ALERTMANAGER_STAMP)
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
