# The two commands a newcomer needs: `make run` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/example.yaml

.PHONY: run test lint typecheck unit integration tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed  ## install and run the daemon on the embedded default
	$(BIN)/fleetstream run --config $(CONFIG)

test: lint typecheck tools  ## install and run everything: lint, types, unit and integration tests
	$(BIN)/python -m pytest

# promtool checks the Prometheus alert rules. It comes with Debian's prometheus package (which
# starts no server without systemd); installed here when missing and this runs as root.
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing promtool (Debian package prometheus)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "promtool not found: the two alert-rule tests skip (apt-get install prometheus)"; \
	  fi; }

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/unit

integration: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/integration

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
