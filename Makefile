# The two commands a newcomer needs:  `make demo`  and  `make test`.
# Both install what they need (virtualenv, pinned Python deps, the native
# Collector/Prometheus/Alertmanager built from their Go modules) idempotently;
# builds are cached in the git-ignored .cache/ folder.

PYTHON ?= python3
# Go (for the Collector/Prometheus/Alertmanager builds) where Debian-style installs put it
export PATH := $(PATH):/usr/local/go/bin
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# uv installs the dev/CI environment from uv.lock; it is bootstrapped from PyPI into .cache/tools
UV_VERSION := 0.13.9
UV     := .cache/tools/bin/uv
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test venv stack schemas lint generate bench clean lock

demo: stack
	$(BIN)/redline demo

test: stack schemas
	$(BIN)/ruff check instrumentation operator tests benchmarks
	$(BIN)/pytest -p no:cacheprovider

venv: $(STAMP)

$(UV):
	$(PYTHON) -m venv .cache/tools
	.cache/tools/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# Both distributions (the app-side `redline` and the operator side `redline-operator`),
# editable, with the test group, exactly as locked.
$(STAMP): pyproject.toml instrumentation/pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --all-extras --quiet
	touch $@

stack: venv
	$(BIN)/redline stack build

# KEDA's ScaledObject CRD from the kedacore/keda Go module (module proxy), cached in
# .cache/schemas/: the generated autoscaling/ files are validated against it.
schemas: venv
	$(BIN)/python -m redline_operator.autoscaling.schemas fetch

lint: venv
	$(BIN)/ruff check instrumentation operator tests benchmarks

# Regenerate the committed alert rules, dashboards and autoscalers from redline.yaml.
generate: venv
	$(BIN)/redline rules
	$(BIN)/redline dashboards
	$(BIN)/redline autoscaling
	$(BIN)/redline docs

bench: stack
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	-$(BIN)/redline stack down
	rm -rf .cache $(VENV)

# Re-resolve uv.lock after changing a dependency range (then commit uv.lock).
lock: | $(UV)
	$(UV) lock
