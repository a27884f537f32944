SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := node audit bench tests
# Python scripts without a .py suffix, which ruff and mypy only check when named.
LINT_SCRIPTS := scripts/check-i18n

PYTEST_ARGS ?=
ARGS ?=

.PHONY: venv lint postgres-binaries ha-tools go-c2sp browser test demo bench clean

# The stamp is newer than pyproject.toml once the install succeeded, so repeated
# `make test` runs skip the install; editing dependencies re-runs it.
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The translation check runs once the web interface has catalogs
# (node/**/locale/<lang>/LC_MESSAGES/messages.po); how to update them: babel.cfg.
lint: venv
	$(BIN)/ruff check $(LINT_PATHS) $(LINT_SCRIPTS)
	$(BIN)/ruff format --check $(LINT_PATHS) $(LINT_SCRIPTS)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy $(LINT_SCRIPTS)
	if [[ -n "$$(find node -path '*/locale/*/LC_MESSAGES/messages.po' -print -quit)" ]]; then \
		$(BIN)/python scripts/check-i18n; \
	fi

postgres-binaries:
	bash scripts/ensure-postgres

# HAProxy, Patroni, etcd and iproute2 for the high-availability test bed (tests/ha/).
ha-tools:
	bash scripts/ensure-ha-tools

# Go's reference C2SP note and RFC 6962 tree code, to check the audit log's formats.
go-c2sp:
	bash scripts/ensure-go-c2sp

# Debian's Chromium and fonts for the browser tests (Playwright launches it by path;
# it cannot download a browser here). axe-core comes with the dev dependencies.
browser:
	bash scripts/ensure-chromium

test: venv postgres-binaries ha-tools go-c2sp browser
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

demo: venv
	$(BIN)/puente demo $(ARGS)

bench: venv
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
