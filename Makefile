# Paddock developer entry points. Everything runs from the virtualenv in .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
PYTEST_ARGS ?=

# Services the integration tests and benchmarks run against (see scripts/start-services.sh).
SERVICE_ENV := DATABASE_URL=postgres://paddock:paddock@127.0.0.1:5432/paddock \
	REDIS_URL=redis://127.0.0.1:6379/15

.PHONY: venv demo test test-fast fuzz bench chaos lint format clean

venv: $(VENV)/.installed

# python3-venv (and the build packages) must be there before the venv can be made.
$(BIN)/python:
	scripts/setup-system.sh demo
	$(PY) -m venv $(VENV)

# The stamp makes re-runs instant; pip only runs again when requirements.txt changes.
# libvirt-python compiles against libvirt-dev, so the system packages come first.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	scripts/setup-system.sh demo
	$(BIN)/pip install -r requirements.txt
	touch $@

# PADDOCK_DEMO=1 allows a generated local SECRET_KEY and seeds the demo login (admin/admin).
demo: venv
	PADDOCK_DEMO=1 PORT=$(PORT) $(BIN)/python manage.py demo

test: venv
	scripts/setup-system.sh test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(SERVICE_ENV) $(BIN)/pytest $(PYTEST_ARGS)

# SQLite, in-process broker, no system services.
test-fast:
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -m "not integration and not browser" $(PYTEST_ARGS)

# Schemathesis over the whole API for a release: many examples per operation plus the stateful
# run over the schema's links, as a platform admin, an operator and a viewer (in-process, SQLite,
# the simulated host). The suite runs the same test bounded (a few examples per operation).
FUZZ_EXAMPLES ?= 200
fuzz: venv
	env -u DATABASE_URL -u REDIS_URL PADDOCK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PADDOCK_FUZZ_STATEFUL=1 \
		$(BIN)/pytest tests/api/test_schemathesis.py -s -p no:cacheprovider --timeout=0 $(PYTEST_ARGS)

bench: venv
	scripts/setup-system.sh test
	set -e; for f in $(sort $(wildcard benchmarks/*.py)); do \
		echo "== $$f"; \
		$(SERVICE_ENV) PYTHONPATH=$(CURDIR) $(BIN)/python $$f; \
	done

# Faults on the production shape (kill -9 web/worker/beat/watcher, Redis restarted empty,
# PostgreSQL restarted) against a private PostgreSQL cluster and redis-server it starts itself
# and the real libvirtd; CHAOS_TRIALS per fault (10), CHAOS_FAULTS to pick some. See docs/faults.md.
chaos: venv
	scripts/setup-system.sh test
	$(BIN)/python scripts/chaos.py

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var staticfiles .pytest_cache
