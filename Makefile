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

# System packages the tests use for real: Debian's prometheus-alertmanager (the alert delivery tests
# talk to a real Alertmanager), prometheus (a real Prometheus scrapes the API's /metrics; its
# promtool checks prometheus/rules.yml) and docker-compose (`docker-compose config` validates
# docker-compose.yml; there is no Docker engine in CI). Installed with apt-get, as root or through
# sudo, when missing. Elsewhere install them yourself; their tests skip without apt-get.
SYSTEM_STAMP := $(VENV)/.system-packages-stamp
$(SYSTEM_STAMP): Makefile | $(STAMP)  # a package added here is installed on the next run
	@missing=""; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "no apt-get: install$$missing to run every test"; fi
	@touch $@

test: install $(SYSTEM_STAMP)
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
