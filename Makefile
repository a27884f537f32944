SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := node audit bench tests

PYTEST_ARGS ?=
ARGS ?=

.PHONY: venv lint postgres-binaries ha-tools go-c2sp test demo bench clean

# The stamp is newer than pyproject.toml once the install succeeded, so repeated
# `make test` runs skip the install; editing dependencies re-runs it.
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

postgres-binaries:
	bash scripts/ensure-postgres

# HAProxy, Patroni, etcd and iproute2 for the high-availability test bed (tests/ha/).
ha-tools:
	bash scripts/ensure-ha-tools

# Go's reference C2SP note and RFC 6962 tree code, to check the audit log's formats.
go-c2sp:
	bash scripts/ensure-go-c2sp

test: venv postgres-binaries ha-tools go-c2sp
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

demo: venv
	$(BIN)/puente demo $(ARGS)

bench: venv
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
