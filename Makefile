# Every target sets up what it needs: a fresh clone only needs python3 (3.11+) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
# The official zuora-sdk is only a test oracle for Zuora's shapes. It pins an old certifi that
# clashes with Prefect's, so it goes in without its dependencies (its models need none we lack).
ZUORA_SDK := zuora-sdk==3.21.0

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: help install demo test test-full lint format migration bench-report clean prefect-up prefect-down

help:
	@echo "make demo       run the whole pipeline end to end on embedded defaults"
	@echo "make test       lint, type-check and run the test suite (what CI runs)"
	@echo "make test-full  the same with the heavy suites at full size"
	@echo "make bench-report  run every benchmark and write docs/benchmarks.md (ARGS=--quick: small)"
	@echo "make format     apply ruff's formatting and fixes"
	@echo "make migration m='what changed'   write a new Alembic migration"
	@echo "make prefect-up    local Prefect server + deployments + worker (UI http://127.0.0.1:4200)"
	@echo "make prefect-down  stop what prefect-up started"

$(STAMP):
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(ZUORA_SDK)
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

demo: install
	$(BIN)/zuora-sync demo

# With PREFECT_API_URL (and PREFECT_API_KEY) set, uses that server or Prefect Cloud instead
# of starting one. State, logs and PID files: .prefect-local/.
prefect-up: install
	$(BIN)/python -m zuora_sync.prefect_local up

prefect-down:
	@test ! -x $(BIN)/python || $(BIN)/python -m zuora_sync.prefect_local down

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

test-full: lint
	ZS_FULL=1 $(BIN)/pytest

# The benchmarks need a quiet machine: they measure it. matplotlib draws the report's plot.
bench-report: install
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || \
		$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/report.py $(ARGS)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migration: install
	@test -n "$(m)" || (echo "usage: make migration m='what changed'" && exit 2)
	$(BIN)/alembic revision --autogenerate -m "$(m)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache zuora_sync.db*
