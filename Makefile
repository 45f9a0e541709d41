# Everyday commands. `make run` and `make test` install what they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test test-fast lint clean

setup: $(STAMP)

# Re-install only when the package metadata changes, so a second `make setup` is instant.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

run: setup
	$(BIN)/rakuten-ray demo

lint: setup
	$(BIN)/ruff check rakuten_ray tests

test: lint
	$(BIN)/python -m pytest

test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) demo_run .pytest_cache .ruff_cache
