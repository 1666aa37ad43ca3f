# Two commands on a fresh machine with Python 3.11+, Node/npm and make:
#   make run    train on the bundled sample, locally (no Azure, no server)
#   make test   the whole test suite (starts Azurite and a Prefect server itself)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# Prefect's ephemeral server needs longer than its default 20 s to migrate a
# fresh SQLite database on a 2-core machine (also set in prefect.toml).
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: run test test-fast bench lint typecheck check install clean aml-smoke step-lock

run: $(BIN)/.synced
	$(BIN)/python flows/train.py $(ARGS)

# Two pytest-xdist workers, each a test session with its own Prefect server and
# Azurite (started only if its tests need them). --dist loadscope keeps a
# module's tests, and so its module-scoped stack (deployments, worker), on one
# worker, in the order tests/conftest.py gives them (longest first).
# One session alone: `.venv/bin/pytest` (or PYTEST_XDIST=-n0).
PYTEST_XDIST ?= -n 2 --dist loadscope --no-loadscope-reorder

test: $(BIN)/.synced node_modules/.installed
	$(BIN)/pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

# Unit tests and the flows' orchestration on an in-process compute: no Azurite,
# no venvs, a Prefect server per worker (launched at collection, it boots meanwhile).
test-fast: $(BIN)/.synced
	$(BIN)/pytest $(PYTEST_XDIST) -m "not slow and not integration" $(PYTEST_ARGS)

# About 6 minutes on 2 cores; results are recorded in BENCHMARKS.md.
bench: $(BIN)/.synced
	$(BIN)/python bench/pipeline_bench.py
	$(BIN)/python bench/score_bench.py

# The train and score flows on a real Azure ML workspace, configured in .env
# (or AML_SMOKE_ENV_FILE); skipped when it is not. See docs/aml.md.
aml-smoke: $(BIN)/.synced
	$(BIN)/pytest -m aml_live -p no:cacheprovider tests/live $(PYTEST_ARGS)

# Regenerate aml_steps/requirements.lock from uv.lock (after `uv lock`).
step-lock: $(BIN)/.synced
	$(BIN)/python -m flows.step_lock

lint: $(BIN)/.synced
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.synced
	$(BIN)/mypy

check: lint typecheck test

install: $(BIN)/.synced node_modules/.installed

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"

# --compile-bytecode: every Python process of a run or a test (the CLI, the
# Prefect server and worker, each flow-run process) would otherwise compile
# Prefect, pandas and the rest from source again wherever
# PYTHONDONTWRITEBYTECODE is set (as on CI): about 5 CPU s a process.
$(BIN)/.synced: $(BIN)/uv pyproject.toml uv.lock somemodel/pyproject.toml
	$(BIN)/uv sync --frozen --compile-bytecode --python $(BIN)/python
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

clean:
	rm -rf $(VENV) node_modules .cache .datastore
