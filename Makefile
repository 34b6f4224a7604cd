# Two set-up commands (README): `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV   ?= .venv
UV_VERSION ?= 0.13.9
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint locks bench airflow protos clean-var

# The environment is rebuilt only when the lock or the package metadata change.
$(STAMP): requirements.lock setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	@echo "installing the lock into $(VENV) (first time: a few minutes)"
	@$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	@$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/towerflow demo

test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check --quiet .
	@$(BIN)/ruff check dags/ --select AIR3
	@$(BIN)/mypy

# Recompile the locks from setup.cfg with uv $(UV_VERSION); existing pins stay unless a range in
# setup.cfg moves them (`make locks UV_ARGS=--upgrade` moves them all). requirements.lock (every
# role + dev) is what `make` and CI install. The role locks take its pins (-c), so each is a subset
# of it: requirements/gateway.lock (the slim gateway image, Dockerfile.gateway) and
# requirements/production.lock (every role, no dev tools: the main image).
COMPILE = $(BIN)/uv pip compile -q --python-version 3.11 --custom-compile-command "make locks" $(UV_ARGS) setup.cfg
ROLE_LOCK = -c requirements.lock --override requirements/overrides.txt
locks: | $(BIN)/uv
	$(COMPILE) --extra all --extra dev -o requirements.lock
	$(COMPILE) --extra gateway $(ROLE_LOCK) -o requirements/gateway.lock
	$(COMPILE) --extra all $(ROLE_LOCK) -o requirements/production.lock

$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

# Airflow UI with the project's DAGs ($$TOWERFLOW_HOME/airflow, SQLite unless TOWERFLOW_AIRFLOW_DB_URL
# names PostgreSQL); prints the URL and the admin password once healthy; Ctrl-C stops it.
airflow: $(STAMP)
	@$(BIN)/towerflow airflow standalone

# Every benchmark, into one fresh results file, then the table of docs/performance.md rendered from it.
BENCH_OUT ?= var/bench/results.json
bench: $(STAMP)
	@mkdir -p $(dir $(BENCH_OUT)) && rm -f $(BENCH_OUT)
	@$(BIN)/towerflow bench all --out $(BENCH_OUT)
	@$(BIN)/towerflow bench-report $(BENCH_OUT)

# TF Serving's API descriptors for the gateway's client, regenerated after upgrading
# tensorflow-serving-api (tests/serving/test_tfs_descriptors.py fails while they differ).
protos: $(STAMP)
	@$(BIN)/python -m tools.tfs_descriptors

clean-var:
	rm -rf var
