# Everyday commands. `make run` and `make test` install what they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test test-fast lint report-check clean

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

# Renders the demo report in a real headless browser (Debian's chromium, installed if missing)
# and writes a screenshot next to it: a broken page shows at once.
REPORT := demo_run/report/index.html
report-check:
	test -f $(REPORT) || { echo "no $(REPORT): run 'make run' first"; exit 1; }
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync \
		--user-data-dir=$$(mktemp -d) --window-size=1200,2400 \
		--screenshot=$(CURDIR)/demo_run/report/screenshot.png file://$(CURDIR)/$(REPORT)
	test -s demo_run/report/screenshot.png

clean:
	rm -rf $(VENV) demo_run .pytest_cache .ruff_cache
