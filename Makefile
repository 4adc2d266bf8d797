# One set of targets for people, pre-commit and CI.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch is pinned here only: the project's own range stays wide, and 2.13.0 is the local CPU wheel.
$(STAMP): pyproject.toml tests/interop/package-lock.json
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# The Node.js client the interop test publishes with (kafkajs, pinned by package-lock.json).
	cd tests/interop && npm ci --no-audit --no-fund
	touch $(STAMP)

demo: setup
	$(BIN)/hive demo

test: setup
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .hive
