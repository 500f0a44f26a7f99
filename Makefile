# Two commands: `make run` (whole pipeline on the embedded default, CPU) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup run test test-fast lint format clean-outputs services-up services-down services-status

setup:  ## create/refresh .venv (skipped while the dependency hash is unchanged)
	@scripts/setup_venv.sh

run: setup  ## download -> align -> train -> evaluate -> export, then summarize the run
	dvc repro
	arcflow summary

# pytest-xdist (TEST_WORKERS processes, below): a test module stays on one process (its
# module-scoped fixtures, e.g. the e2e pipeline run, are built once) and the service stack is
# shared. Modules go out longest first, in the order tests/conftest.py gives them
# (tests/module_seconds.json).
# One more xdist worker than cores on small machines: some tests wait on servers, leases and
# schedules, and the third worker fills that time (2 cores: 89 % -> 97 % busy, BENCHMARKS.md).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); if [ $$n -le 4 ]; then echo $$((n + 1)); else echo auto; fi)
PYTEST := python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: setup  ## the whole test suite (unit, integration with real servers, e2e dvc repro)
	$(PYTEST)

test-fast: setup  ## unit tests only
	$(PYTEST) -m unit

lint: setup
	ruff check .
	ruff format --check .

format: setup
	ruff format .
	ruff check --fix .

clean-outputs:  ## remove pipeline outputs (DVC cache and MLflow store are kept)
	rm -rf data/raw data/aligned models metrics plots

services-up: setup  ## local stack without Docker: moto S3, MLflow, Prefect (then: source .services/stack.env)
	python -m infra.local.stack up --dir .services

services-down:  ## stop the local stack
	@if [ -x .venv/bin/python ]; then .venv/bin/python -m infra.local.stack down --dir .services; fi

services-status: setup  ## is the local stack up? (its URLs and process ids)
	python -m infra.local.stack status --dir .services
