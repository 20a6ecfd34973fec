# Targets the README relies on: `make serve` and `make test`. Each bootstraps .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/dev.lock
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help serve test lint format typecheck migrate bench scale load chaos clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# uv when present, else pip: both install exactly the locked versions, then the project without deps.
$(STAMP): $(LOCK) pyproject.toml
	@if command -v uv >/dev/null 2>&1; then \
		uv venv --allow-existing --python $(PYTHON) $(VENV) && \
		VIRTUAL_ENV=$(VENV) uv pip sync $(LOCK) && \
		VIRTUAL_ENV=$(VENV) uv pip install --no-deps -e .; \
	else \
		$(PYTHON) -m venv $(VENV) && \
		$(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -r $(LOCK) && \
		$(BIN)/python -m pip install --quiet --no-deps -e .; \
	fi
	@touch $(STAMP)

serve: $(STAMP) ## Start the service on the embedded default (SQLite under ./var, offline model)
	@mkdir -p var workspaces
	$(BIN)/agent-engine serve

# One pytest worker per core (pytest-xdist), each test module kept on one worker (its module
# fixtures, a serve or a model server, start once); then the tests that must run in one process
# (the ``one_process`` mark: schemathesis's items share a node id, which xdist cannot tell apart).
test: $(STAMP) ## Run the whole test suite
	$(BIN)/python -m pytest -n auto --dist loadfile -m "not one_process"
	$(BIN)/python -m pytest -m one_process

lint: $(STAMP) ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src

format: $(STAMP) ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(STAMP) ## Apply migrations to AGENT_ENGINE_DATABASE_URL
	$(BIN)/agent-engine db upgrade

bench: $(STAMP) ## Run the orchestration benchmark (installs the bench extra: DBOS, LangGraph)
	@if command -v uv >/dev/null 2>&1; then \
		VIRTUAL_ENV=$(VENV) uv pip install --quiet -r requirements/bench.lock; \
	else \
		$(BIN)/python -m pip install --quiet -r requirements/bench.lock; \
	fi
	$(BIN)/python -m bench.orchestration $(BENCH_ARGS)
	$(BIN)/python -m bench.key_check
	$(BIN)/python -m bench.sandbox_start
	$(BIN)/python -m bench.replay
	$(BIN)/python -m bench.budgets
	$(BIN)/python -m bench.console
	$(BIN)/python -m bench.watching

scale: $(STAMP) ## List latency at 1k/10k/100k runs and process memory with 1,000 active runs (PostgreSQL)
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

# Seconds measured per concurrency level (after a 1 s warm-up); LOAD_ARGS: more options of
# bench.load (--clients, --servers, --subscribers, --approvers, --markdown).
LOAD_SECONDS ?= 5
load: $(STAMP) ## Load the API: serve on PostgreSQL at 10, 50, 200 clients (LOAD_SECONDS each)
	$(BIN)/python -m bench.load --seconds $(LOAD_SECONDS) $(LOAD_ARGS)

chaos: $(STAMP) ## Faults under a mixed workload, then the invariants (CHAOS_SECONDS=60, CHAOS_SEED)
	$(BIN)/python -m bench.chaos

clean: ## Remove the virtual environment and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
