# Tandem. `make run` starts everything on http://127.0.0.1:8080; `make test` runs every test.
# Both install what they need first: a Python venv in .venv, the npm packages, the browser
# bundles, and Debian's chromium for the browser tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := libs/protocol libs/runtime services/ingest services/live services/signal services/sessions
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(PACKAGES))
WEB_SOURCES := $(shell find web/tracker web/assist web/dashboard web/demo -type f 2>/dev/null) web/build.mjs
PYTEST_ARGS ?=

.PHONY: run test lint install web chromium prometheus deploy bench clean

run: install web
	$(BIN)/python -m tandem run

test: install web chromium prometheus
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install web
	$(BIN)/ruff check libs services tandem tests bench deploy
	$(BIN)/ruff format --check libs services tandem tests bench deploy
	cd web && npm run --silent typecheck

install: $(VENV)/.installed

$(VENV)/.installed: $(PYPROJECTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(addprefix -e ,$(PACKAGES)) -e '.[test]'
	touch $@

web: web/dist/.built

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

web/dist/.built: web/node_modules/.installed $(WEB_SOURCES)
	cd web && node build.mjs
	touch $@

# Debian's chromium drives the browser tests (Playwright uses it through executable_path).
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "Installing Debian's chromium (needs root)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# Debian's prometheus scrapes a test server in tests/deploy (PromQL of the Grafana dashboard).
prometheus:
	@if ! command -v prometheus >/dev/null 2>&1; then \
		echo "Installing Debian's prometheus (needs root)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

# Render the Kubernetes manifests in deploy/k8s/rendered/ and the settings table in docs/OPERATIONS.md.
deploy: install
	$(BIN)/python deploy/render.py
	$(BIN)/python deploy/settings_table.py

bench: install web chromium
	$(BIN)/python -m bench.live_latency
	$(BIN)/python -m bench.assist_latency
	$(BIN)/python -m bench.ingest_load
	$(BIN)/python -m bench.tracker_cost

clean:
	rm -rf $(VENV) web/node_modules web/dist .data
