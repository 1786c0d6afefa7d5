# Two entry points (see README.md): `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint deps venv clean

$(BIN)/activate: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $(BIN)/activate

venv: $(BIN)/activate

# Debian packages the test suite drives (real peers and clients). Installed only when
# running as root and missing; a developer without root gets skips with reasons instead.
deps:
	bash scripts/install-debian-deps

run: venv
	$(BIN)/twistd -n mailserver

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# As root the Debian peers are installed, so a test cited by a `pass` conformance row that skips
# fails the run (strict); without root such a skip is only reported (rfc-conformance/README.md).
CONFORMANCE ?= $(shell [ "$$(id -u)" = 0 ] && echo strict || echo report)

test: venv deps lint
	MAILSERVER_CONFORMANCE=$${MAILSERVER_CONFORMANCE:-$(CONFORMANCE)} \
	  bash scripts/pytest-or-fail $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
