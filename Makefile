# The two commands: `make layer NAME=pymysql` and `make test`. Both set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NAME ?= pymysql
ARGS ?=

.PHONY: layer test lint bench install clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "layerbuild needs Python 3.11+ (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	@# Editable installs compile nothing, and PYTHONDONTWRITEBYTECODE would keep it so: every run would
	@# recompile layerbuild itself (~0.1 s of a 0.25 s cache hit). Stale .pyc files are simply ignored.
	$(BIN)/python -m compileall -q layerbuild
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-lint: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[lint]'
	touch $@

install: $(VENV)/.installed

layer: $(VENV)/.installed
	$(BIN)/layerbuild build $(NAME) $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (lint and format check, settings in pyproject.toml) and mypy (fully typed model/, errors, limits).
lint: $(VENV)/.installed-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run.py

clean:
	rm -rf dist build *.egg-info
