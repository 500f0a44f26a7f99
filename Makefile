# Two commands: `make run` (whole pipeline on the embedded default, CPU) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup run test test-fast lint format clean-outputs services-up services-down services-status

setup:  ## create/refresh .venv (skipped while the dependency hash is unchanged)
	@scripts/setup_venv.sh

run: setup  ## download -> align -> train -> evaluate -> export, then show the metrics
	dvc repro
	dvc metrics show

test: setup  ## the whole test suite (unit, integration with real servers, e2e dvc repro)
	python -m pytest

test-fast: setup  ## unit tests only
	python -m pytest -m unit

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
