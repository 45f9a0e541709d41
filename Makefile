# Everyday commands. `make run` and `make test` install what they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup browser run test test-fast lint bench gpu-check report-check clean

setup: $(STAMP)

# Re-install only when the package metadata changes, so a second `make setup` is instant.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

# Debian's headless Chromium, for the tests that load pages in a real browser. Under CI (CI
# set, as .ci/run runs) a failed install fails the target, and those tests fail without it;
# elsewhere they are skipped, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
		>/dev/null; } || { \
		echo "chromium could not be installed (apt-get install chromium)"; \
		case "$${CI:-}" in ""|0|false) echo "browser tests will be skipped";; \
		*) echo "CI renders every page in Chromium: install it"; exit 1;; esac; }

run: setup
	$(BIN)/rakuten-ray demo

lint: setup
	$(BIN)/ruff check rakuten_ray tests benchmarks

test: lint browser
	$(BIN)/python -m pytest

test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

# Benchmarks, never part of `make test`: over two hours on 2 cores at the default sizes (the
# 100,000-row scaling run about 25 minutes, the 2,000-row throughput runs about 40). The first
# run also trains two small bundles into benchmarks/.cache/. Tables on the terminal, numbers in benchmarks/results/*.json;
# see docs/performance.md. Options for every script go in BENCH_ARGS (e.g.
# BENCH_ARGS="--bundle demo_run/run/bundle"), row counts in SCALING_ROWS.
BENCH_ARGS ?=
SCALING_ROWS ?= 10000 100000
bench: setup
	$(BIN)/python -u benchmarks/cpu_runtime.py $(BENCH_ARGS)
	$(BIN)/python -u benchmarks/image_pipeline.py $(BENCH_ARGS)
	$(BIN)/python -u benchmarks/scoring_throughput.py $(BENCH_ARGS)
	$(BIN)/python -u benchmarks/scaling.py --rows $(SCALING_ROWS) $(BENCH_ARGS)
	$(BIN)/python -u benchmarks/profile_stages.py $(BENCH_ARGS)
	$(BIN)/python -u benchmarks/train_epoch.py --repeats 2

# The GPU paths on a CUDA machine (benchmarks/gpu_check.py; docs/performance.md, "GPU check"):
# training epochs under autocast, then scoring on the GPU against the CPU. It imports no Ray,
# so a bare GPU machine without this venv runs it with its own Python:
#     PYTHONPATH=. python3 benchmarks/gpu_check.py
# It refuses (exit status 2) where no CUDA device is visible. Options go in GPU_CHECK_ARGS.
PYTHON_FOR_CHECK ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON_FOR_CHECK) -u benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# Renders the demo report in a real headless browser (Debian's chromium, installed if missing)
# and writes a screenshot next to it: a broken page shows at once.
REPORT := demo_run/report/index.html
report-check: browser
	test -f $(REPORT) || { echo "no $(REPORT): run 'make run' first"; exit 1; }
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync \
		--user-data-dir=$$(mktemp -d) --window-size=1200,2400 \
		--screenshot=$(CURDIR)/demo_run/report/screenshot.png file://$(CURDIR)/$(REPORT)
	test -s demo_run/report/screenshot.png

clean:
	rm -rf $(VENV) demo_run .pytest_cache .ruff_cache
