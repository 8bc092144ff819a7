# Two commands on a fresh machine: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# Starts the gateway on a dev config kept in .dev/ (created on first run: HTTP API on,
# random token, offline echo model) and prints the URL, the token and a ready curl line.
run: $(STAMP)
	MOLTBOT_STATE_DIR=$(CURDIR)/.dev $(BIN)/python -m moltbot dev

lint: $(STAMP)
	$(BIN)/ruff check .

# System packages first (Chromium for the browser tests, bubblewrap for the sandbox tests;
# a no-op once installed).
test: lint
	bash scripts/install-test-deps.sh
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .dev .pytest_cache .ruff_cache *.egg-info
